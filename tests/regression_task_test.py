"""Tests for sobolev_tf.tasks.regression_task."""

import dataclasses

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from launch import loop
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


class RegressionTaskTest(tf.test.TestCase, parameterized.TestCase):
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

  @parameterized.parameters(
    ("sobolev", False), ("stochastic", False), ("sobolev", True)
  )
  def test_a_shared_model_trains_as_a_model_of_its_own(self, method, jit):
    settings = loop.Settings(
      steps_per_execution=8, checkpoints_per_run=1, jit_compile=jit
    )
    strategy = tf.distribute.get_strategy()

    def train(config, share_model, name):
      task = regression_task.RegressionTask(config, share_model=share_model)
      record = loop.run(task, strategy, self.get_temp_dir() + name, settings)
      return record, [w.numpy() for w in task.model.weights]

    # Another function, seed and sample first: only shapes are shared.
    first = _config(function="beale", seed=3, method=method, steps=24)
    second = _config(method=method, steps=24)
    train(first, True, f"/a{method}{jit}")
    shared, shared_weights = train(second, True, f"/b{method}{jit}")
    alone, alone_weights = train(second, False, f"/c{method}{jit}")
    self.assertEqual(shared["test_mse"], alone["test_mse"])
    for a, b in zip(shared_weights, alone_weights, strict=True):
      self.assertAllEqual(a, b)

  @parameterized.parameters("regular", "directional", "sobolev_missing")
  def test_methods_without_whole_gradients_select_on_values(self, method):
    task = regression_task.RegressionTask(
      _config(method=method, validation_fraction=0.25, steps=8)
    )
    task.build()
    metrics = task.evaluate()
    self.assertAllClose(
      metrics["val_objective"],
      metrics["val_mse"] / np.var(task.train_truth["value"]),
      rtol=1e-6,
    )

  def test_runs_at_once_hold_models_of_their_own(self):
    def built(**kwargs):
      task = regression_task.RegressionTask(
        _config(**kwargs, steps=24), share_model=True
      )
      task.build()
      return task

    first, second = built(seed=0), built(seed=1)
    self.assertIsNot(first.model, second.model)
    self.assertNotEqual(first.step_key, second.step_key)
    first.finish(self.get_temp_dir(), chief=False)
    third = built(seed=2)
    self.assertIs(third.model, first.model)
    self.assertEqual(third.step_key, first.step_key)
    other = built(seed=3, hidden_sizes=(8,))
    self.assertIsNot(other.model, first.model)
    self.assertNotEqual(other.step_key[0], first.step_key[0])

  def test_a_validation_split_selects_the_weights(self):
    task = regression_task.RegressionTask(
      _config(validation_fraction=0.25, steps=40)
    )
    self.assertLen(task.x_train, 12)
    self.assertLen(task.validation[0], 4)
    self.assertEqual(task.selection, ("val_objective", "min"))
    self.assertEndsWith(task.run_id, "-v0.25-s0")
    task.build()
    metrics = task.evaluate()
    # Relative value and gradient errors, by the exact training targets.
    self.assertAllClose(
      metrics["val_objective"],
      metrics["val_mse"] / np.var(task.train_truth["value"])
      + metrics["val_gradient_mse"]
      / np.mean(np.square(task.train_truth["d1"])),
      rtol=1e-6,
    )
    all_points = np.concatenate([task.x_train, task.validation[0]])
    self.assertLen(np.unique(all_points, axis=0), 16)


if __name__ == "__main__":
  tf.test.main()
