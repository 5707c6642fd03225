"""Tests for sobolev_tf.objective."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import derivatives
from sobolev_tf import objective as objective_lib
from sobolev_tf import testing

testing.configure_logical_cpus(2)

# float64 brute-force references agree with the objective to round-off.
TIGHT = 1e-10


def _mlp(in_dim, out_dim, seed, dtype="float64"):
  keras.utils.set_random_seed(seed)
  return keras.Sequential(
    [
      keras.Input((in_dim,), dtype=dtype),
      keras.layers.Dense(6, activation="tanh", dtype=dtype),
      keras.layers.Dense(out_dim, dtype=dtype),
    ]
  )


def _batch_jacobian(fn, x):
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = fn(x)
  return tape.batch_jacobian(y, x)  # [B, out, in]


def _batch_hessian(fn, x):
  with tf.GradientTape() as outer:
    outer.watch(x)
    jacobian = _batch_jacobian(fn, x)
    flat = tf.reshape(jacobian, [tf.shape(x)[0], -1])
  hessian = outer.batch_jacobian(flat, x)
  return tf.reshape(hessian, jacobian.shape.as_list() + [x.shape[-1]])


def _mse(a, b):
  return float(tf.reduce_mean(tf.square(tf.cast(a, tf.float64) - b)))


class SobolevObjectiveTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    self.model = _mlp(3, 2, seed=0)
    self.teacher = _mlp(3, 2, seed=1)
    self.x = tf.constant(
      np.random.default_rng(0).normal(size=(5, 3)), tf.float64
    )
    self.targets = {
      "value": self.teacher(self.x),
      "d1": _batch_jacobian(self.teacher, self.x),
      "d2": _batch_hessian(self.teacher, self.x),
    }

  @parameterized.parameters(1, 2)
  def test_full_terms_match_brute_force(self, order):
    objective = objective_lib.SobolevObjective(order=order)
    targets = {
      k: self.targets[k] for k in objective_lib.TARGET_KEYS[: order + 1]
    }
    losses = objective(self.model, self.x, targets)
    self.assertAllClose(
      losses.terms["value"],
      _mse(self.model(self.x), targets["value"]),
      atol=TIGHT,
    )
    self.assertAllClose(
      losses.terms["d1"],
      _mse(_batch_jacobian(self.model, self.x), targets["d1"]),
      atol=TIGHT,
    )
    if order == 2:
      self.assertAllClose(
        losses.terms["d2"],
        _mse(_batch_hessian(self.model, self.x), targets["d2"]),
        atol=TIGHT,
      )
    self.assertAllClose(losses.total, sum(losses.terms.values()), atol=TIGHT)

  def _stochastic_reference(self, seed, num_projections):
    """Brute-force projected terms from full derivatives."""
    v1 = derivatives.sample_directions(
      num_projections,
      self.targets["value"],
      tf.random.experimental.stateless_fold_in(seed, 1),
    )
    v2 = derivatives.sample_directions(
      num_projections, self.x, tf.random.experimental.stateless_fold_in(seed, 2)
    )
    d1_error = _batch_jacobian(self.model, self.x) - self.targets["d1"]
    d2_error = _batch_hessian(self.model, self.x) - self.targets["d2"]
    d1_errors = tf.einsum("pbo,boi->pbi", v1, d1_error)
    d2_errors = tf.einsum("pbo,boij,pbi->pbj", v1, d2_error, v2)
    return (
      tf.reduce_mean(tf.square(d1_errors)),
      tf.reduce_mean(tf.square(d2_errors)),
    )

  @parameterized.product(num_projections=[1, 3], compile_mode=["eager", "xla"])
  def test_stochastic_terms_match_brute_force(
    self, num_projections, compile_mode
  ):
    objective = objective_lib.SobolevObjective(
      order=2, mode="stochastic", num_projections=num_projections
    )
    seed = tf.constant([3, 4], tf.int64)

    def terms_and_reference(x):
      del x  # The reference uses self.x; x only makes the function traced.
      losses = objective(self.model, self.x, self.targets, seed=seed)
      return (
        losses.terms["d1"],
        losses.terms["d2"],
        *self._stochastic_reference(seed, num_projections),
      )

    if compile_mode == "xla":
      # XLA draws its own directions (see sample_directions), so the
      # reference is computed inside the same compiled function.
      terms_and_reference = tf.function(terms_and_reference, jit_compile=True)
    d1, d2, d1_reference, d2_reference = terms_and_reference(self.x)
    self.assertAllClose(d1, d1_reference, atol=1e-6)
    self.assertAllClose(d2, d2_reference, atol=1e-6)

  @parameterized.product(mode=["full", "stochastic"], order=[1, 2])
  def test_teacher_equals_array_targets(self, mode, order):
    objective = objective_lib.SobolevObjective(order=order, mode=mode)
    targets = {
      k: self.targets[k] for k in objective_lib.TARGET_KEYS[: order + 1]
    }
    from_arrays = objective(self.model, self.x, targets, seed=[1, 2])
    from_teacher = objective(
      self.model, self.x, teacher=self.teacher, seed=[1, 2]
    )
    for key in from_arrays.terms:
      self.assertAllClose(
        from_arrays.terms[key], from_teacher.terms[key], atol=TIGHT
      )

  def test_teacher_is_not_trained_through(self):
    objective = objective_lib.SobolevObjective(order=1, mode="stochastic")
    with tf.GradientTape() as tape:
      total = objective(
        self.model, self.x, teacher=self.teacher, seed=[0, 0]
      ).total
    gradients = tape.gradient(total, self.teacher.trainable_weights)
    self.assertTrue(all(g is None for g in gradients))

  def test_scalar_output_stochastic_equals_full(self):
    # Directions on the 1-sphere are +-1, and the squared error ignores signs.
    model, teacher = _mlp(2, 1, seed=2), _mlp(2, 1, seed=3)
    x = self.x[:, :2]
    full = objective_lib.SobolevObjective(order=1)(model, x, teacher=teacher)
    stochastic = objective_lib.SobolevObjective(order=1, mode="stochastic")(
      model, x, teacher=teacher, seed=[5, 6]
    )
    self.assertAllClose(full.terms["d1"], stochastic.terms["d1"], atol=TIGHT)

  def test_zero_weight_term_is_not_computed(self):
    objective = objective_lib.SobolevObjective(order=2, loss_weights=[1, 0, 1])
    nan_d1 = tf.fill(tf.shape(self.targets["d1"]), np.nan)
    losses = objective(
      self.model, self.x, {**self.targets, "d1": tf.cast(nan_d1, tf.float64)}
    )
    self.assertEqual(set(losses.terms), {"value", "d2"})
    self.assertTrue(np.isfinite(losses.total.numpy()))

  def test_zero_weight_target_may_be_missing(self):
    objective = objective_lib.SobolevObjective(order=1, loss_weights=[0, 1])
    losses = objective(self.model, self.x, {"d1": self.targets["d1"]})
    self.assertEqual(set(losses.terms), {"d1"})

  def test_drop_nonfinite_targets(self):
    objective = objective_lib.SobolevObjective(
      order=1, nonfinite_targets="drop"
    )
    d1 = self.targets["d1"].numpy()
    d1[1, 0, 2] = np.nan
    value = self.targets["value"].numpy()
    value[3, 1] = np.inf
    with tf.GradientTape() as tape:
      losses = objective(self.model, self.x, {"value": value, "d1": d1})
    gradients = tape.gradient(losses.total, self.model.trainable_weights)
    self.assertAllEqual(losses.sample_weight, [1, 0, 1, 0, 1])
    self.assertTrue(all(np.all(np.isfinite(g)) for g in gradients))
    keep = [0, 2, 4]
    expected = objective_lib.SobolevObjective(order=1)(
      self.model,
      tf.gather(self.x, keep),
      {k: tf.gather(self.targets[k], keep) for k in ("value", "d1")},
    )
    # Keras averages weighted losses over the whole batch (5), not the kept 3.
    self.assertAllClose(losses.total, expected.total * 3 / 5, atol=TIGHT)

  def test_nonfinite_targets_raise(self):
    objective = objective_lib.SobolevObjective(order=1)
    d1 = self.targets["d1"].numpy()
    d1[0, 0, 0] = np.nan
    with self.assertRaisesRegex(
      tf.errors.InvalidArgumentError, r"y\['d1'\] holds NaN or Inf"
    ):
      objective(self.model, self.x, {"value": self.targets["value"], "d1": d1})

  def test_sample_weight(self):
    objective = objective_lib.SobolevObjective(order=1)
    targets = {k: self.targets[k] for k in ("value", "d1")}
    weighted = objective(
      self.model,
      self.x,
      targets,
      sample_weight=tf.constant([1, 1, 0, 0, 0], tf.float64),
    )
    first_two = objective(
      self.model, self.x[:2], {k: v[:2] for k, v in targets.items()}
    )
    self.assertAllClose(weighted.total, first_two.total * 2 / 5, atol=TIGHT)

  def test_derivative_scales(self):
    scale = np.array([1.0, 10.0, 0.5])
    objective = objective_lib.SobolevObjective(
      order=1, derivative_scales={"d1": scale}
    )
    losses = objective(
      self.model, self.x, {k: self.targets[k] for k in ("value", "d1")}
    )
    error = (_batch_jacobian(self.model, self.x) - self.targets["d1"]) / scale
    self.assertAllClose(losses.terms["d1"], _mse(error, 0.0), atol=TIGHT)

  def test_derivative_spread(self):
    d1 = np.random.default_rng(1).normal(size=(100, 2, 3)) * [1.0, 5.0, 0.1]
    spread = objective_lib.derivative_spread(d1)
    self.assertEqual(spread.shape, (3,))
    self.assertAllClose(spread, np.std(d1, axis=(0, 1)))

  def test_output_transform(self):
    objective = objective_lib.SobolevObjective(
      order=1, output_transform="log_softmax"
    )
    losses = objective(self.model, self.x, teacher=self.teacher)
    self.assertAllClose(
      losses.prediction, tf.nn.log_softmax(self.model(self.x)), atol=TIGHT
    )
    self.assertAllClose(
      losses.target_value, tf.nn.log_softmax(self.teacher(self.x)), atol=TIGHT
    )
    log_probs = lambda x: tf.nn.log_softmax(self.model(x))  # noqa: E731
    teacher_log_probs = lambda x: tf.nn.log_softmax(self.teacher(x))  # noqa: E731
    self.assertAllClose(
      losses.terms["d1"],
      _mse(
        _batch_jacobian(log_probs, self.x),
        _batch_jacobian(teacher_log_probs, self.x),
      ),
      atol=TIGHT,
    )

  def test_custom_loss_callable(self):
    def mean_absolute(y_true, y_pred):
      return tf.reduce_mean(tf.abs(y_true - y_pred), axis=-1)

    objective = objective_lib.SobolevObjective(
      order=1, losses=["mse", mean_absolute]
    )
    losses = objective(
      self.model, self.x, {k: self.targets[k] for k in ("value", "d1")}
    )
    expected = float(
      tf.reduce_mean(
        tf.abs(_batch_jacobian(self.model, self.x) - self.targets["d1"])
      )
    )
    self.assertAllClose(losses.terms["d1"], expected, atol=TIGHT)

  def test_function_loss_names_are_valid_in_graphs(self):
    def _private(y_true, y_pred):
      return tf.reduce_mean(tf.square(y_true - y_pred), axis=-1)

    for fn in (_private, lambda y_true, y_pred: _private(y_true, y_pred)):
      loss = objective_lib.FunctionLoss(fn)
      self.assertIn(loss.name, ("private", "lambda"))
      value = tf.function(loss)(tf.ones([2, 3]), tf.zeros([2, 3]))
      self.assertAllClose(value, 1.0)

  @parameterized.parameters("full", "stochastic")
  def test_eager_function_and_xla_agree(self, mode):
    objective = objective_lib.SobolevObjective(order=2, mode=mode)

    def total(x):
      return objective(self.model, x, self.targets, seed=[7, 8]).total

    eager = total(self.x)
    self.assertAllClose(tf.function(total)(self.x), eager, atol=TIGHT)
    xla = tf.function(total, jit_compile=True)
    if mode == "full":
      # The losses are float32 (Keras floatx); XLA may fuse differently.
      self.assertAllClose(xla(self.x), eager, atol=1e-6)
    else:
      # XLA's directions differ from eager ones but are deterministic.
      self.assertAllEqual(xla(self.x), xla(self.x))

  def test_config_round_trip(self):
    objective = objective_lib.SobolevObjective(
      order=2,
      mode="stochastic",
      num_projections=3,
      loss_weights=[1.0, 0.5, 0.25],
      losses=["mse", "mae", "huber"],
      output_transform="log_softmax",
      nonfinite_targets="drop",
      derivative_scales={"d1": [1.0, 2.0, 3.0]},
    )
    restored = objective_lib.SobolevObjective.from_config(
      objective.get_config()
    )
    self.assertEqual(restored.get_config(), objective.get_config())
    a = objective(self.model, self.x, self.targets, seed=[1, 1])
    b = restored(self.model, self.x, self.targets, seed=[1, 1])
    self.assertAllClose(a.total, b.total, atol=TIGHT)

  @parameterized.named_parameters(
    ("order_above_two", dict(order=3), r"`order`.*\[0, 2\].*order=3"),
    ("negative_order", dict(order=-1), r"order=-1"),
    ("mode", dict(mode="exact"), r"`mode`.*mode='exact'"),
    ("projections", dict(num_projections=0), r"num_projections=0"),
    ("negative_weight", dict(loss_weights=[1, -1]), r"non-negative.*-1"),
    ("nan_weight", dict(loss_weights=[1, np.nan]), r"finite"),
    ("weight_count", dict(loss_weights=[1, 1, 1]), r"Expected 2"),
    ("loss_count", dict(losses=["mse"] * 3), r"one loss or 2"),
    ("loss_type", dict(losses=3), r"losses\[0\].*Received: 3"),
    ("transform", dict(output_transform="tanh"), r"output_transform='tanh'"),
    ("jacobian_mode", dict(jacobian_mode="x"), r"jacobian_mode='x'"),
    ("nonfinite", dict(nonfinite_targets="skip"), r"'skip'"),
    ("scale_key", dict(derivative_scales={"d2": [1.0]}), r"'d2'"),
    ("scale_value", dict(derivative_scales={"d1": [0.0]}), r"positive"),
  )
  def test_invalid_configuration(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      objective_lib.SobolevObjective(**kwargs)

  @parameterized.named_parameters(
    ("unknown_key", {"value": 0, "grad": 0}, r"unknown target keys \['grad'\]"),
    (
      "beyond_order",
      {"value": 0, "d1": 0, "d2": 0},
      r"\['d2'\] for derivative orders above.*order=1",
    ),
    ("missing", {"value": 0}, r"Missing targets \['d1'\]"),
  )
  def test_invalid_target_keys(self, keys, message):
    targets = {key: self.targets.get(key, self.x) for key in keys}
    with self.assertRaisesRegex(ValueError, message):
      objective_lib.SobolevObjective(order=1)(self.model, self.x, targets)

  @parameterized.parameters("full", "stochastic")
  def test_mismatched_derivative_shape(self, mode):
    objective = objective_lib.SobolevObjective(order=1, mode=mode)
    targets = {
      "value": self.targets["value"],
      "d1": self.targets["d1"][:, :, :2],
    }
    with self.assertRaisesRegex(
      ValueError,
      r"y\['d1'\].*expected shape \[B, 2, 3\].*Received: \[B, 2, 2\]",
    ):
      objective(self.model, self.x, targets, seed=[0, 0])

  def test_mismatched_value_shape(self):
    objective = objective_lib.SobolevObjective(order=0)
    with self.assertRaisesRegex(ValueError, r"y\['value'\].*\[B, 2\]"):
      objective(self.model, self.x, self.targets["value"][:, :1])

  def test_integer_input(self):
    with self.assertRaisesRegex(ValueError, r"dtype=int32"):
      objective_lib.SobolevObjective(order=1)(
        lambda x: tf.cast(x, tf.float32),
        tf.zeros([2, 3], tf.int32),
        {"value": tf.zeros([2, 3]), "d1": tf.zeros([2, 3, 3])},
      )

  def test_stochastic_needs_seed(self):
    objective = objective_lib.SobolevObjective(order=1, mode="stochastic")
    with self.assertRaisesRegex(ValueError, r"needs a `seed`"):
      objective(self.model, self.x, teacher=self.teacher)

  def test_teacher_with_targets(self):
    with self.assertRaisesRegex(ValueError, r"pass no targets"):
      objective_lib.SobolevObjective(order=1)(
        self.model, self.x, self.targets, teacher=self.teacher
      )

  def test_no_targets_and_no_teacher(self):
    with self.assertRaisesRegex(ValueError, r"targets=None"):
      objective_lib.SobolevObjective(order=1)(self.model, self.x)


if __name__ == "__main__":
  tf.test.main()
