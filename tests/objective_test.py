"""Tests for sobolev_tf.objective (with its config, targets and estimators)."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import config as config_lib
from sobolev_tf import objective as objective_lib
from sobolev_tf import projections
from sobolev_tf import testing

testing.configure_logical_cpus(2)

# float64 brute-force references agree with the objective to round-off.
TIGHT = 1e-10


def _mlp(in_dim, out_dim, seed, dtype="float64", outputs=1):
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((in_dim,), dtype=dtype)
  hidden = keras.layers.Dense(6, activation="tanh", dtype=dtype)(inputs)
  heads = [
    keras.layers.Dense(out_dim, dtype=dtype)(hidden) for _ in range(outputs)
  ]
  return keras.Model(inputs, heads[0] if outputs == 1 else heads)


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


def _plain(**kwargs):
  """An objective whose total is the plain weighted sum of its terms."""
  return objective_lib.SobolevObjective(balance="none", **kwargs)


class ObjectiveTestCase(tf.test.TestCase, parameterized.TestCase):
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

  def _order1(self):
    return {k: self.targets[k] for k in ("value", "d1")}


class TermsTest(ObjectiveTestCase):
  @parameterized.parameters(1, 2)
  def test_full_terms_match_brute_force(self, order):
    objective = _plain(order=order)
    targets = {k: self.targets[k] for k in config_lib.TERMS[: order + 1]}
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
    self.assertEqual(losses.entries["d1"], 5 * 2 * 3)

  def _stochastic_reference(self, seed, num_projections):
    """Brute-force projected terms from full derivatives."""
    v1 = projections.sample_directions(
      num_projections,
      self.targets["value"],
      tf.random.experimental.stateless_fold_in(seed, 1),
    )
    v2 = projections.sample_directions(
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
    objective = _plain(
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

  @parameterized.product(
    mode=["full", "stochastic"],
    order=[1, 2],
    balance=["none", "target_scale"],
  )
  def test_teacher_equals_array_targets(self, mode, order, balance):
    objective = objective_lib.SobolevObjective(
      order=order, mode=mode, balance=balance
    )
    targets = {k: self.targets[k] for k in config_lib.TERMS[: order + 1]}
    from_arrays = objective(self.model, self.x, targets, seed=[1, 2])
    from_teacher = objective(
      self.model, self.x, teacher=self.teacher, seed=[1, 2]
    )
    for key in from_arrays.terms:
      self.assertAllClose(
        from_arrays.terms[key], from_teacher.terms[key], atol=TIGHT
      )
    self.assertAllClose(from_arrays.total, from_teacher.total, atol=TIGHT)

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
    full = _plain(order=1)(model, x, teacher=teacher)
    stochastic = _plain(order=1, mode="stochastic")(
      model, x, teacher=teacher, seed=[5, 6]
    )
    self.assertAllClose(full.terms["d1"], stochastic.terms["d1"], atol=TIGHT)

  def test_zero_weight_term_is_not_computed(self):
    objective = _plain(order=2, loss_weights=[1, 0, 1])
    nan_d1 = tf.fill(tf.shape(self.targets["d1"]), np.nan)
    losses = objective(
      self.model, self.x, {**self.targets, "d1": tf.cast(nan_d1, tf.float64)}
    )
    self.assertEqual(set(losses.terms), {"value", "d2"})
    self.assertAllClose(
      losses.total, losses.terms["value"] + losses.terms["d2"], atol=TIGHT
    )

  def test_zero_weight_target_may_be_missing(self):
    objective = _plain(order=1, loss_weights=[0, 1])
    losses = objective(self.model, self.x, {"d1": self.targets["d1"]})
    self.assertEqual(set(losses.terms), {"d1"})
    self.assertAllClose(losses.total, losses.terms["d1"], atol=TIGHT)

  def test_tuple_and_dict_targets_agree(self):
    objective = _plain(order=1)
    as_tuple = objective(
      self.model, self.x, (self.targets["value"], self.targets["d1"])
    )
    as_dict = objective(self.model, self.x, self._order1())
    self.assertAllClose(as_tuple.total, as_dict.total, atol=TIGHT)

  def test_a_list_is_a_value_not_a_tuple_of_terms(self):
    value = self.targets["value"].numpy()
    as_list = _plain(order=0)(self.model, self.x, value.tolist())
    as_array = _plain(order=0)(self.model, self.x, value)
    self.assertAllClose(as_list.total, as_array.total, atol=TIGHT)

  def test_dict_weights_and_losses_equal_sequences(self):
    by_key = _plain(order=1, loss_weights={"d1": 0.5}, losses={"d1": "mae"})
    by_order = _plain(order=1, loss_weights=[1.0, 0.5], losses=["mse", "mae"])
    self.assertEqual(by_key.config.loss_weights, (1.0, 0.5))
    self.assertAllClose(
      by_key(self.model, self.x, self._order1()).total,
      by_order(self.model, self.x, self._order1()).total,
      atol=TIGHT,
    )

  def test_sum_squared_error_is_the_paper_gradient_loss(self):
    summed = _plain(order=1, losses=["mse", "sum_squared_error"])
    mean = _plain(order=1)
    a = summed(self.model, self.x, self._order1()).terms["d1"]
    b = mean(self.model, self.x, self._order1()).terms["d1"]
    # Per example, the sum over the 2 x 3 Jacobian entries.
    self.assertAllClose(a, 6 * b, atol=TIGHT)

  def test_derivative_scales(self):
    scale = np.array([1.0, 10.0, 0.5])
    objective = _plain(order=1, derivative_scales={"d1": scale})
    losses = objective(self.model, self.x, self._order1())
    error = (_batch_jacobian(self.model, self.x) - self.targets["d1"]) / scale
    self.assertAllClose(losses.terms["d1"], _mse(error, 0.0), atol=TIGHT)

  def test_derivative_spread(self):
    d1 = np.random.default_rng(1).normal(size=(100, 2, 3)) * [1.0, 5.0, 0.1]
    spread = objective_lib.derivative_spread(d1)
    self.assertEqual(spread.shape, (3,))
    self.assertAllClose(spread, np.std(d1, axis=(0, 1)))

  def test_output_transform(self):
    objective = _plain(order=1, output_transform="log_softmax")
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

    objective = _plain(order=1, losses=["mse", mean_absolute])
    losses = objective(self.model, self.x, self._order1())
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
      self.assertAllClose(xla(self.x), eager, atol=1e-6)
    else:
      # XLA's directions differ from eager ones but are deterministic.
      self.assertAllEqual(xla(self.x), xla(self.x))


class SampleWeightTest(ObjectiveTestCase):
  def test_sample_weight_averages_over_the_whole_batch(self):
    objective = _plain(order=1)
    weighted = objective(
      self.model,
      self.x,
      self._order1(),
      sample_weight=tf.constant([1, 1, 0, 0, 0], tf.float64),
    )
    first_two = objective(
      self.model, self.x[:2], {k: v[:2] for k, v in self._order1().items()}
    )
    # As Keras: weighted losses are averaged over the batch (5), not 2.
    self.assertAllClose(weighted.total, first_two.total * 2 / 5, atol=TIGHT)

  def test_sample_weight_per_term(self):
    objective = _plain(order=1)
    unweighted = objective(self.model, self.x, self._order1())
    only_d1 = objective(
      self.model,
      self.x,
      self._order1(),
      sample_weight={"d1": np.zeros(5), "value": np.ones(5)},
    )
    self.assertAllClose(only_d1.terms["value"], unweighted.terms["value"])
    self.assertAllClose(only_d1.terms["d1"], 0.0)

  def test_keras_style_weight_dict_over_every_key(self):
    # Keras hands a NumPy sample weight as one entry per key of y.
    objective = _plain(order=1)
    weight = np.array([1, 0, 1, 1, 0], np.float64)
    as_dict = objective(
      self.model,
      self.x,
      self._order1(),
      sample_weight={"value": weight, "d1": weight},
    )
    as_array = objective(
      self.model, self.x, self._order1(), sample_weight=weight
    )
    self.assertAllClose(as_dict.total, as_array.total, atol=TIGHT)


class NonfiniteTargetsTest(ObjectiveTestCase):
  def _gappy(self):
    d1 = self.targets["d1"].numpy()
    d1[1, 0, 2] = np.nan
    value = self.targets["value"].numpy()
    value[3, 1] = np.inf
    return {"value": value, "d1": d1}

  def test_drop_removes_examples_from_every_mean(self):
    objective = _plain(order=1, nonfinite_targets="drop")
    with tf.GradientTape() as tape:
      losses = objective(self.model, self.x, self._gappy())
    gradients = tape.gradient(losses.total, self.model.trainable_weights)
    self.assertAllEqual(losses.sample_weight, [1, 0, 1, 0, 1])
    self.assertTrue(all(np.all(np.isfinite(g)) for g in gradients))
    keep = [0, 2, 4]
    expected = _plain(order=1)(
      self.model,
      tf.gather(self.x, keep),
      {k: tf.gather(v, keep) for k, v in self._order1().items()},
    )
    # Dropped examples are not in the divisor (3 examples, not 5).
    self.assertAllClose(losses.total, expected.total, atol=TIGHT)
    self.assertEqual(losses.entries["d1"], 3 * 6)

  def test_drop_everything_reports_no_entries(self):
    objective = _plain(order=1, nonfinite_targets="drop")
    nan = {k: np.full(v.shape, np.nan) for k, v in self._order1().items()}
    losses = objective(self.model, self.x, nan)
    self.assertEqual(losses.entries["d1"], 0)
    self.assertEqual(losses.entries["value"], 0)
    self.assertAllEqual(losses.total, 0.0)

  def test_missing_entries_carry_no_loss_and_do_not_count(self):
    objective = _plain(order=1, nonfinite_targets="missing")
    gappy = self._gappy()
    losses = objective(self.model, self.x, gappy)
    errors = _batch_jacobian(self.model, self.x).numpy() - gappy["d1"]
    expected = np.nanmean(np.square(errors))
    self.assertAllClose(losses.terms["d1"], expected, atol=TIGHT)
    self.assertEqual(losses.entries["d1"], 5 * 6 - 1)
    self.assertEqual(losses.entries["value"], 5 * 2 - 1)

  def test_explicit_mask_equals_nan_entries(self):
    gappy = self._gappy()
    by_nan = _plain(order=1, nonfinite_targets="missing")(
      self.model, self.x, gappy
    )
    mask = {k + "_mask": np.isfinite(v) for k, v in gappy.items()}
    clean = {k: np.nan_to_num(v, posinf=0.0) for k, v in gappy.items()}
    by_mask = _plain(order=1)(self.model, self.x, {**clean, **mask})
    self.assertAllClose(by_nan.total, by_mask.total, atol=TIGHT)
    self.assertAllEqual(by_nan.entries["d1"], by_mask.entries["d1"])

  def test_full_mask_equals_no_mask(self):
    ones = {k + "_mask": np.ones(v.shape) for k, v in self._order1().items()}
    masked = _plain(order=1)(self.model, self.x, {**self._order1(), **ones})
    plain = _plain(order=1)(self.model, self.x, self._order1())
    self.assertAllClose(masked.total, plain.total, atol=TIGHT)

  def test_nan_under_a_zero_mask_never_counts(self):
    gappy = self._gappy()
    masks = {k + "_mask": np.isfinite(v) for k, v in gappy.items()}
    for policy in ("raise", "drop"):
      losses = _plain(order=1, nonfinite_targets=policy)(
        self.model, self.x, {**gappy, **masks}
      )
      self.assertTrue(losses.finite)
      self.assertEqual(losses.entries["d1"], 5 * 6 - 1)

  def test_raise_eagerly(self):
    with self.assertRaisesRegex(ValueError, r"\['value', 'd1'\] hold NaN"):
      _plain(order=1)(self.model, self.x, self._gappy())

  def test_raise_in_a_graph_marks_the_step_not_finite(self):
    objective = _plain(order=1)

    @tf.function(jit_compile=True)
    def step(x, y):
      losses = objective(self.model, x, y)
      return losses.finite, losses.targets_finite

    self.assertAllEqual(step(self.x, self._gappy()), [False, False])
    self.assertAllEqual(step(self.x, self._order1()), [True, True])

  def test_nonfinite_input_marks_the_step_not_finite(self):
    x = self.x.numpy()
    x[2, 1] = np.nan
    objective = _plain(order=1)

    @tf.function
    def step(x):
      losses = objective(self.model, x, self._order1())
      return losses.finite, losses.targets_finite

    self.assertAllEqual(step(x), [False, True])


class DirectionalTargetsTest(ObjectiveTestCase):
  def _basis(self):
    eye = np.eye(3)[None].repeat(5, axis=0)  # [B, K=3, in=3]
    return tf.constant(eye, tf.float64)

  def test_basis_directions_equal_the_full_jacobian(self):
    objective = _plain(order=1)
    directional = {
      "value": self.targets["value"],
      "d1_directions": self._basis(),
      # J v_k for the basis: the Jacobian's columns, [B, out, K].
      "d1_directional": self.targets["d1"],
    }
    a = objective(self.model, self.x, directional)
    b = objective(self.model, self.x, self._order1())
    self.assertAllClose(a.terms["d1"], b.terms["d1"], atol=TIGHT)

  @parameterized.parameters(False, True)
  def test_random_directions_match_brute_force(self, compiled):
    objective = _plain(order=2)
    v = tf.constant(np.random.default_rng(4).normal(size=(5, 2, 3)))
    data = {
      "value": self.targets["value"],
      "d1_directions": v,
      "d1_directional": tf.einsum("boi,bki->bok", self.targets["d1"], v),
      "d2_directions": v,
      "d2_directional": tf.einsum("boij,bki->bokj", self.targets["d2"], v),
    }

    def call(x):
      return objective(self.model, x, data).terms

    terms = (tf.function(call) if compiled else call)(self.x)
    jacobian_error = _batch_jacobian(self.model, self.x) - self.targets["d1"]
    hessian_error = _batch_hessian(self.model, self.x) - self.targets["d2"]
    self.assertAllClose(
      terms["d1"],
      _mse(tf.einsum("boi,bki->bok", jacobian_error, v), 0.0),
      atol=TIGHT,
    )
    self.assertAllClose(
      terms["d2"],
      _mse(tf.einsum("boij,bki->bokj", hessian_error, v), 0.0),
      atol=TIGHT,
    )

  def test_directional_terms_train(self):
    objective = _plain(order=1)
    data = {
      "d1_directions": self._basis()[:, :1],
      "d1_directional": self.targets["d1"][..., :1],
      "value": self.targets["value"],
    }
    with tf.GradientTape() as tape:
      total = objective(self.model, self.x, data).total
    gradients = tape.gradient(total, self.model.trainable_weights)
    self.assertTrue(all(g is not None and np.any(g != 0) for g in gradients))

  @parameterized.named_parameters(
    (
      "directions_alone",
      {"d1_directions": 0},
      r"need both `d1_directions` and `d1_directional`",
    ),
    (
      "both_forms",
      {"d1": 0, "d1_directions": 0, "d1_directional": 0},
      r"several kinds for order 1 \('d1'\): full targets \['d1'\] and "
      r"directional targets \['d1_directional', 'd1_directions'\]",
    ),
  )
  def test_invalid_keys(self, extra, message):
    data = {"value": self.targets["value"], **extra}
    with self.assertRaisesRegex(ValueError, message):
      _plain(order=1)(self.model, self.x, data)

  def test_directions_of_the_wrong_shape(self):
    data = {
      "value": self.targets["value"],
      "d1_directions": tf.zeros([5, 2, 4], tf.float64),
      "d1_directional": tf.zeros([5, 2, 2], tf.float64),
    }
    with self.assertRaisesRegex(ValueError, r"\[B, K, 3\].*\(5, 2, 4\)"):
      _plain(order=1)(self.model, self.x, data)

  def test_directional_values_of_the_wrong_shape(self):
    data = {
      "value": self.targets["value"],
      "d1_directions": tf.zeros([5, 4, 3], tf.float64),
      "d1_directional": tf.zeros([5, 2, 3], tf.float64),
    }
    with self.assertRaisesRegex(
      ValueError, r"y\['d1_directional'\].*expected shape \[B, 2, 4\]"
    ):
      _plain(order=1)(self.model, self.x, data)


class ValidationTest(ObjectiveTestCase):
  def test_config_round_trip(self):
    objective = objective_lib.SobolevObjective(
      order=2,
      mode="stochastic",
      num_projections=3,
      loss_weights={"value": 1.0, "d1": 0.5, "d2": 0.25},
      losses=["mse", "mae", "huber"],
      output_transform="log_softmax",
      nonfinite_targets="drop",
      derivative_scales={"d1": [1.0, 2.0, 3.0]},
      balance="running_loss",
      balance_decay=0.9,
    )
    restored = objective_lib.SobolevObjective.from_config(
      objective.get_config()
    )
    self.assertEqual(restored.get_config(), objective.get_config())
    a = objective(self.model, self.x, self.targets, seed=[1, 1])
    b = restored(self.model, self.x, self.targets, seed=[1, 1])
    self.assertAllClose(a.total, b.total, atol=TIGHT)

  def test_config_saved_before_balances_keeps_the_plain_sum(self):
    config = _plain(order=1).get_config()
    del config["balance"], config["balance_decay"]
    restored = objective_lib.SobolevObjective.from_config(config)
    self.assertEqual(restored.config.balance, "none")

  @parameterized.named_parameters(
    ("order_above_two", dict(order=3), r"`order`.*\[0, 2\].*order=3"),
    ("negative_order", dict(order=-1), r"order=-1"),
    ("bool_order", dict(order=True), r"`order`.*order=True"),
    ("mode", dict(mode="exact"), r"`mode`.*mode='exact'"),
    ("projections", dict(num_projections=0), r"num_projections=0"),
    ("negative_weight", dict(loss_weights=[1, -1]), r"non-negative.*-1"),
    ("nan_weight", dict(loss_weights=[1, np.nan]), r"finite"),
    ("text_weight", dict(loss_weights=[1, "a"]), r"expected numbers"),
    ("weight_count", dict(loss_weights=[1, 1, 1]), r"Expected 2"),
    ("weight_key", dict(loss_weights={"d2": 1}), r"`loss_weights`.*'d2'"),
    ("loss_count", dict(losses=["mse"] * 3), r"Expected 2 `losses`"),
    ("loss_type", dict(losses=3), r"losses\['value'\].*Received: 3"),
    ("loss_name", dict(losses="nosuch"), r"losses\['value'\].*nosuch"),
    ("transform", dict(output_transform="tanh"), r"output_transform='tanh'"),
    ("jacobian_mode", dict(jacobian_mode="x"), r"jacobian_mode='x'"),
    ("nonfinite", dict(nonfinite_targets="skip"), r"'skip'"),
    ("balance", dict(balance="gradnorm"), r"`balance`.*'gradnorm'"),
    ("decay", dict(balance_decay=1.0), r"balance_decay=1.0"),
    (
      "missing_stochastic",
      dict(nonfinite_targets="missing", mode="stochastic"),
      r"mode='full'",
    ),
    ("scale_key", dict(derivative_scales={"d2": [1.0]}), r"'d2'"),
    ("scale_value", dict(derivative_scales={"d1": [0.0]}), r"positive"),
  )
  def test_invalid_configuration(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      objective_lib.SobolevObjective(**kwargs)

  def test_derivative_scales_of_the_wrong_length(self):
    objective = _plain(order=1, derivative_scales={"d1": [1.0, 2.0]})
    with self.assertRaisesRegex(
      ValueError, r"derivative_scales\['d1'\].*\[3\].*\[2\]"
    ):
      objective(self.model, self.x, self._order1())

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
      _plain(order=1)(self.model, self.x, targets)

  def test_unknown_sample_weight_key(self):
    with self.assertRaisesRegex(ValueError, r"`sample_weight`.*\['grad'\]"):
      _plain(order=1)(
        self.model, self.x, self._order1(), sample_weight={"grad": np.ones(5)}
      )

  @parameterized.parameters("full", "stochastic")
  def test_mismatched_derivative_shape(self, mode):
    objective = _plain(order=1, mode=mode)
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
    objective = _plain(order=0)
    with self.assertRaisesRegex(ValueError, r"y\['value'\].*\[B, 2\]"):
      objective(self.model, self.x, self.targets["value"][:, :1])

  @parameterized.parameters("value", "d1")
  def test_batch_of_one_does_not_broadcast(self, key):
    targets = self._order1()
    targets[key] = targets[key][:1]
    with self.assertRaisesRegex(ValueError, rf"y\['{key}'\].*batch size 1.*5"):
      _plain(order=1)(self.model, self.x, targets)

  def test_batch_mismatch_in_a_graph(self):
    step = tf.function(
      lambda x, y: _plain(order=1)(self.model, x, y).total,
      input_signature=[
        tf.TensorSpec([None, 3], tf.float64),
        {
          "value": tf.TensorSpec([None, 2], tf.float64),
          "d1": tf.TensorSpec([None, 2, 3], tf.float64),
        },
      ],
    )
    targets = {k: v[:1] for k, v in self._order1().items()}
    with self.assertRaisesRegex(
      tf.errors.InvalidArgumentError,
      r"y\[.*value.*\] must have the batch size of x",
    ):
      step(self.x, targets)

  def test_sample_weight_batch_mismatch(self):
    with self.assertRaisesRegex(ValueError, r"sample_weight for 'value'"):
      _plain(order=1)(
        self.model, self.x, self._order1(), sample_weight=np.ones(1)
      )

  def test_integer_input(self):
    with self.assertRaisesRegex(ValueError, r"dtype=int32"):
      _plain(order=1)(
        lambda x: tf.cast(x, tf.float32),
        tf.zeros([2, 3], tf.int32),
        {"value": tf.zeros([2, 3]), "d1": tf.zeros([2, 3, 3])},
      )

  def test_several_outputs(self):
    model = _mlp(3, 2, seed=0, outputs=2)
    with self.assertRaisesRegex(ValueError, r"single tensor.*2 outputs"):
      _plain(order=1)(model, self.x, self._order1())

  def test_stochastic_needs_seed(self):
    objective = _plain(order=1, mode="stochastic")
    with self.assertRaisesRegex(ValueError, r"needs a `seed`"):
      objective(self.model, self.x, teacher=self.teacher)

  @parameterized.parameters("full", "stochastic")
  def test_teacher_of_another_shape(self, mode):
    objective = _plain(order=1, mode=mode)
    with self.assertRaisesRegex(
      ValueError,
      r"teacher's output must have the model's shape \[B, 2\].*"
      r"\[B, 4\]",
    ):
      objective(self.model, self.x, teacher=_mlp(3, 4, seed=1), seed=[0, 0])

  def test_mask_in_stochastic_mode(self):
    data = {**self._order1(), "d1_mask": np.ones((5, 2, 3))}
    with self.assertRaisesRegex(ValueError, r"mask for 'd1'.*mode='full'"):
      _plain(order=1, mode="stochastic")(self.model, self.x, data, seed=[0, 0])

  def test_teacher_with_targets(self):
    with self.assertRaisesRegex(ValueError, r"pass no targets"):
      _plain(order=1)(self.model, self.x, self.targets, teacher=self.teacher)

  def test_no_targets_and_no_teacher(self):
    with self.assertRaisesRegex(ValueError, r"targets=None"):
      _plain(order=1)(self.model, self.x)

  def test_config_and_options_together(self):
    with self.assertRaisesRegex(ValueError, r"either a `config` or options"):
      objective_lib.SobolevObjective(config_lib.SobolevConfig(), order=2)


if __name__ == "__main__":
  tf.test.main()
