"""Tests for sobolev_tf.tasks.base, through the counting fake task."""

import tensorflow as tf

from sobolev_tf import testing
from sobolev_tf.tasks import base


class TaskTest(tf.test.TestCase):
  def test_run_id_and_steps_are_checked(self):
    for run_id in ("", "a/b"):
      with self.assertRaisesRegex(ValueError, f"Received: run_id={run_id!r}"):
        testing.CountingTask(run_id)
    with self.assertRaisesRegex(ValueError, "Received: num_steps=0"):
      testing.CountingTask(num_steps=0)

  def test_defaults(self):
    task = testing.CountingTask("x")
    self.assertIsInstance(task, base.DatasetTask)
    self.assertEqual(
      task.record({"m": 1.0}), {"run_id": "x", "advance": True, "m": 1.0}
    )
    self.assertEqual(task.summary_images(), {})
    self.assertEqual(task.finish("unused", True), {})

  def test_interfaces_are_abstract(self):
    for interface in (base.Task, base.DatasetTask, base.HostTask):
      with self.assertRaisesRegex(TypeError, "abstract"):
        interface("x", 1)


if __name__ == "__main__":
  tf.test.main()
