"""Tests for sobolev_tf.derivatives."""

import itertools
from unittest import mock

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import derivatives
from sobolev_tf import finite_differences
from sobolev_tf import private_api
from sobolev_tf import projections
from sobolev_tf import testing
from sobolev_tf.testing import derivative_cases as cases

testing.configure_logical_cpus(2)


class FullDerivativesTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.product(
    case=cases.SHAPE_CASES, mode=cases.MODES, dtype=cases.DTYPES
  )
  def test_value_and_jacobian_match_analytic(self, case, mode, dtype):
    _, in_shape, out_shape = case
    fn, reference = cases.analytic_case(in_shape, out_shape)
    x = cases.inputs(in_shape, dtype)
    value, jac, _ = reference(x.numpy().astype(np.float64))
    tolerance = cases.ANALYTIC_TOLERANCE[dtype]

    y, jacobian = derivatives.value_and_jacobian(fn, x, mode)

    self.assertEqual(y.dtype, dtype)
    self.assertEqual(jacobian.dtype, dtype)
    self.assertEqual(jacobian.shape, (3, *out_shape, *in_shape))
    self.assertAllClose(y, value, atol=tolerance, rtol=tolerance)
    self.assertAllClose(jacobian, jac, atol=tolerance, rtol=tolerance)
    self.assertAllClose(
      derivatives.jacobian(fn, x, mode), jac, atol=tolerance, rtol=tolerance
    )

  # float32 on one shape and without forward mode, to save ~4 s of tracing;
  # the float32 Jacobians cover forward mode's dtype handling.
  @parameterized.parameters(
    *[
      dict(case=case, mode=mode, dtype=tf.float64)
      for case in cases.HESSIAN_SHAPE_CASES
      for mode in cases.MODES
    ],
    *[
      dict(case=cases.SHAPE_CASES[0], mode=mode, dtype=tf.float32)
      for mode in ("reverse", "auto")
    ],
  )
  def test_value_and_hessian_match_analytic(self, case, mode, dtype):
    _, in_shape, out_shape = case
    fn, reference = cases.analytic_case(in_shape, out_shape)
    x = cases.inputs(in_shape, dtype)
    value, jac, hess = reference(x.numpy().astype(np.float64))
    tolerance = cases.ANALYTIC_TOLERANCE[dtype]

    y, jacobian, hessian = derivatives.value_and_derivatives(fn, x, 2, mode)

    self.assertEqual(hessian.dtype, dtype)
    self.assertEqual(hessian.shape, (3, *out_shape, *in_shape, *in_shape))
    self.assertAllClose(y, value, atol=tolerance, rtol=tolerance)
    self.assertAllClose(jacobian, jac, atol=tolerance, rtol=tolerance)
    self.assertAllClose(hessian, hess, atol=tolerance, rtol=tolerance)
    self.assertAllClose(
      derivatives.hessian(fn, x, mode), hess, atol=tolerance, rtol=tolerance
    )

  # Not "forward": three nested eager forward accumulators take ~30 s here.
  @parameterized.parameters("reverse", "auto")
  def test_third_order_of_a_cubic(self, mode):
    # y = [sum_i x_i^3, x_0 x_1 x_2]: D^3 is 6 delta_ijk and |e_ijk|.
    def fn(x):
      return tf.stack([tf.reduce_sum(x**3, -1), tf.reduce_prod(x, -1)], -1)

    x = cases.inputs((3,))
    outputs = derivatives.value_and_derivatives(fn, x, 3, mode)

    self.assertLen(outputs, 4)
    self.assertEqual(outputs[3].shape, (3, 2, 3, 3, 3))
    expected = np.zeros((2, 3, 3, 3))
    for i in range(3):
      expected[0, i, i, i] = 6.0
    for permutation in itertools.permutations(range(3)):
      expected[(1, *permutation)] = 1.0
    self.assertAllClose(
      outputs[3], np.broadcast_to(expected, (3, 2, 3, 3, 3)), atol=1e-12
    )
    self.assertAllClose(outputs[0], fn(x), atol=0)
    self.assertAllClose(outputs[2], derivatives.hessian(fn, x, mode), atol=0)

  def test_order_zero_and_one(self):
    fn, _ = cases.analytic_case((3,), (2,))
    x = cases.inputs((3,))
    (value,) = derivatives.value_and_derivatives(fn, x, 0)
    self.assertAllEqual(value, fn(x))
    value, jacobian = derivatives.value_and_derivatives(fn, x, 1)
    self.assertAllEqual(value, fn(x))
    self.assertAllEqual(jacobian, derivatives.jacobian(fn, x))

  def test_forward_derivatives_of_input_independent_outputs_are_zero(self):
    x = cases.inputs((2,))
    jacobian = derivatives.jacobian(lambda x: tf.ones_like(x), x, "forward")
    hessian = derivatives.hessian(lambda x: 2 * x, x, "forward")
    self.assertAllEqual(jacobian, tf.zeros([3, 2, 2], tf.float64))
    self.assertAllEqual(hessian, tf.zeros([3, 2, 2, 2], tf.float64))

  def test_reverse_derivatives_of_input_independent_outputs_are_zero(self):
    x = cases.inputs((2,))
    for mode in ("reverse", "auto"):
      jacobian = derivatives.jacobian(lambda x: tf.ones_like(x), x, mode)
      hessian = derivatives.hessian(lambda x: 2 * x, x, mode)
      self.assertAllEqual(jacobian, tf.zeros([3, 2, 2], tf.float64))
      self.assertAllEqual(hessian, tf.zeros([3, 2, 2, 2], tf.float64))

  @parameterized.named_parameters(
    ("vector", (3,), (2,)), ("matrix_to_matrix", (2, 2), (2, 2))
  )
  def test_mlp_matches_finite_differences(self, in_shape, out_shape):
    model = cases.smooth_mlp(in_shape, out_shape)
    x = cases.inputs(in_shape)

    def numpy_model(inputs):
      return model(tf.constant(inputs)).numpy()

    fd_jacobian = finite_differences.jacobian(numpy_model, x.numpy())
    fd_hessian = finite_differences.hessian(numpy_model, x.numpy())
    for mode in cases.MODES:
      self.assertAllClose(
        derivatives.jacobian(model, x, mode),
        fd_jacobian,
        atol=cases.FD_JACOBIAN_TOLERANCE,
        rtol=0,
      )
      self.assertAllClose(
        derivatives.hessian(model, x, mode),
        fd_hessian,
        atol=cases.FD_HESSIAN_TOLERANCE,
        rtol=0,
      )


class CompilationTest(tf.test.TestCase, parameterized.TestCase):
  """Eager, `tf.function` and XLA runs give the same derivatives."""

  def setUp(self):
    super().setUp()
    # out > in, so "auto" takes forward mode inside tf.function.
    self.model = cases.smooth_mlp((2,), (3,))
    self.x = cases.inputs((2,))
    self.v1 = cases.directions((3, 3), seed=1)
    self.v2 = cases.directions((3, 2), seed=2)

  def _check_agreement(self, compute):
    expected = compute()
    for jit_compile in (False, True):
      actual = tf.function(compute, jit_compile=jit_compile)()
      tf.nest.map_structure(
        lambda a, e: self.assertAllClose(
          a, e, atol=cases.ROUND_OFF, rtol=cases.ROUND_OFF
        ),
        actual,
        expected,
      )

  @parameterized.parameters(*cases.MODES)
  def test_jacobian(self, mode):
    self._check_agreement(
      lambda: derivatives.value_and_jacobian(self.model, self.x, mode)
    )

  @parameterized.parameters(*cases.MODES)
  def test_hessian(self, mode):
    self._check_agreement(lambda: derivatives.hessian(self.model, self.x, mode))

  def test_projected_derivatives(self):
    self._check_agreement(
      lambda: projections.value_and_projected_derivatives(
        self.model, self.x, [self.v1, 2 * self.v1], [self.v2, -self.v2]
      )
    )

  def test_vector_jacobian_product_and_projected_hessian(self):
    self._check_agreement(
      lambda: (
        projections.vector_jacobian_product(self.model, self.x, self.v1),
        projections.projected_hessian(self.model, self.x, self.v1, self.v2),
      )
    )


class VectorisedReverseModeTest(tf.test.TestCase, parameterized.TestCase):
  """Under XLA, reverse mode with several outputs runs as one `pfor` pass."""

  def _net(self, activation, in_shape, out_shape):
    keras.utils.set_random_seed(3)
    layers = [keras.Input(in_shape, dtype="float64")]
    if len(in_shape) > 1:
      layers.append(keras.layers.Flatten(dtype="float64"))
    layers += [
      keras.layers.Dense(8, activation=activation, dtype="float64"),
      keras.layers.Dense(cases.size(out_shape), dtype="float64"),
      keras.layers.Reshape(out_shape, dtype="float64"),
    ]
    return keras.Sequential(layers)

  def _jacobian_and_weight_gradients(self, net, x):
    with tf.GradientTape() as tape:
      y, jacobian = derivatives.value_and_jacobian(net, x, mode="reverse")
      loss = tf.reduce_sum(tf.square(jacobian)) + tf.reduce_sum(y)
    return jacobian, tape.gradient(loss, net.trainable_variables)

  @parameterized.product(
    activation=("relu", "tanh", "softplus"),
    shapes=(((3,), (4,)), ((2, 2), (2, 3))),
  )
  def test_matches_the_unrolled_products(self, activation, shapes):
    in_shape, out_shape = shapes
    net = self._net(activation, in_shape, out_shape)
    x = cases.inputs(in_shape)
    expected = self._jacobian_and_weight_gradients(net, x)  # Eager: unrolled.
    with mock.patch.object(
      private_api, "_pfor_lookup", wraps=private_api._pfor_lookup
    ) as pfor:
      actual = tf.function(
        self._jacobian_and_weight_gradients, jit_compile=True
      )(net, x)
    pfor.assert_called_once()
    self.assertEqual(actual[0].shape, (x.shape[0],) + out_shape + in_shape)
    tf.nest.map_structure(
      lambda a, e: self.assertAllClose(
        a, e, atol=cases.ROUND_OFF, rtol=cases.ROUND_OFF
      ),
      actual,
      expected,
    )

  def test_batch_and_weights_stay_arguments_of_the_program(self):
    # Through a function boundary (tf.vectorized_map), XLA would take the
    # batch as a compile-time constant with ReLU and compile every step.
    net = self._net("relu", (3,), (4,))
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(net.trainable_variables)
    x = cases.inputs((3,), batch=5)

    @tf.function(jit_compile=True)
    def step(x):
      jacobian, gradients = self._jacobian_and_weight_gradients(net, x)
      optimizer.apply(gradients, net.trainable_variables)
      return jacobian

    hlo = step.experimental_get_compiler_ir(x)(stage="hlo")
    entry = hlo[hlo.index("ENTRY") :].split("\n", 1)[0]
    self.assertIn("f64[5,3]", entry)  # The batch.
    for variable in net.trainable_variables:
      shape = ",".join(str(d) for d in variable.shape)
      self.assertIn(f"f64[{shape}]", entry)
    first = step(x)
    second = step(x)  # New weights, same program.
    self.assertNotAllClose(first, second)

  def test_unconvertible_loop_falls_back_to_unrolled_products(self):
    net = self._net("tanh", (3,), (4,))
    x = cases.inputs((3,))
    compute = tf.function(self._jacobian_and_weight_gradients, jit_compile=True)
    expected = compute(net, x)

    refuse = mock.Mock(
      side_effect=ValueError("No pfor vectorization defined for SomeOp")
    )
    with mock.patch.object(private_api, "_pfor_lookup", return_value=refuse):
      actual = tf.function(
        self._jacobian_and_weight_gradients, jit_compile=True
      )(net, x)
    refuse.assert_called_once()
    tf.nest.map_structure(
      lambda a, e: self.assertAllClose(
        a, e, atol=cases.ROUND_OFF, rtol=cases.ROUND_OFF
      ),
      actual,
      expected,
    )


class ModeSelectionTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.parameters((3, 5), (5, 3), (4, 4))
  def test_eager_always_reverse(self, input_size, output_size):
    self.assertTrue(tf.executing_eagerly())
    self.assertEqual(
      derivatives.choose_jacobian_mode(input_size, output_size), "reverse"
    )

  @parameterized.parameters(
    (3, 5, "forward"), (5, 3, "reverse"), (4, 4, "reverse")
  )
  def test_graph_picks_fewer_products(self, input_size, output_size, expected):
    @tf.function
    def choose():
      return tf.constant(
        derivatives.choose_jacobian_mode(input_size, output_size)
      )

    self.assertEqual(choose().numpy().decode(), expected)

  @parameterized.parameters(
    (3, 5, "reverse"), (3, 7, "forward"), (2, 8, "forward"), (4, 8, "reverse")
  )
  def test_xla_counts_a_forward_product_twice(
    self, input_size, output_size, expected
  ):
    chosen = []  # Recorded while tracing: XLA returns no strings.

    @tf.function(jit_compile=True)
    def choose():
      chosen.append(derivatives.choose_jacobian_mode(input_size, output_size))
      return tf.constant(0.0)

    choose()
    self.assertEqual(chosen, [expected])

  def test_forward_mode_under_xla_trains_like_reverse_mode(self):
    # Forward products under XLA are double-backward ones; the Jacobian and
    # the weights' gradients through it equal reverse mode's.
    model = cases.smooth_mlp((2,), (5,))
    x = tf.constant(np.random.default_rng(2).normal(size=(4, 2)), tf.float64)

    def gradients(mode):
      @tf.function(jit_compile=True)
      def step(x):
        with tf.GradientTape() as tape:
          jacobian = derivatives.jacobian(model, x, mode)
          loss = tf.reduce_sum(tf.square(jacobian))
        return jacobian, tape.gradient(loss, model.trainable_weights)

      return step(x)

    forward, reverse = gradients("forward"), gradients("reverse")
    self.assertAllClose(forward[0], reverse[0], atol=1e-10)
    for a, b in zip(forward[1], reverse[1], strict=True):
      # The output bias does not move a Jacobian: no gradient in either.
      self.assertEqual(a is None, b is None)
      if a is not None:
        self.assertAllClose(a, b, atol=1e-10)

  def test_auto_jacobian_runs_forward_mode_only_in_graphs(self):
    # Forward mode calls fn once per input coordinate; reverse mode once.
    calls = []
    model = cases.smooth_mlp((2,), (3,))

    def fn(x):
      calls.append(None)
      return model(x)

    x = cases.inputs((2,))
    derivatives.jacobian(fn, x, "auto")
    self.assertLen(calls, 1)
    calls.clear()
    tf.function(lambda x: derivatives.jacobian(fn, x, "auto"))(x)
    self.assertGreaterEqual(len(calls), 2)


class TrainingThroughDerivativesTest(tf.test.TestCase, parameterized.TestCase):
  """Gradients of derivative losses with respect to the model's weights."""

  def _assert_gradients_match(self, variables, gradients, expected, what):
    for variable, gradient, reference in zip(
      variables, gradients, expected, strict=True
    ):
      msg = f"{what}: {variable.path}"
      if variable.path.endswith("kernel"):
        self.assertIsNotNone(gradient, msg)
      if reference is None:
        # Only the output bias shifts no derivative; it gets no gradient.
        self.assertEqual(variable.path, variables[-1].path, msg)
        self.assertIsNone(gradient, msg)
      else:
        self.assertAllClose(
          gradient,
          reference,
          atol=cases.ROUND_OFF,
          rtol=cases.ROUND_OFF,
          msg=msg,
        )

  def _check_modes(self, model, order, modes, jit_compile=False):
    """Compiled weight gradients of sum(D^order ** 2) against eager reverse."""
    x = cases.inputs(model.input_shape[1:])

    def weight_gradients(mode):
      with tf.GradientTape() as tape:
        derivative = derivatives.value_and_derivatives(model, x, order, mode)
        loss = tf.reduce_sum(tf.square(derivative[-1]))
      return tape.gradient(loss, model.trainable_variables)

    # Eager reverse mode is the reference; eager forward mode is not trained
    # through (see choose_jacobian_mode).
    expected = weight_gradients("reverse")
    compiled = tf.function(weight_gradients, jit_compile=jit_compile)
    for mode in modes:
      self._assert_gradients_match(
        model.trainable_variables, compiled(mode), expected, mode
      )

  @parameterized.parameters(False, True)
  def test_jacobian_weight_gradients_agree_between_modes(self, jit_compile):
    # out > in, so "auto" is forward mode in graphs.
    self._check_modes(cases.smooth_mlp((2,), (3,)), 1, cases.MODES, jit_compile)

  @parameterized.parameters(False, True)
  def test_hessian_weight_gradients_agree_between_modes(self, jit_compile):
    # out <= in, so "auto" is forward-over-reverse in graphs.
    self._check_modes(
      cases.smooth_mlp((3,), (2,)), 2, ("reverse", "auto"), jit_compile
    )

  # TF 2.21 differentiates nested forward accumulators wrongly through an
  # outer tape, even inside tf.function; value_and_derivatives therefore
  # uses forward mode for the highest order only. These guard that.
  def test_hessian_weight_gradients_forward(self):
    self._check_modes(cases.smooth_mlp((2,), (3,)), 2, ("forward",))

  def test_hessian_weight_gradients_auto_with_more_outputs_than_inputs(self):
    # out > in: "auto" would pick forward mode for both orders in graphs.
    self._check_modes(cases.smooth_mlp((2,), (3,)), 2, ("auto",))

  def test_eager_auto_is_safe_to_train_through(self):
    model = cases.smooth_mlp((2,), (3,))
    x = cases.inputs((2,))

    def weight_gradients(mode):
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(derivatives.hessian(model, x, mode)))
      return tape.gradient(loss, model.trainable_variables)

    self._assert_gradients_match(
      model.trainable_variables,
      weight_gradients("auto"),
      tf.function(weight_gradients)("reverse"),
      "eager auto",
    )

  def test_projected_derivatives_train(self):
    model = cases.smooth_mlp((3,), (2,))
    x = cases.inputs((3,))
    v1, v2 = cases.directions((3, 2), seed=1), cases.directions((3, 3), seed=2)

    with tf.GradientTape(persistent=True) as tape:
      _, first, second = projections.value_and_projected_derivatives(
        model, x, [v1], [v2]
      )
      losses = {
        "projected d1": tf.reduce_sum(tf.square(first[0])),
        "projected d2": tf.reduce_sum(tf.square(second[0])),
      }
      y, jacobian, hessian = derivatives.value_and_derivatives(
        model, x, 2, "reverse"
      )
      full_losses = {
        "projected d1": tf.reduce_sum(
          tf.square(projections.project_jacobian(jacobian, v1))
        ),
        "projected d2": tf.reduce_sum(
          tf.square(projections.project_hessian(hessian, v1, v2))
        ),
      }
    for key, loss in losses.items():
      self._assert_gradients_match(
        model.trainable_variables,
        tape.gradient(loss, model.trainable_variables),
        tape.gradient(full_losses[key], model.trainable_variables),
        key,
      )
    del tape, y


class ErrorTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    self.fn, _ = cases.analytic_case((3,), (2,))

  @parameterized.parameters(
    derivatives.jacobian,
    derivatives.hessian,
    lambda fn, x: projections.vector_jacobian_product(fn, x, x[:, :2]),
  )
  def test_integer_input(self, compute):
    with self.assertRaisesRegex(ValueError, "floating-point.*dtype=int32"):
      compute(self.fn, tf.constant([[1, 2, 3]]))

  @parameterized.parameters(
    derivatives.jacobian,
    derivatives.hessian,
    lambda fn, x: projections.projected_hessian(fn, x, x, x),
  )
  def test_unbatched_input(self, compute):
    with self.assertRaisesRegex(ValueError, r"rank >= 2.*shape=\(3,\)"):
      compute(self.fn, tf.constant([1.0, 2.0, 3.0]))

  @parameterized.parameters(derivatives.jacobian, derivatives.hessian)
  def test_unknown_mode(self, compute):
    with self.assertRaisesRegex(ValueError, "mode='sideways'"):
      compute(self.fn, cases.inputs((3,)), mode="sideways")

  def test_negative_order(self):
    with self.assertRaisesRegex(ValueError, "non-negative.*order=-1"):
      derivatives.value_and_derivatives(self.fn, cases.inputs((3,)), -1)

  def test_mismatched_direction_lists(self):
    x = cases.inputs((3,))
    v1 = cases.directions((3, 2))
    with self.assertRaisesRegex(ValueError, "2 output and 1 input directions"):
      projections.value_and_projected_derivatives(self.fn, x, [v1, v1], [x])

  def test_dynamic_event_shape(self):
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float64)])
    def jacobian(x):
      return derivatives.jacobian(self.fn, x)

    with self.assertRaisesRegex(ValueError, "known statically"):
      jacobian(cases.inputs((3,)))

  @parameterized.parameters(*cases.MODES)
  def test_dynamic_batch_size_is_fine(self, mode):
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float64)])
    def jacobian(x):
      return derivatives.jacobian(self.fn, x, mode)

    x = cases.inputs((3,))
    self.assertAllClose(
      jacobian(x), derivatives.jacobian(self.fn, x), atol=cases.ROUND_OFF
    )


if __name__ == "__main__":
  tf.test.main()
