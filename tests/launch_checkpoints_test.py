"""Tests for launch.checkpoints."""

import os

from absl.testing import parameterized
import tensorflow as tf

from launch import checkpoints


def _truncate(path):
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])


class CheckpointerTest(tf.test.TestCase, parameterized.TestCase):
  def _saved(self, directory, values=(1.0, 2.0)):
    value = tf.Variable(tf.zeros([1000]))
    checkpointer = checkpoints.Checkpointer(
      tf.train.Checkpoint(value=value), directory
    )
    for step, number in enumerate(values, 1):
      value.assign(tf.fill([1000], number))
      checkpointer.save(step)
    value.assign(tf.zeros([1000]))
    return value, checkpointer

  def test_non_chief_writes_scratch_and_reads_the_chiefs(self):
    directory = self.get_temp_dir() + "/workers"
    value = tf.Variable(1.0)
    chief = checkpoints.Checkpointer(
      tf.train.Checkpoint(value=value), directory
    )
    chief.save(1)
    value.assign(5.0)
    worker = checkpoints.Checkpointer(
      tf.train.Checkpoint(value=value), directory, chief=False, worker=1
    )
    worker.save(2)
    self.assertFalse(
      os.path.exists(os.path.join(directory, "worker_1_scratch"))
    )
    self.assertEqual(worker.restore(), os.path.join(directory, "ckpt-1"))
    self.assertEqual(float(value), 1.0)

  def test_nothing_to_restore(self):
    checkpointer = checkpoints.Checkpointer(
      tf.train.Checkpoint(value=tf.Variable(1.0)), self.get_temp_dir() + "/new"
    )
    self.assertIsNone(checkpointer.restore())

  @parameterized.parameters("data-00000-of-00001", "index")
  def test_corrupt_latest_falls_back_to_the_one_before(self, part):
    directory = self.get_temp_dir() + f"/fallback_{part}"
    value, checkpointer = self._saved(directory)
    latest = os.path.join(directory, "ckpt-2")
    _truncate(f"{latest}.{part}")
    with self.assertLogs(level="WARNING") as logs:
      self.assertEqual(
        checkpointer.restore(), os.path.join(directory, "ckpt-1")
      )
    self.assertIn(f"Cannot read checkpoint {latest}", logs.output[0])
    self.assertAllEqual(value, tf.fill([1000], 1.0))

  def test_no_readable_checkpoint_is_an_error_naming_each_file(self):
    directory = self.get_temp_dir() + "/corrupt"
    _, checkpointer = self._saved(directory)
    for step in (1, 2):
      _truncate(os.path.join(directory, f"ckpt-{step}.data-00000-of-00001"))
    with self.assertRaisesRegex(
      RuntimeError, r"(?s)No checkpoint in .* can be read.*ckpt-2: .*ckpt-1: "
    ):
      with self.assertLogs(level="WARNING"):
        checkpointer.restore()

  def test_a_stale_state_file_does_not_hide_checkpoints(self):
    directory = self.get_temp_dir() + "/stale"
    value, checkpointer = self._saved(directory)
    with open(os.path.join(directory, "checkpoint"), "w") as f:
      f.write("garbage {")
    self.assertEqual(checkpointer.restore(), os.path.join(directory, "ckpt-2"))
    self.assertAllEqual(value, tf.fill([1000], 2.0))


if __name__ == "__main__":
  tf.test.main()
