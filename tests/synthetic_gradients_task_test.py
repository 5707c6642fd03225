"""Tests for sobolev_tf.tasks.synthetic_gradients_task."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from launch import loop
from sobolev_tf import testing
from sobolev_tf.tasks import synthetic_gradients as sg
from sobolev_tf.tasks import synthetic_gradients_task as sg_task

testing.configure_logical_cpus(2)


class TaskTest(tf.test.TestCase, parameterized.TestCase):
  def _task(self, **kwargs):
    return sg_task.SyntheticGradientsTask(
      sg.Config("sobolev", channels=(4, 4, 6)),
      dataset="digits",
      seed=kwargs.pop("seed", 2),
      steps=6,
      batch_size=kwargs.pop("batch_size", 8),
    )

  def test_trains_evaluates_and_records(self):
    task = self._task()
    self.assertEqual(task.run_id, "digits-m3-sobolev-s2")
    task.build()
    dataset = task.dataset(
      tf.distribute.InputContext(num_replicas_in_sync=1), start_step=0
    )
    for batch in dataset.take(6):
      task.train_step(batch)
    self.assertEqual(int(task.step_counter.numpy()), 6)
    metrics = task.evaluate()
    self.assertEqual(
      set(metrics), {"test_accuracy"} | {f"test_cosine_{k}" for k in range(3)}
    )
    self.assertBetween(metrics["test_accuracy"] * 450, 1, 449)
    record = task.record(metrics)
    self.assertEqual(record["variant"], "sobolev")
    self.assertEqual(record["test_accuracy"], metrics["test_accuracy"])

  def test_seed_fixes_the_initial_weights(self):
    tasks = [self._task(seed=seed) for seed in (2, 2, 3)]
    for task in tasks:
      task.build()
    weights = [
      [v.numpy() for v in task.classifier.network.variables] for task in tasks
    ]
    for a, b, c in zip(*weights, strict=True):
      self.assertAllEqual(a, b)
      if a.ndim > 1:
        self.assertNotAllEqual(a, c)

  @parameterized.parameters(False, True)
  def test_loop_stops_at_a_nan_batch_with_fits_error(self, jit_compile):
    task = self._task()
    clean = task.dataset

    def dataset(context, start_step):
      # Batch 3 (the fourth) holds one NaN pixel.
      nan = np.zeros((8, 8, 8, 1), "float32")
      nan[5, 3, 3, 0] = np.nan
      return (
        clean(context, start_step)
        .enumerate()
        .map(
          lambda i, batch: (
            tf.where(i == 3 - start_step, batch[0] + nan, batch[0]),
            batch[1],
          )
        )
      )

    task.dataset = dataset
    settings = loop.Settings(
      steps_per_execution=1, checkpoints_per_run=1, jit_compile=jit_compile
    )
    with self.assertRaisesRegex(
      ValueError,
      r"not applied in run digits-m3-sobolev-s2 before step 3 because the "
      r"input x holds NaN or Inf",
    ):
      loop.run(
        task, tf.distribute.get_strategy(), self.get_temp_dir(), settings
      )
    self.assertEqual(int(task.step_counter.numpy()), 3)
    for variable in task.classifier.variables:
      self.assertTrue(np.all(np.isfinite(variable.numpy())), variable.name)

  def test_invalid_settings(self):
    with self.assertRaisesRegex(ValueError, "Received: dataset='mnist'"):
      sg_task.SyntheticGradientsTask(sg.Config("sobolev"), "mnist", 0, 1, 8)
    task = self._task(batch_size=9)
    with self.assertRaisesRegex(ValueError, "Received: batch_size=9"):
      task.check_strategy(testing.mirrored_strategy())


if __name__ == "__main__":
  tf.test.main()
