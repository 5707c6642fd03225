"""Tests for sobolev_tf.tasks.base, through the counting fake task."""

import dataclasses
from typing import Tuple

import keras
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


@dataclasses.dataclass(frozen=True)
class _Config:
  rate: float = 0.5
  name: str = "a"
  sizes: Tuple[int, ...] = (1, 2)


class _OptimizerTask(base.Task):
  """A task whose checkpoint holds an optimiser, for the default step."""

  def hparams(self):
    return base.config_hparams(_Config(), "sizes")

  def build(self):
    self.optimizer = keras.optimizers.SGD()

  def checkpoint_items(self):
    return {"optimizer": self.optimizer}

  def evaluate(self):
    return {}


class DefaultsTest(tf.test.TestCase):
  def test_config_hparams_leave_out_the_fields_named(self):
    self.assertEqual(
      base.config_hparams(_Config(), "sizes"), {"rate": 0.5, "name": "a"}
    )
    self.assertEqual(
      base.config_hparams(_Config()),
      {"rate": 0.5, "name": "a", "sizes": (1, 2)},
    )

  def test_step_counter_is_the_checkpointed_optimizers_iterations(self):
    task = _OptimizerTask("x", 3)
    task.build()
    self.assertIs(task.step_counter, task.optimizer.iterations)
    self.assertEqual(task.record({}), {"run_id": "x", "rate": 0.5, "name": "a"})


if __name__ == "__main__":
  tf.test.main()
