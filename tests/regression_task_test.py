"""Tests for sobolev_tf.tasks.regression_task."""

import dataclasses

import tensorflow as tf

from sobolev_tf import testing
from sobolev_tf.tasks import regression
from sobolev_tf.tasks import regression_task

testing.configure_logical_cpus(2)


# A small Booth run; each test changes what it checks.
_BOOTH = regression.RunConfig(
  "booth", 2, 16, "sobolev", seed=0, steps=40, batch_size=8, test_size=64
)


def _config(**changes):
  return dataclasses.replace(_BOOTH, **changes)


class RegressionTaskTest(tf.test.TestCase):
  def test_bad_settings_fail_when_the_task_is_made(self):
    with self.assertRaisesRegex(ValueError, "name='nosuch'"):
      regression_task.RegressionTask(_config(function="nosuch"))
    with self.assertRaisesRegex(ValueError, "not twice differentiable"):
      regression_task.RegressionTask(
        _config(function="bukin_n6", method="sobolev2")
      )

  def test_batch_must_divide_among_replicas(self):
    task = regression_task.RegressionTask(_config(batch_size=7))
    with self.assertRaisesRegex(
      ValueError,
      r"batch of booth-d2-n16-sobolev-s0, capped at its training size\) "
      r"must divide among the 2 replicas of MirroredStrategy. Received: "
      r"batch_size=7",
    ):
      task.check_strategy(testing.mirrored_strategy())
    # Capped at the training size, 16 divides.
    regression_task.RegressionTask(_config(batch_size=64)).check_strategy(
      testing.mirrored_strategy()
    )

  def test_record_holds_every_setting_and_the_metrics(self):
    task = regression_task.RegressionTask(_config())
    task.build()
    metrics = task.evaluate()
    record = task.record(metrics)
    self.assertEqual(record["run_id"], "booth-d2-n16-sobolev-s0")
    self.assertEqual(record["hidden_sizes"], [256, 256])
    self.assertEqual(record["test_mse"], metrics["test_mse"])
    self.assertEqual(task.hparams()["train_size"], 16)
    self.assertNotIn("hidden_sizes", task.hparams())
    (image,) = task.summary_images().values()
    self.assertEqual(image.shape, [1, 64, 64, 1])
    self.assertAllInRange(image, 0.0, 1.0)
    self.assertEqual(int(task.step_counter.numpy()), 0)
    task.finish("ram://regression_task", chief=True)
    self.assertTrue(tf.io.gfile.exists("ram://regression_task/model.keras"))


if __name__ == "__main__":
  tf.test.main()
