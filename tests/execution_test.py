"""Tests for sobolev_tf.execution: several steps as one XLA program."""

from unittest import mock

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import sobolev_tf
from sobolev_tf import execution

# The host probe itself, as imported: `pytest --host=accelerator` replaces
# `execution.on_cpu_only` for the session once the tests are collected.
_ON_CPU_ONLY = execution.on_cpu_only


class _Summer:
  """A step that adds each batch into a variable and counts the steps."""

  def __init__(self):
    self.total = tf.Variable(0.0)
    self.steps = tf.Variable(0)
    self.sizes = []

  def __call__(self, batch):
    x, y = batch
    self.total.assign_add(tf.reduce_sum(x) * 10.0 + tf.reduce_sum(y))
    self.steps.assign_add(1)
    return {
      "total": self.total.read_value(),
      "size": tf.cast(tf.shape(x)[0], tf.float32),
    }


def _pairs(count, batch_size):
  """`count` examples (x = index, y = 1) in batches of `batch_size`."""
  values = np.arange(count, dtype=np.float32)
  return tf.data.Dataset.from_tensor_slices(
    (values, np.ones(count, np.float32))
  ).batch(batch_size)


class FusedStepsTest(tf.test.TestCase, parameterized.TestCase):
  def test_every_batch_once_in_order_with_an_odd_last_batch(self):
    step = _Summer()
    fused = execution.FusedSteps(step, size=4)
    iterator = iter(_pairs(31, 3))  # Ten batches of 3, one of 1.
    seen = []
    for count in (4, 1, 3, 4):
      logs = fused(iterator, count)
      seen.append((int(step.steps.numpy()), float(logs["size"])))
    # The fourth call gets two batches of 3 and then the odd one alone.
    self.assertEqual(seen, [(4, 3.0), (5, 3.0), (8, 3.0), (11, 1.0)])
    self.assertEqual(float(step.total.numpy()), 10 * sum(range(31)) + 31.0)
    with self.assertRaises(StopIteration):
      fused(iterator)

  def test_large_batches_stacked_a_few_at_a_time(self):
    step = _Summer()
    # Batches of 3 + 3 float32 (24 bytes): two fit in 50 bytes.
    with mock.patch.object(execution, "STACK_BYTES", 50):
      fused = execution.FusedSteps(step, size=4)
      iterator = iter(_pairs(30, 3))
      fetched, capacity, stacked, _ = fused._fetch(iterator, tf.constant(4))
      self.assertEqual((int(fetched), int(capacity)), (2, 2))
      self.assertEqual(stacked[0].shape, [2, 3])
      fused.loop(stacked, fetched)
      logs = fused(iterator, 4)
      self.assertEqual(int(step.steps.numpy()), 6)
      self.assertEqual(float(logs["total"]), 10 * sum(range(18)) + 18.0)
      fused(iterator, 4)
    with self.assertRaises(StopIteration):
      fused(iterator)
    self.assertEqual(int(step.steps.numpy()), 10)

  def test_logs_are_the_last_steps(self):
    step = _Summer()
    fused = execution.FusedSteps(step, size=3)
    logs = fused(iter(_pairs(12, 2)))
    self.assertEqual(int(step.steps.numpy()), 3)
    self.assertEqual(float(logs["total"]), 10 * sum(range(6)) + 6.0)

  @parameterized.parameters(0, 5)
  def test_count_out_of_range(self, count):
    fused = execution.FusedSteps(_Summer(), size=4)
    with self.assertRaisesRegex(ValueError, f"count={count}"):
      fused(iter(_pairs(8, 2)), count)

  def test_invalid_fuse_steps_named(self):
    with self.assertRaisesRegex(ValueError, "fuse_steps='yes'"):
      execution.check_fuse_steps("yes")
    with self.assertRaisesRegex(ValueError, "fuse_steps=1"):
      execution.check_fuse_steps(1)

  @parameterized.named_parameters(
    ("no_xla", dict(jit_compile=False)),
    ("one_step", dict(size=1)),
    ("two_replicas", dict(replicas=2)),
    ("off", dict(fuse_steps=False)),
  )
  def test_not_fused(self, overrides):
    arguments = dict(
      fuse_steps="auto",
      step_fn=_Summer(),
      size=4,
      element_spec=_pairs(8, 2).element_spec,
      replicas=1,
      jit_compile=True,
    )
    arguments.update(overrides)
    self.assertIsNone(execution.fused_steps(**arguments))

  def test_ragged_batches_not_fused(self):
    ragged = tf.data.Dataset.from_tensor_slices(
      tf.ragged.constant([[1.0], [2.0, 3.0]])
    ).batch(2)
    self.assertFalse(execution.dense_elements(ragged.element_spec))
    self.assertTrue(execution.dense_elements(_pairs(4, 2).element_spec))


def _data(count=40):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(count, 2)).astype(np.float32)
  y = {
    "value": rng.normal(size=(count, 1)).astype(np.float32),
    "d1": rng.normal(size=(count, 1, 2)).astype(np.float32),
  }
  return x, y


def _fit(fuse_steps, make_net=None, epochs=3, **options):
  keras.utils.set_random_seed(0)
  net = (
    make_net()
    if make_net
    else keras.Sequential(
      [
        keras.Input((2,)),
        keras.layers.Dense(16, activation="tanh"),
        keras.layers.Dense(1),
      ]
    )
  )
  model = sobolev_tf.SobolevModel(net, order=1, **options)
  model.compile(
    optimizer="adam",
    jit_compile=True,
    steps_per_execution=4,
    fuse_steps=fuse_steps,
  )
  x, y = _data()
  # Seven batches per epoch, the last of 4 examples.
  history = model.fit(
    x, y, batch_size=6, epochs=epochs, verbose=0, shuffle=False
  )
  return model, history.history


class SobolevModelFusedTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(
    ("full", dict()),
    ("stochastic_balanced", dict(mode="stochastic", balance="target_scale")),
  )
  def test_fused_fit_matches_keras_steps(self, options):
    fused, fused_history = _fit("auto", **options)
    stepwise, stepwise_history = _fit(False, **options)
    self.assertIsInstance(fused.train_function._function, execution.FusedSteps)
    self.assertNotIsInstance(
      stepwise.train_function._function, execution.FusedSteps
    )
    for a, b in zip(fused.get_weights(), stepwise.get_weights(), strict=True):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)
    self.assertEqual(set(fused_history), set(stepwise_history))
    for key, values in stepwise_history.items():
      self.assertAllClose(fused_history[key], values, rtol=1e-5, atol=1e-6)
    self.assertEqual(
      int(fused.optimizer.iterations.numpy()),
      int(stepwise.optimizer.iterations.numpy()),
    )
    self.assertEqual(int(fused.optimizer.iterations.numpy()), 21)

  @parameterized.named_parameters(
    ("cpu_host", True), ("accelerator_host", False)
  )
  def test_convolutional_step_fused_where_it_pays(self, cpu_only):
    # XLA:CPU runs convolutions slower inside a loop; an accelerator does not.
    def conv_net():
      return keras.Sequential(
        [
          keras.Input((2,)),
          keras.layers.Reshape((2, 1)),
          keras.layers.Conv1D(3, 2, activation="tanh"),
          keras.layers.Flatten(),
          keras.layers.Dense(1),
        ]
      )

    with mock.patch.object(execution, "on_cpu_only", return_value=cpu_only):
      auto, _ = _fit("auto", conv_net, epochs=1)
      forced, _ = _fit(True, conv_net, epochs=1)
    fused = isinstance(auto.train_function._function, execution.FusedSteps)
    self.assertEqual(fused, not cpu_only)
    self.assertIsInstance(forced.train_function._function, execution.FusedSteps)
    for a, b in zip(auto.get_weights(), forced.get_weights(), strict=True):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)

  @parameterized.named_parameters(
    ("no_accelerator", [], [], True),
    ("gpu", ["/device:GPU:0"], [], False),
    ("tpu", [], ["/device:TPU:0"], False),
  )
  def test_on_cpu_only_asks_for_accelerators(self, gpus, tpus, expected):
    devices = {"GPU": gpus, "TPU": tpus}
    with mock.patch.object(
      tf.config,
      "list_logical_devices",
      side_effect=lambda kind=None: devices.get(kind, ["/device:CPU:0"]),
    ):
      self.assertIs(_ON_CPU_ONLY(), expected)

  def test_nonfinite_step_skipped_and_raised_when_fused(self):
    x, y = _data(24)
    y["d1"][9, 0, 1] = np.nan  # Batch 2 of 4 (batch size 6).
    # A dataset: fit checks arrays on the host before any step.
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(6)
    models = []
    for fuse_steps in ("auto", False):
      keras.utils.set_random_seed(0)
      net = keras.Sequential(
        [
          keras.Input((2,)),
          keras.layers.Dense(8, "tanh"),
          keras.layers.Dense(1),
        ]
      )
      model = sobolev_tf.SobolevModel(net, order=1)
      model.compile(
        optimizer="adam",
        jit_compile=True,
        steps_per_execution=4,
        fuse_steps=fuse_steps,
      )
      with self.assertRaisesRegex(ValueError, "targets hold NaN"):
        model.fit(data, epochs=1, verbose=0)
      self.assertEqual(int(model.optimizer.iterations.numpy()), 3)
      models.append(model)
    self.assertIsInstance(
      models[0].train_function._function, execution.FusedSteps
    )
    for a, b in zip(
      models[0].get_weights(), models[1].get_weights(), strict=True
    ):
      self.assertTrue(np.all(np.isfinite(a)))
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)

  def test_fuse_steps_saved_with_the_compile_config(self):
    model, _ = _fit(False, epochs=1)
    path = self.get_temp_dir() + "/model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    self.assertIs(loaded.fuse_steps, False)
    self.assertIsInstance(loaded.optimizer, keras.optimizers.Adam)
    x, y = _data()
    self.assertAllClose(
      loaded.evaluate(x, y, verbose=0, return_dict=True)["loss"],
      model.evaluate(x, y, verbose=0, return_dict=True)["loss"],
    )

  def test_invalid_fuse_steps_in_compile(self):
    model = sobolev_tf.SobolevModel(
      keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    )
    with self.assertRaisesRegex(ValueError, "fuse_steps='always'"):
      model.compile(optimizer="adam", fuse_steps="always")


if __name__ == "__main__":
  tf.test.main()
