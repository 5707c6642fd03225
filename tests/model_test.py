"""Tests for sobolev_tf.model."""

import glob
import os
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
from tensorboard.backend.event_processing import event_accumulator
import tensorflow as tf

from sobolev_tf import model as model_lib
from sobolev_tf import testing

testing.configure_logical_cpus(2)


def _net(in_dim=2, out_dim=1, activation="tanh", seed=0):
  keras.utils.set_random_seed(seed)
  return keras.Sequential(
    [
      keras.Input((in_dim,)),
      keras.layers.Dense(16, activation=activation),
      keras.layers.Dense(out_dim),
    ]
  )


class _NanGradientShift(keras.layers.Layer):
  """Adds a scalar weight (zero) to its input; the weight's gradient is NaN."""

  def build(self, input_shape):
    self.shift = self.add_weight(shape=(), initializer="zeros")

  def call(self, inputs):
    @tf.custom_gradient
    def shift(x, s):
      def gradient(dy):
        return dy, tf.constant(np.nan, dy.dtype)

      return x + s, gradient

    return shift(inputs, tf.convert_to_tensor(self.shift))


def _data(num=64, seed=0):
  """f(x) = sin(x0) cos(x1) with its gradient and Hessian, float32."""
  x = np.random.default_rng(seed).uniform(-2, 2, (num, 2)).astype("float32")
  s0, c0, s1, c1 = (
    np.sin(x[:, 0]),
    np.cos(x[:, 0]),
    np.sin(x[:, 1]),
    np.cos(x[:, 1]),
  )
  value = (s0 * c1)[:, None]
  d1 = np.stack([c0 * c1, -s0 * s1], axis=-1)[:, None, :]  # [B, 1, 2]
  d2 = np.stack(
    [np.stack([-s0 * c1, -c0 * s1], -1), np.stack([-c0 * s1, -s0 * c1], -1)],
    axis=-2,
  )[:, None]
  return x, {"value": value, "d1": d1, "d2": d2.astype("float32")}


def _targets(y, order):
  return {key: y[key] for key in ("value", "d1", "d2")[: order + 1]}


class SobolevModelTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.product(
    mode=["full", "stochastic"], order=[1, 2], jit_compile=[False, True]
  )
  def test_fit_reduces_every_term(self, mode, order, jit_compile):
    x, y = _data()
    model = model_lib.SobolevModel(_net(), order=order, mode=mode)
    model.compile(
      optimizer=keras.optimizers.Adam(1e-2), jit_compile=jit_compile
    )
    before = model.evaluate(x, _targets(y, order), verbose=0, return_dict=True)
    history = model.fit(
      x, _targets(y, order), batch_size=16, epochs=5, verbose=0
    )
    after = model.evaluate(x, _targets(y, order), verbose=0, return_dict=True)
    keys = ["value", "d1"] + (["d2"] if order == 2 else [])
    expected = {"loss"} | {f"{k}_loss" for k in keys}
    expected |= {f"{k}_normalized_loss" for k in keys}
    self.assertEqual(set(history.history), expected)
    for key in ("loss", "value_loss", "d1_loss"):
      self.assertLess(after[key], before[key], key)
    # The built-in tracker reports the balanced total, not 0 (a known Keras
    # 3 trap).
    terms = sum(after[f"{k}_normalized_loss"] for k in keys)
    self.assertAllClose(after["loss"], terms, rtol=1e-5)
    self.assertGreater(after["loss"], 0.0)

  def test_loss_weights_scale_the_total(self):
    x, y = _data()
    for balance, suffix in (
      ("none", "_loss"),
      ("target_scale", "_normalized_loss"),
    ):
      model = model_lib.SobolevModel(
        _net(), order=1, loss_weights=[2.0, 0.5], balance=balance
      )
      model.compile(optimizer="adam")
      result = model.evaluate(x, _targets(y, 1), verbose=0, return_dict=True)
      self.assertAllClose(
        result["loss"],
        2 * result["value" + suffix] + 0.5 * result["d1" + suffix],
        rtol=1e-5,
      )

  @parameterized.named_parameters(
    ("xla", dict(jit_compile=True), 2, "none"),
    ("eager", dict(run_eagerly=True), 1, "none"),
    ("xla_balanced", dict(jit_compile=True), 2, "target_scale"),
    ("eager_balanced", dict(run_eagerly=True), 1, "running_loss"),
  )
  def test_execution_mode_matches_graph_training(
    self, compile_kwargs, epochs, balance
  ):
    x, y = _data()
    weights = []
    for kwargs in ({}, compile_kwargs):
      model = model_lib.SobolevModel(_net(seed=3), order=2, balance=balance)
      model.compile(optimizer=keras.optimizers.SGD(0.02), **kwargs)
      model.fit(
        x,
        _targets(y, 2),
        batch_size=16,
        epochs=epochs,
        verbose=0,
        shuffle=False,
      )
      weights.append(model.get_weights())
    for graph, other in zip(*weights, strict=True):
      self.assertAllClose(graph, other, atol=1e-5)

  def test_tf_data_input_and_sample_weights(self):
    x, y = _data()
    targets = _targets(y, 1)
    weight = np.where(np.arange(len(x)) < 32, 1.0, 0.0).astype("float32")
    model = model_lib.SobolevModel(_net(), order=1)
    model.compile(optimizer="adam")
    dataset = tf.data.Dataset.from_tensor_slices((x, targets, weight)).batch(64)
    weighted = model.evaluate(dataset, verbose=0, return_dict=True)
    first_half = model.evaluate(
      x[:32],
      {k: v[:32] for k, v in targets.items()},
      batch_size=64,
      verbose=0,
      return_dict=True,
    )
    # Keras averages weighted losses over the whole batch (64 examples).
    self.assertAllClose(
      weighted["d1_loss"], first_half["d1_loss"] / 2, rtol=1e-5
    )
    model.fit(dataset, epochs=1, verbose=0)

  def test_value_only_targets(self):
    x, y = _data()
    model = model_lib.SobolevModel(_net(), order=0)
    model.compile(optimizer="adam", metrics=["mae"])
    history = model.fit(x, y["value"], epochs=1, verbose=0)
    self.assertEqual(
      set(history.history),
      {"loss", "value_loss", "value_normalized_loss", "mae"},
    )

  @parameterized.parameters("full", "stochastic")
  def test_teacher_mode(self, mode):
    x, _ = _data()
    teacher = _net(out_dim=3, seed=1)
    teacher_weights = teacher.get_weights()
    student = _net(out_dim=3, seed=2)
    model = model_lib.SobolevModel(
      student,
      order=1,
      mode=mode,
      teacher=teacher,
      output_transform="log_softmax",
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["mae"])
    self.assertLen(model.trainable_weights, len(student.trainable_weights))
    before = model.evaluate(x, verbose=0, return_dict=True)
    model.fit(x, epochs=5, batch_size=16, verbose=0)
    after = model.evaluate(x, verbose=0, return_dict=True)
    self.assertLess(after["loss"], before["loss"])
    self.assertIn("mae", after)
    for old, new in zip(teacher_weights, teacher.get_weights(), strict=True):
      self.assertAllEqual(old, new)

  def test_callable_teacher(self):
    x, y = _data()
    keras_teacher = _net(seed=5)
    model = model_lib.SobolevModel(
      _net(), order=1, teacher=lambda inputs: keras_teacher(inputs)
    )
    model.compile(optimizer="adam")
    from_teacher = model.evaluate(x, verbose=0, return_dict=True)
    arrays = model_lib.SobolevModel(model.model, order=1)
    arrays.compile(optimizer="adam")
    targets = {
      "value": keras_teacher(x).numpy(),
      "d1": _batch_jacobian(keras_teacher, x),
    }
    from_arrays = arrays.evaluate(x, targets, verbose=0, return_dict=True)
    del y
    self.assertAllClose(from_teacher["loss"], from_arrays["loss"], rtol=1e-5)

  @parameterized.parameters(
    dict(mode="full", order=1),
    dict(mode="full", order=2),
    dict(mode="stochastic", order=1),
    dict(mode="full", order=1, clip=dict(global_clipnorm=0.05)),
    dict(mode="full", order=1, clip=dict(clipnorm=0.02)),
    dict(mode="full", order=1, clip=dict(clipvalue=0.01)),
  )
  def test_mirrored_strategy_matches_one_device(self, mode, order, clip=None):
    # Scalar output: stochastic directions are +-1 on every replica, so the
    # squared errors, and the weights, match one device exactly. The clipping
    # limits are small enough to clip every step.
    x, y = _data(num=64)
    strategies = [
      tf.distribute.OneDeviceStrategy("/cpu:0"),
      testing.mirrored_strategy(),
    ]
    weights = []
    for strategy in strategies:
      with strategy.scope():
        model = model_lib.SobolevModel(_net(seed=6), order=order, mode=mode)
        model.compile(optimizer=keras.optimizers.SGD(0.1, **(clip or {})))
      history = model.fit(
        x, _targets(y, order), batch_size=16, epochs=2, shuffle=False, verbose=0
      )
      weights.append((model.get_weights(), history.history))
    (one_weights, one_history), (two_weights, two_history) = weights
    self.assertEqual(strategies[1].num_replicas_in_sync, 2)
    for one, two in zip(one_weights, two_weights, strict=True):
      self.assertAllClose(one, two, atol=1e-5)
    for key in one_history:
      self.assertAllClose(one_history[key], two_history[key], rtol=1e-4)

  def test_mirrored_strategy_teacher_stochastic(self):
    x, _ = _data()
    with testing.mirrored_strategy().scope():
      model = model_lib.SobolevModel(
        _net(out_dim=4, seed=7),
        order=1,
        mode="stochastic",
        teacher=_net(out_dim=4, seed=8),
      )
      model.compile(optimizer="adam")
    history = model.fit(x, batch_size=16, epochs=2, verbose=0)
    self.assertTrue(np.all(np.isfinite(history.history["d1_loss"])))

  @parameterized.parameters("full", "stochastic")
  def test_save_load_round_trip(self, mode):
    x, y = _data()
    model = model_lib.SobolevModel(
      _net(),
      order=2,
      mode=mode,
      num_projections=2,
      loss_weights=[1.0, 0.5, 0.1],
      losses=["mse", "mae", "mse"],
      derivative_scales={"d1": [1.0, 2.0]},
      seed=11,
    )
    model.compile(optimizer="adam")
    model.fit(x, y, epochs=1, verbose=0)
    path = os.path.join(
      tempfile.mkdtemp(dir=self.get_temp_dir()), "model.keras"
    )
    model.save(path)
    loaded = keras.saving.load_model(path)
    self.assertIsInstance(loaded, model_lib.SobolevModel)
    # The wrapped model's config differs in build shapes' list/tuple types.
    without_model = lambda c: {k: v for k, v in c.items() if k != "model"}  # noqa: E731
    self.assertEqual(
      without_model(loaded.get_config()), without_model(model.get_config())
    )
    self.assertAllClose(
      loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    self.assertAllClose(
      loaded.evaluate(x, y, verbose=0, return_dict=True),
      model.evaluate(x, y, verbose=0, return_dict=True),
    )
    loaded.fit(x, y, epochs=1, verbose=0)

  def test_save_load_keeps_keras_teacher(self):
    x, _ = _data()
    model = model_lib.SobolevModel(_net(seed=1), order=1, teacher=_net(seed=2))
    model.compile(optimizer="adam")
    model.fit(x, epochs=1, verbose=0)
    path = os.path.join(
      tempfile.mkdtemp(dir=self.get_temp_dir()), "model.keras"
    )
    model.save(path)
    loaded = keras.saving.load_model(path)
    self.assertFalse(loaded.teacher.trainable)
    self.assertAllClose(loaded.teacher(x), model.teacher(x))
    self.assertAllClose(
      loaded.evaluate(x, verbose=0, return_dict=True),
      model.evaluate(x, verbose=0, return_dict=True),
    )

  def test_tensorboard_logs_every_term(self):
    x, y = _data()
    log_dir = tempfile.mkdtemp(dir=self.get_temp_dir())
    model = model_lib.SobolevModel(_net(), order=2)
    model.compile(optimizer="adam")
    model.fit(
      x,
      y,
      epochs=2,
      verbose=0,
      validation_data=(x, y),
      callbacks=[keras.callbacks.TensorBoard(log_dir)],
    )
    for split in ("train", "validation"):
      (events,) = glob.glob(os.path.join(log_dir, split, "events.out.*"))
      accumulator = event_accumulator.EventAccumulator(
        events, size_guidance={event_accumulator.TENSORS: 0}
      )
      accumulator.Reload()
      tags = set(accumulator.Tags()["tensors"])
      for term in (
        "epoch_loss",
        "epoch_value_loss",
        "epoch_d1_loss",
        "epoch_d2_loss",
      ):
        self.assertIn(term, tags)
      steps = [e.step for e in accumulator.Tensors("epoch_d1_loss")]
      self.assertEqual(steps, [0, 1])
      value = tf.make_ndarray(
        accumulator.Tensors("epoch_d1_loss")[-1].tensor_proto
      )
      self.assertGreater(float(value), 0.0)

  def test_callbacks(self):
    x, y = _data()
    model = model_lib.SobolevModel(_net(), order=1)
    model.compile(optimizer="adam")
    history = model.fit(
      x,
      _targets(y, 1),
      epochs=50,
      verbose=0,
      callbacks=[
        keras.callbacks.EarlyStopping(
          monitor="d1_loss", mode="min", min_delta=10.0, patience=1
        )
      ],
    )
    self.assertLen(history.history["d1_loss"], 2)

  def test_drop_nonfinite_targets_in_fit(self):
    x, y = _data()
    targets = _targets(y, 1)
    targets["d1"] = targets["d1"].copy()
    targets["d1"][3, 0, 1] = np.nan
    model = model_lib.SobolevModel(_net(), order=1, nonfinite_targets="drop")
    model.compile(optimizer="adam")
    history = model.fit(x, targets, epochs=2, verbose=0)
    self.assertTrue(np.all(np.isfinite(history.history["loss"])))
    self.assertTrue(all(np.all(np.isfinite(w)) for w in model.get_weights()))

  @parameterized.parameters("fit", "evaluate")
  def test_nonfinite_targets_fail_before_training(self, method):
    x, y = _data()
    targets = _targets(y, 1)
    targets["value"] = targets["value"].copy()
    targets["value"][[5, 9]] = np.inf
    model = model_lib.SobolevModel(_net(), order=1)
    model.compile(optimizer="adam")
    with self.assertRaisesRegex(
      ValueError,
      r"y\['value'\] holds NaN or Inf in 2 of 64 examples "
      r"\(first at index 5\).*nonfinite_targets='drop'",
    ):
      getattr(model, method)(x, targets, verbose=0)

  def test_nonfinite_validation_data(self):
    x, y = _data()
    bad = dict(_targets(y, 1), d1=np.full_like(y["d1"], np.nan))
    model = model_lib.SobolevModel(_net(), order=1)
    model.compile(optimizer="adam")
    with self.assertRaisesRegex(ValueError, r"validation_data\['d1'\]"):
      model.fit(x, _targets(y, 1), validation_data=(x, bad), verbose=0)

  def test_mismatched_derivative_shape_in_fit(self):
    x, y = _data()
    model = model_lib.SobolevModel(_net(), order=1)
    model.compile(optimizer="adam")
    with self.assertRaisesRegex(
      ValueError,
      r"y\['d1'\].*expected shape \[B, 1, 2\].*Received: "
      r"\[B, 2, 1\]",
    ):
      model.fit(
        x, {"value": y["value"], "d1": y["d1"].reshape(-1, 2, 1)}, verbose=0
      )

  def test_target_for_unconfigured_order(self):
    x, y = _data()
    model = model_lib.SobolevModel(_net(), order=1)
    model.compile(optimizer="adam")
    with self.assertRaisesRegex(ValueError, r"\['d2'\].*order=1"):
      model.fit(x, y, verbose=0)

  def test_integer_inputs(self):
    x, y = _data()
    model = model_lib.SobolevModel(_net(), order=1)
    model.compile(optimizer="adam")
    with self.assertRaisesRegex(ValueError, r"floating-point.*dtype=int64"):
      model.fit(x.astype("int64"), _targets(y, 1), verbose=0)

  def test_nested_inputs(self):
    x, y = _data()
    model = model_lib.SobolevModel(_net(), order=1)
    model.compile(optimizer="adam")
    with self.assertRaisesRegex(ValueError, r"single input tensor"):
      model.fit({"a": x}, _targets(y, 1), verbose=0)

  def test_invalid_model(self):
    with self.assertRaisesRegex(ValueError, r"`model`.*Keras model"):
      model_lib.SobolevModel(lambda x: x)

  def test_invalid_teacher(self):
    with self.assertRaisesRegex(ValueError, r"`teacher`.*teacher=3"):
      model_lib.SobolevModel(_net(), teacher=3)

  def test_invalid_order(self):
    with self.assertRaisesRegex(ValueError, r"order=3"):
      model_lib.SobolevModel(_net(), order=3)


class ReliabilityTest(tf.test.TestCase, parameterized.TestCase):
  """Every bad input a clear error; no silent NaN; Keras conventions kept."""

  def _model(self, **kwargs):
    model = model_lib.SobolevModel(_net(seed=4), **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model

  def _weights(self, model):
    return [w.copy() for w in model.model.get_weights()]

  def _assert_unchanged(self, model, before):
    for old, new in zip(before, model.model.get_weights(), strict=True):
      self.assertAllEqual(old, new)

  @parameterized.parameters("tanh", "relu")
  def test_derivative_only_training(self, activation):
    # With ReLU the output bias does not move the input gradient at all.
    x, y = _data()
    model = model_lib.SobolevModel(
      _net(activation=activation), order=1, loss_weights=[0, 1]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = model.evaluate(x, {"d1": y["d1"]}, verbose=0, return_dict=True)
    history = model.fit(x, {"d1": y["d1"]}, epochs=3, verbose=0)
    after = model.evaluate(x, {"d1": y["d1"]}, verbose=0, return_dict=True)
    self.assertLess(after["d1_loss"], before["d1_loss"])
    self.assertNotIn("value_loss", history.history)

  def test_derivative_only_teacher(self):
    x, _ = _data()
    model = model_lib.SobolevModel(
      _net(activation="relu"),
      order=1,
      loss_weights=[0, 1],
      teacher=_net(seed=9),
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = model.evaluate(x, verbose=0, return_dict=True)["d1_loss"]
    model.fit(x, epochs=3, verbose=0)
    self.assertLess(
      model.evaluate(x, verbose=0, return_dict=True)["d1_loss"], before
    )

  def test_all_zero_weights_train_nothing(self):
    x, y = _data()
    model = self._model(order=1, loss_weights=[0, 0])
    before = self._weights(model)
    with self.assertWarnsRegex(UserWarning, "Gradients do not exist"):
      model.fit(x, _targets(y, 1), epochs=1, verbose=0)
    self._assert_unchanged(model, before)

  def test_trainable_layer_off_the_gradient_path(self):
    class TwoHeads(keras.Model):
      def __init__(self):
        super().__init__()
        self.used = keras.layers.Dense(1)
        self.unused = keras.layers.Dense(1)

      def build(self, input_shape):
        self.used.build(input_shape)
        self.unused.build(input_shape)

      def call(self, inputs):
        return self.used(inputs)

    x, y = _data()
    inner = TwoHeads()
    inner.build((None, 2))
    unused = [w.numpy().copy() for w in inner.unused.weights]
    model = model_lib.SobolevModel(inner, order=1)
    model.compile(optimizer="adam")
    with self.assertWarnsRegex(UserWarning, "Gradients do not exist"):
      model.fit(x, _targets(y, 1), epochs=1, verbose=0)
    for old, new in zip(unused, inner.unused.weights, strict=True):
      self.assertAllEqual(old, new)

  @parameterized.parameters("raise", "drop")
  def test_numpy_sample_weight_with_dict_targets(self, policy):
    x, y = _data()
    targets = _targets(y, 1)
    weight = np.where(np.arange(len(x)) < 32, 1.0, 0.0)
    model = self._model(order=1, nonfinite_targets=policy)
    model.fit(
      x,
      targets,
      sample_weight=weight,
      validation_data=(x, targets, weight),
      epochs=1,
      verbose=0,
    )
    weighted = model.evaluate(
      x, targets, sample_weight=weight, verbose=0, return_dict=True
    )
    first_half = model.evaluate(
      x[:32],
      {k: v[:32] for k, v in targets.items()},
      verbose=0,
      return_dict=True,
    )
    # Keras's convention: weighted terms are averaged over every example.
    self.assertAllClose(
      weighted["d1_loss"], first_half["d1_loss"] / 2, rtol=1e-4
    )

  def test_sample_weight_per_term(self):
    x, y = _data()
    model = self._model(order=1, balance="none")
    zero_d1 = {"value": np.ones(len(x)), "d1": np.zeros(len(x))}
    result = model.evaluate(
      x, _targets(y, 1), sample_weight=zero_d1, verbose=0, return_dict=True
    )
    self.assertAllClose(result["d1_loss"], 0.0)
    self.assertGreater(result["value_loss"], 0.0)

  @parameterized.product(
    key=["value", "d1", "sample_weight"], jit=[False, True]
  )
  def test_batch_of_one_from_tf_data_is_an_error(self, key, jit):
    x, y = _data(num=8)
    targets = _targets(y, 1)
    weight = np.ones(8, np.float32)
    if key == "sample_weight":
      weight = weight[:1]
    else:
      targets[key] = targets[key][:1]
    dataset = tf.data.Dataset.from_tensors((x, targets, weight))
    model = model_lib.SobolevModel(_net(), order=1)
    model.compile(optimizer="adam", jit_compile=jit)
    before = self._weights(model)
    with self.assertRaisesRegex(
      (ValueError, tf.errors.InvalidArgumentError),
      "batch_size_must_match_x|"
      r"must have the batch size of x",
    ):
      model.fit(dataset, epochs=1, verbose=0)
    self._assert_unchanged(model, before)

  def test_nan_in_numpy_inputs(self):
    x, y = _data()
    x = x.copy()
    x[7, 1] = np.nan
    model = self._model(order=1)
    with self.assertRaisesRegex(ValueError, r"Inputs x hold NaN.*index 7"):
      model.fit(x, _targets(y, 1), verbose=0)

  @parameterized.parameters(False, True)
  def test_nan_in_tf_data_inputs_skips_and_raises(self, jit):
    x, y = _data()
    x = x.copy()
    x[20, 0] = np.nan
    dataset = tf.data.Dataset.from_tensor_slices((x, _targets(y, 1))).batch(16)
    model = model_lib.SobolevModel(_net(), order=1)
    model.compile(optimizer="adam", jit_compile=jit)
    model.build((None, 2))
    before = self._weights(model)
    with self.assertRaisesRegex(ValueError, r"input x holds NaN or Inf"):
      model.fit(dataset.skip(1), epochs=1, verbose=0)
    self._assert_unchanged(model, before)

  @parameterized.parameters(False, True)
  def test_nan_targets_from_tf_data_skip_and_raise(self, jit):
    x, y = _data()
    targets = _targets(y, 1)
    targets["d1"] = targets["d1"].copy()
    targets["d1"][3, 0, 1] = np.nan
    dataset = tf.data.Dataset.from_tensor_slices((x, targets)).batch(16)
    model = model_lib.SobolevModel(_net(), order=1)
    model.compile(optimizer="adam", jit_compile=jit)
    model.build((None, 2))
    before = self._weights(model)
    with self.assertRaisesRegex(
      ValueError, r"training batch 0 because the targets hold NaN or Inf"
    ):
      model.fit(dataset, epochs=1, verbose=0)
    self._assert_unchanged(model, before)

  @parameterized.parameters(False, True)
  def test_nan_gradients_of_a_finite_loss_skip_and_raise(self, jit):
    # The loss is finite; one weight's gradient is NaN.
    x, y = _data()
    model = model_lib.SobolevModel(
      keras.Sequential([keras.Input((2,)), _NanGradientShift(), _net()]),
      order=1,
    )
    model.compile(optimizer="adam", jit_compile=jit)
    model.build((None, 2))
    before = self._weights(model)
    with self.assertRaisesRegex(
      ValueError, r"batch 0 because the gradients hold NaN or Inf"
    ):
      model.fit(x, _targets(y, 1), batch_size=16, verbose=0)
    self._assert_unchanged(model, before)
    self.assertEqual(int(model.optimizer.iterations.numpy()), 0)

  def test_all_dropped_batch_does_not_count(self):
    x, y = _data(num=32)
    targets = _targets(y, 1)
    clean = model_lib.SobolevModel(
      _net(seed=1), order=1, nonfinite_targets="drop"
    )
    clean.compile(optimizer="adam")
    expected = clean.evaluate(
      x[16:],
      {k: v[16:] for k, v in targets.items()},
      verbose=0,
      return_dict=True,
    )
    gappy = {k: v.copy() for k, v in targets.items()}
    gappy["value"][:16] = np.nan
    result = clean.evaluate(
      x, gappy, batch_size=16, verbose=0, return_dict=True
    )
    for key in ("loss", "value_loss", "d1_loss"):
      self.assertAllClose(result[key], expected[key], rtol=1e-5)
    self.assertEqual(result["d1_entries"], 16 * 2)

  def test_missing_entries_train_the_others(self):
    x, y = _data()
    targets = _targets(y, 1)
    targets["d1"] = targets["d1"].copy()
    targets["d1"][::2, 0, 1] = np.nan  # Half of one partial is unknown.
    model = self._model(order=1, nonfinite_targets="missing")
    history = model.fit(x, targets, epochs=2, verbose=0)
    self.assertEqual(history.history["d1_entries"], [64 * 2 - 32] * 2)
    self.assertLess(
      history.history["d1_loss"][1], history.history["d1_loss"][0]
    )

  def test_empty_numpy_inputs(self):
    model = self._model(order=0)
    with self.assertRaisesRegex(
      ValueError, r"empty inputs x of shape \(0, 2\)"
    ):
      model.fit(np.zeros((0, 2), "float32"), np.zeros((0, 1), "float32"))

  def test_empty_tf_data_batch_does_not_report_zero(self):
    x, y = _data(num=16)
    model = self._model(order=0)
    data = tf.data.Dataset.from_tensors((x, y["value"]))
    empty = tf.data.Dataset.from_tensors((x[:0], y["value"][:0]))
    alone = model.evaluate(data, verbose=0, return_dict=True)
    with_empty = model.evaluate(
      data.concatenate(empty), verbose=0, return_dict=True
    )
    self.assertAllClose(with_empty["value_loss"], alone["value_loss"])
    self.assertAllClose(with_empty["loss"], alone["loss"])

  def test_several_outputs(self):
    inputs = keras.Input((2,))
    hidden = keras.layers.Dense(4)(inputs)
    two = keras.Model(
      inputs, [keras.layers.Dense(1)(hidden), keras.layers.Dense(1)(hidden)]
    )
    with self.assertRaisesRegex(ValueError, r"several outputs \(2\)"):
      model_lib.SobolevModel(two)

  def test_loss_weights_as_a_dict(self):
    x, y = _data()
    model = self._model(
      order=1, loss_weights={"value": 2.0, "d1": 0.5}, balance="none"
    )
    result = model.evaluate(x, _targets(y, 1), verbose=0, return_dict=True)
    self.assertAllClose(
      result["loss"],
      2 * result["value_loss"] + 0.5 * result["d1_loss"],
      rtol=1e-5,
    )

  def test_derivative_scales_of_the_wrong_length(self):
    model = model_lib.SobolevModel(
      _net(), order=1, derivative_scales={"d1": [1.0, 2.0, 3.0]}
    )
    with self.assertRaisesRegex(
      ValueError, r"derivative_scales\['d1'\].*\[2\]"
    ):
      model.build((None, 2))

  def test_boolean_order(self):
    with self.assertRaisesRegex(ValueError, r"`order`.*order=True"):
      model_lib.SobolevModel(_net(), order=True)

  def test_batch_normalization_in_training_mode(self):
    net = keras.Sequential(
      [
        keras.Input((2,)),
        keras.layers.Dense(4),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Dense(1),
      ]
    )
    with self.assertRaisesRegex(
      ValueError, r"BatchNormalization layers \['bn'\]"
    ):
      model_lib.SobolevModel(net)
    net.get_layer("bn").trainable = False
    model_lib.SobolevModel(net)  # Frozen: inference mode, per example.

  def test_teacher_of_another_shape_in_stochastic_mode(self):
    x, _ = _data()
    model = model_lib.SobolevModel(
      _net(out_dim=3), order=1, mode="stochastic", teacher=_net(out_dim=4)
    )
    model.compile(optimizer="adam")
    with self.assertRaisesRegex(
      ValueError, r"teacher's output must have the model's shape"
    ):
      model.fit(x, epochs=1, verbose=0)


def _batch_jacobian(fn, x):
  x = tf.constant(x)
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = fn(x)
  return tape.batch_jacobian(y, x).numpy()


def _force_field(seed=0):
  """A model of `positions` [B, 3] and integer atom `types` [B, 1]."""
  keras.utils.set_random_seed(seed)
  positions = keras.Input((3,), name="positions")
  types = keras.Input((1,), dtype="int32", name="types")
  embedded = keras.layers.Flatten()(keras.layers.Embedding(4, 2)(types))
  hidden = keras.layers.Dense(8, activation="tanh")(
    keras.layers.Concatenate()([positions, embedded])
  )
  outputs = keras.layers.Dense(2)(hidden)
  return keras.Model({"positions": positions, "types": types}, outputs)


class _FixedTypes(keras.Model):
  """A force field as a function of the positions alone, types constant."""

  def __init__(self, net, **kwargs):
    super().__init__(**{"name": "fixed_types", **kwargs})
    self.net = net

  def call(self, positions):
    types = tf.fill([tf.shape(positions)[0], 1], 2)
    return self.net({"positions": positions, "types": types})


def _multi_input_data(order, kind, batch=16):
  rng = np.random.default_rng(3)
  positions = rng.uniform(-1, 1, (batch, 3)).astype("float32")
  y = {"value": rng.normal(size=(batch, 2)).astype("float32")}
  if kind == "full" and order:
    y["d1"] = rng.normal(size=(batch, 2, 3)).astype("float32")
  if kind == "full" and order == 2:
    y["d2"] = rng.normal(size=(batch, 2, 3, 3)).astype("float32")
  for k in range(1, order + 1) if kind == "directional" else ():
    y[f"d{k}_directions"] = rng.normal(size=(batch, 2, 3)).astype("float32")
    shape = (batch, 2, 2) + ((3,) if k == 2 else ())
    y[f"d{k}_directional"] = rng.normal(size=shape).astype("float32")
  types = np.full((batch, 1), 2, "int32")
  return positions, types, (None if kind == "teacher" else y)


class MultiInputTest(tf.test.TestCase, parameterized.TestCase):
  """Derivatives with respect to one named input of a multi-input model."""

  def _fit(self, model, x, y, epochs=2):
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, shuffle=False)
    return model

  @parameterized.named_parameters(
    ("order0", "full", 0, "full"),
    ("full_o1", "full", 1, "full"),
    ("full_o2", "full", 2, "full"),
    ("stochastic_o1", "stochastic", 1, "full"),
    ("stochastic_o2", "stochastic", 2, "full"),
    ("directional_o1", "full", 1, "directional"),
    ("directional_o2", "stochastic", 2, "directional"),
    ("teacher_full_o1", "full", 1, "teacher"),
    ("teacher_stochastic_o2", "stochastic", 2, "teacher"),
  )
  def test_trains_as_the_model_of_that_input_alone(self, mode, order, kind):
    positions, types, y = _multi_input_data(order, kind)
    options = dict(order=order, mode=mode, seed=4)
    teachers = [None, None]
    if kind == "teacher":
      teachers = [_force_field(seed=9), _FixedTypes(_force_field(seed=9))]
    multi = self._fit(
      model_lib.SobolevModel(
        _force_field(),
        derivative_inputs="positions",
        teacher=teachers[0],
        **options,
      ),
      {"positions": positions, "types": types},
      y,
    )
    single = self._fit(
      model_lib.SobolevModel(
        _FixedTypes(_force_field()), teacher=teachers[1], **options
      ),
      positions,
      y,
    )
    self.assertEqual(int(multi.optimizer.iterations.numpy()), 4)
    for a, b in zip(
      multi.model.get_weights(), single.model.net.get_weights(), strict=True
    ):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)

  def test_several_inputs_are_differentiated_as_their_concatenation(self):
    rng = np.random.default_rng(0)
    space = rng.uniform(-1, 1, (16, 2)).astype("float32")
    time = rng.uniform(0, 1, (16, 1)).astype("float32")
    y = {
      "value": np.sin(space[:, :1]) * time,
      "d1": rng.normal(size=(16, 1, 3)).astype("float32"),
    }

    def net(inputs):
      keras.utils.set_random_seed(0)
      hidden = keras.layers.Dense(8, "tanh")(inputs)
      return keras.layers.Dense(1)(hidden)

    s, t = keras.Input((2,), name="space"), keras.Input((1,), name="time")
    split = keras.Model(
      {"space": s, "time": t}, net(keras.layers.Concatenate()([s, t]))
    )
    joint_input = keras.Input((3,))
    joint = keras.Model(joint_input, net(joint_input))
    a = self._fit(
      model_lib.SobolevModel(
        split, order=1, derivative_inputs=["space", "time"]
      ),
      {"space": space, "time": time},
      y,
    )
    b = self._fit(
      model_lib.SobolevModel(joint, order=1),
      np.concatenate([space, time], 1),
      y,
    )
    for wa, wb in zip(
      a.model.get_weights(), b.model.get_weights(), strict=True
    ):
      self.assertAllClose(wa, wb, rtol=1e-5, atol=1e-6)

  def test_shapes_are_checked_against_the_named_input(self):
    positions, types, y = _multi_input_data(1, "full")
    y["d1"] = np.ones((16, 2, 4), "float32")
    model = model_lib.SobolevModel(
      _force_field(), order=1, derivative_inputs="positions"
    )
    model.compile(optimizer="sgd")
    with self.assertRaisesRegex(
      ValueError, r"y\['d1'\].*expected shape \[B, 2, 3\].*input shape \[3\]"
    ):
      model.fit({"positions": positions, "types": types}, y, verbose=0)

  def test_unnamed_inputs_of_a_multi_input_model_are_an_error(self):
    positions, types, y = _multi_input_data(1, "full")
    model = model_lib.SobolevModel(_force_field(), order=1)
    model.compile(optimizer="sgd")
    with self.assertRaisesRegex(ValueError, "derivative_inputs"):
      model.fit({"positions": positions, "types": types}, y, verbose=0)

  def test_save_load_round_trip(self):
    positions, types, y = _multi_input_data(1, "full")
    x = {"positions": positions, "types": types}
    model = self._fit(
      model_lib.SobolevModel(
        _force_field(), order=1, derivative_inputs="positions"
      ),
      x,
      y,
      epochs=1,
    )
    path = os.path.join(self.get_temp_dir(), "force_field.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    self.assertEqual(loaded.derivative_inputs.names, ("positions",))
    self.assertAllClose(
      loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    self.assertAllClose(
      loaded.evaluate(x, y, verbose=0, return_dict=True),
      model.evaluate(x, y, verbose=0, return_dict=True),
    )


class _WeightsByEpoch(keras.callbacks.Callback):
  """Records the weights and logs after every epoch."""

  def __init__(self):
    super().__init__()
    self.weights, self.logs = [], []

  def on_epoch_end(self, epoch, logs=None):
    self.weights.append(self.model.get_weights())
    self.logs.append(dict(logs))


class KerasCallbacksTest(tf.test.TestCase, parameterized.TestCase):
  """Early stopping and best checkpoints on the validation terms."""

  def _fit(self, callbacks, epochs=12):
    x, y = _data(num=48, seed=1)
    x_val, y_val = _data(num=16, seed=2)
    model = model_lib.SobolevModel(_net(seed=4), order=1)
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    record = _WeightsByEpoch()
    model.fit(
      x,
      _targets(y, 1),
      validation_data=(x_val, _targets(y_val, 1)),
      batch_size=16,
      epochs=epochs,
      shuffle=False,
      verbose=0,
      callbacks=[record, *callbacks],
    )
    return model, record, (x_val, _targets(y_val, 1))

  @parameterized.parameters("val_loss", "val_d1_loss", "val_value_loss")
  def test_early_stopping_restores_the_best_weights(self, monitor):
    # Keras infers the direction of `val_loss`, not of the terms' trackers:
    # those need mode="min" (SobolevModel's docstring).
    stop = keras.callbacks.EarlyStopping(
      monitor=monitor, mode="min", patience=2, restore_best_weights=True
    )
    model, record, _ = self._fit([stop])
    values = [logs[monitor] for logs in record.logs]
    best = int(np.argmin(values))
    self.assertEqual(stop.best, values[best])
    for a, b in zip(model.get_weights(), record.weights[best], strict=True):
      self.assertAllEqual(a, b)

  def test_model_checkpoint_keeps_the_best_model(self):
    path = os.path.join(self.get_temp_dir(), "best.keras")
    checkpoint = keras.callbacks.ModelCheckpoint(
      path, monitor="val_d1_loss", mode="min", save_best_only=True
    )
    model, record, validation = self._fit([checkpoint], epochs=6)
    loaded = keras.models.load_model(path)
    best = min(logs["val_d1_loss"] for logs in record.logs)
    scores = loaded.evaluate(*validation, verbose=0, return_dict=True)
    self.assertAllClose(scores["d1_loss"], best, rtol=1e-5)


if __name__ == "__main__":
  tf.test.main()
