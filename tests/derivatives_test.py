"""Tests for sobolev_tf.derivatives."""

import itertools
from unittest import mock

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import derivatives
from sobolev_tf import finite_differences
from sobolev_tf import testing

testing.configure_logical_cpus(2)

MODES = ("reverse", "forward", "auto")
DTYPES = (tf.float32, tf.float64)

# Autodiff against hand-written derivatives: both are a few dozen elementwise
# operations on values of size <= ~100, so they agree to a few hundred ulps
# (float64 eps = 2.2e-16, float32 eps = 1.2e-7), relatively.
ANALYTIC_TOLERANCE = {tf.float64: 1e-12, tf.float32: 1e-5}
# Two autodiff computations of the same float64 quantity (modes, projections
# against contractions of full derivatives, eager against graph or XLA, which
# fuses and reorders operations and brings its own tanh, exp and log1p
# kernels) differ only by round-off accumulated over a few reductions.
ROUND_OFF = 1e-10
# Central differences on the float64 MLP (see finite_differences): the default
# steps, eps^(1/3) ~ 6e-6 and eps^(1/4) ~ 1.2e-4, leave truncation and
# round-off errors of about 1e-10 for the Jacobian and 1e-8 for the Hessian of
# a function whose derivatives are O(1); the tolerances keep a 100x margin.
FD_JACOBIAN_TOLERANCE = 1e-8
FD_HESSIAN_TOLERANCE = 1e-6

# (name, input event shape, output event shape). The output has at most four
# coordinates, those of `_analytic_np`.
SHAPE_CASES = (
  ("vector_to_vector", (3,), (2,)),
  ("vector_to_scalar", (4,), ()),
  ("vector_to_matrix", (2,), (2, 2)),
  ("matrix_to_vector", (2, 3), (3,)),
  ("matrix_to_matrix", (2, 2), (2, 2)),
)
# Fewer shapes for Hessians: eager nested forward accumulators trace for ~2.5 s
# on every new shape. These still cover rank-2 inputs and outputs.
HESSIAN_SHAPE_CASES = (SHAPE_CASES[0], SHAPE_CASES[1], SHAPE_CASES[4])


def _size(shape):
  return int(np.prod(shape, dtype=np.int64))


def _cubic_weights(n):
  return np.arange(1, n + 1, dtype=np.float64) / n


def _exp_weights(n):
  return 0.5 * np.cos(np.arange(n, dtype=np.float64))


def _analytic_np(x):
  """Four functions of `x` `[B, n]` with their Jacobians and Hessians.

  f0 = sum_ij sin(x_i) x_j^2, f1 = prod_i tanh(x_i), f2 = exp(<a, x>) and
  f3 = sum_i w_i x_i^3.

  Args:
    x: float64 array `[B, n]`.

  Returns:
    `(value [B, 4], jacobian [B, 4, n], hessian [B, 4, n, n])`.
  """
  n = x.shape[1]
  eye = np.eye(n)
  sin, cos = np.sin(x), np.cos(x)
  sum_sin = sin.sum(-1)[:, None]
  sum_squares = (x**2).sum(-1)[:, None]
  f0 = sum_sin * sum_squares
  j0 = cos * sum_squares + 2 * sum_sin * x
  h0 = (
    (-sin * sum_squares + 2 * sum_sin)[:, :, None] * eye
    + 2 * cos[:, :, None] * x[:, None, :]
    + 2 * x[:, :, None] * cos[:, None, :]
  )

  t = np.tanh(x)
  dt = 1 - t**2
  ddt = -2 * t * dt

  def prod_except(*skipped):
    kept = [i for i in range(n) if i not in skipped]
    return np.prod(t[:, kept], axis=-1)

  f1 = prod_except()[:, None]
  j1 = np.stack([dt[:, k] * prod_except(k) for k in range(n)], -1)
  h1 = np.zeros(x.shape + (n,))
  for k in range(n):
    for m in range(n):
      if k == m:
        h1[:, k, m] = ddt[:, k] * prod_except(k)
      else:
        h1[:, k, m] = dt[:, k] * dt[:, m] * prod_except(k, m)

  a = _exp_weights(n)
  f2 = np.exp(x @ a)[:, None]
  j2 = f2 * a
  h2 = f2[:, :, None] * np.outer(a, a)

  w = _cubic_weights(n)
  f3 = (w * x**3).sum(-1)[:, None]
  j3 = 3 * w * x**2
  h3 = (6 * w * x)[:, :, None] * eye

  return (
    np.concatenate([f0, f1, f2, f3], -1),
    np.stack([j0, j1, j2, j3], 1),
    np.stack([h0, h1, h2, h3], 1),
  )


def _analytic_tf(x):
  """`_analytic_np`'s values in TensorFlow, `[B, n] -> [B, 4]`."""
  n = x.shape[1]
  a = tf.constant(_exp_weights(n), x.dtype)
  w = tf.constant(_cubic_weights(n), x.dtype)
  sum_squares = tf.reduce_sum(tf.square(x), -1)
  return tf.stack(
    [
      tf.reduce_sum(tf.sin(x), -1) * sum_squares,
      tf.reduce_prod(tf.tanh(x), -1),
      tf.exp(tf.reduce_sum(x * a, -1)),
      tf.reduce_sum(w * x**3, -1),
    ],
    -1,
  )


def _case(in_shape, out_shape):
  """A TF function `[B, in...] -> [B, out...]` and its NumPy derivatives."""
  in_size, out_size = _size(in_shape), _size(out_shape)

  def fn(x):
    y = _analytic_tf(tf.reshape(x, [-1, in_size]))[:, :out_size]
    return tf.reshape(y, [-1, *out_shape])

  def reference(x):
    """`(value, jacobian, hessian)` of `fn` at the float64 array `x`."""
    batch = x.shape[0]
    value, jac, hess = _analytic_np(x.reshape(batch, in_size))
    return (
      value[:, :out_size].reshape((batch, *out_shape)),
      jac[:, :out_size].reshape((batch, *out_shape, *in_shape)),
      hess[:, :out_size].reshape((batch, *out_shape, *in_shape, *in_shape)),
    )

  return fn, reference


def _inputs(in_shape, dtype=tf.float64, batch=3, seed=0):
  x = np.random.default_rng(seed).uniform(-1.5, 1.5, (batch, *in_shape))
  return tf.constant(x, dtype)


def _mlp(in_shape, out_shape, dtype="float64", seed=0):
  """A smooth MLP `[B, in...] -> [B, out...]` (tanh and softplus)."""
  keras.utils.set_random_seed(seed)
  layers = [keras.Input(in_shape, dtype=dtype)]
  if len(in_shape) > 1:
    layers.append(keras.layers.Flatten(dtype=dtype))
  layers += [
    keras.layers.Dense(8, activation="tanh", dtype=dtype),
    keras.layers.Dense(8, activation="softplus", dtype=dtype),
    keras.layers.Dense(_size(out_shape), dtype=dtype),
  ]
  if len(out_shape) != 1:
    layers.append(keras.layers.Reshape(out_shape, dtype=dtype))
  return keras.Sequential(layers)


def _directions(shape, dtype=tf.float64, seed=0):
  v = np.random.default_rng(seed).normal(size=shape)
  return tf.constant(v, dtype)


class FullDerivativesTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.product(case=SHAPE_CASES, mode=MODES, dtype=DTYPES)
  def test_value_and_jacobian_match_analytic(self, case, mode, dtype):
    _, in_shape, out_shape = case
    fn, reference = _case(in_shape, out_shape)
    x = _inputs(in_shape, dtype)
    value, jac, _ = reference(x.numpy().astype(np.float64))
    tolerance = ANALYTIC_TOLERANCE[dtype]

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
      for case in HESSIAN_SHAPE_CASES
      for mode in MODES
    ],
    *[
      dict(case=SHAPE_CASES[0], mode=mode, dtype=tf.float32)
      for mode in ("reverse", "auto")
    ],
  )
  def test_value_and_hessian_match_analytic(self, case, mode, dtype):
    _, in_shape, out_shape = case
    fn, reference = _case(in_shape, out_shape)
    x = _inputs(in_shape, dtype)
    value, jac, hess = reference(x.numpy().astype(np.float64))
    tolerance = ANALYTIC_TOLERANCE[dtype]

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

    x = _inputs((3,))
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
    fn, _ = _case((3,), (2,))
    x = _inputs((3,))
    (value,) = derivatives.value_and_derivatives(fn, x, 0)
    self.assertAllEqual(value, fn(x))
    value, jacobian = derivatives.value_and_derivatives(fn, x, 1)
    self.assertAllEqual(value, fn(x))
    self.assertAllEqual(jacobian, derivatives.jacobian(fn, x))

  def test_forward_derivatives_of_input_independent_outputs_are_zero(self):
    x = _inputs((2,))
    jacobian = derivatives.jacobian(lambda x: tf.ones_like(x), x, "forward")
    hessian = derivatives.hessian(lambda x: 2 * x, x, "forward")
    self.assertAllEqual(jacobian, tf.zeros([3, 2, 2], tf.float64))
    self.assertAllEqual(hessian, tf.zeros([3, 2, 2, 2], tf.float64))

  def test_reverse_derivatives_of_input_independent_outputs_are_zero(self):
    x = _inputs((2,))
    for mode in ("reverse", "auto"):
      jacobian = derivatives.jacobian(lambda x: tf.ones_like(x), x, mode)
      hessian = derivatives.hessian(lambda x: 2 * x, x, mode)
      self.assertAllEqual(jacobian, tf.zeros([3, 2, 2], tf.float64))
      self.assertAllEqual(hessian, tf.zeros([3, 2, 2, 2], tf.float64))

  @parameterized.named_parameters(
    ("vector", (3,), (2,)), ("matrix_to_matrix", (2, 2), (2, 2))
  )
  def test_mlp_matches_finite_differences(self, in_shape, out_shape):
    model = _mlp(in_shape, out_shape)
    x = _inputs(in_shape)

    def numpy_model(inputs):
      return model(tf.constant(inputs)).numpy()

    fd_jacobian = finite_differences.jacobian(numpy_model, x.numpy())
    fd_hessian = finite_differences.hessian(numpy_model, x.numpy())
    for mode in MODES:
      self.assertAllClose(
        derivatives.jacobian(model, x, mode),
        fd_jacobian,
        atol=FD_JACOBIAN_TOLERANCE,
        rtol=0,
      )
      self.assertAllClose(
        derivatives.hessian(model, x, mode),
        fd_hessian,
        atol=FD_HESSIAN_TOLERANCE,
        rtol=0,
      )


class ProjectedDerivativesTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(*SHAPE_CASES)
  def test_vector_jacobian_product_projects_jacobian(self, in_shape, out_shape):
    fn, reference = _case(in_shape, out_shape)
    x = _inputs(in_shape)
    v1 = _directions((3, *out_shape))

    product = derivatives.vector_jacobian_product(fn, x, v1)

    self.assertEqual(product.shape, x.shape)
    expected = derivatives.project_jacobian(
      derivatives.jacobian(fn, x, "reverse"), v1
    )
    self.assertAllClose(product, expected, atol=ROUND_OFF, rtol=ROUND_OFF)
    analytic = np.einsum(
      "bo,boi->bi",
      v1.numpy().reshape(3, -1),
      reference(x.numpy())[1].reshape(3, _size(out_shape), -1),
    )
    self.assertAllClose(
      product, analytic.reshape(x.shape), atol=ROUND_OFF, rtol=ROUND_OFF
    )

  @parameterized.named_parameters(*SHAPE_CASES)
  def test_projected_hessian_projects_hessian(self, in_shape, out_shape):
    fn, reference = _case(in_shape, out_shape)
    x = _inputs(in_shape)
    v1 = _directions((3, *out_shape), seed=1)
    v2 = _directions((3, *in_shape), seed=2)

    product = derivatives.projected_hessian(fn, x, v1, v2)

    self.assertEqual(product.shape, x.shape)
    expected = derivatives.project_hessian(
      derivatives.hessian(fn, x, "reverse"), v1, v2
    )
    self.assertAllClose(product, expected, atol=ROUND_OFF, rtol=ROUND_OFF)
    in_size = _size(in_shape)
    analytic = np.einsum(
      "bo,boij,bi->bj",
      v1.numpy().reshape(3, -1),
      reference(x.numpy())[2].reshape(3, -1, in_size, in_size),
      v2.numpy().reshape(3, -1),
    )
    self.assertAllClose(
      product, analytic.reshape(x.shape), atol=ROUND_OFF, rtol=ROUND_OFF
    )

  @parameterized.product(
    shapes=[((3,), (2,)), ((2, 3), (2, 2))], jit_compile=[False, True]
  )
  def test_projecting_arrays_matches_einsum(self, shapes, jit_compile):
    in_shape, out_shape = shapes
    in_size, out_size, batch = _size(in_shape), _size(out_shape), 4
    rng = np.random.default_rng(0)
    jacobian = rng.normal(size=(batch, *out_shape, *in_shape))
    hessian = rng.normal(size=(batch, *out_shape, *in_shape, *in_shape))
    v1 = rng.normal(size=(batch, *out_shape))
    v2 = rng.normal(size=(batch, *in_shape))

    def project(jacobian, hessian, v1, v2):
      return (
        derivatives.project_jacobian(jacobian, v1),
        derivatives.project_hessian(hessian, v1, v2),
      )

    if jit_compile:
      project = tf.function(project, jit_compile=True)
    first, second = project(jacobian, hessian, v1, v2)

    flat_v1, flat_v2 = v1.reshape(batch, -1), v2.reshape(batch, -1)
    expected_first = np.einsum(
      "bo,boi->bi", flat_v1, jacobian.reshape(batch, out_size, in_size)
    )
    expected_second = np.einsum(
      "bo,boij,bi->bj",
      flat_v1,
      hessian.reshape(batch, out_size, in_size, in_size),
      flat_v2,
    )
    self.assertEqual(first.shape, (batch, *in_shape))
    self.assertEqual(second.shape, (batch, *in_shape))
    self.assertAllClose(first, expected_first.reshape(first.shape))
    self.assertAllClose(second, expected_second.reshape(second.shape))

  @parameterized.parameters(True, False)
  def test_several_directions_equal_single_direction_calls(self, second):
    fn, _ = _case((2, 3), (2, 2))
    x = _inputs((2, 3))
    num_directions = 3
    v1s = [_directions((3, 2, 2), seed=p) for p in range(num_directions)]
    v2s = [_directions((3, 2, 3), seed=10 + p) for p in range(num_directions)]

    y, first, second_order = derivatives.value_and_projected_derivatives(
      fn, x, v1s, v2s if second else None
    )

    self.assertAllClose(y, fn(x), atol=0)
    self.assertLen(first, num_directions)
    self.assertLen(second_order, num_directions if second else 0)
    for p in range(num_directions):
      self.assertAllClose(
        first[p],
        derivatives.vector_jacobian_product(fn, x, v1s[p]),
        atol=ROUND_OFF,
      )
      if second:
        self.assertAllClose(
          second_order[p],
          derivatives.projected_hessian(fn, x, v1s[p], v2s[p]),
          atol=ROUND_OFF,
        )

  def test_sampler_draws_directions_after_the_forward_pass(self):
    fn, _ = _case((3,), (2,))
    x = _inputs((3,))
    seed = tf.constant([5, 6])
    seen = []

    def sample(y):
      seen.append(y)
      v1 = derivatives.sample_directions(2, y, seed)
      v2 = derivatives.sample_directions(2, x, seed)
      return tf.unstack(v1), tf.unstack(v2)

    y, first, second, (v1s, v2s) = (
      derivatives.projected_derivatives_with_sampler(fn, x, sample)
    )

    self.assertLen(seen, 1)
    self.assertAllClose(seen[0], y, atol=0)
    self.assertAllClose(y, fn(x), atol=0)
    self.assertLen(v1s, 2)
    self.assertLen(v2s, 2)
    expected = derivatives.value_and_projected_derivatives(fn, x, v1s, v2s)
    self.assertAllClose(first, expected[1], atol=ROUND_OFF)
    self.assertAllClose(second, expected[2], atol=ROUND_OFF)


class SampleDirectionsTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.product(event_shape=[(3,), (2, 3)], dtype=DTYPES)
  def test_shape_dtype_and_unit_norm(self, event_shape, dtype):
    like = tf.zeros((4, *event_shape), dtype)
    directions = derivatives.sample_directions(5, like, tf.constant([1, 2]))

    self.assertEqual(directions.shape, (5, 4, *event_shape))
    self.assertEqual(directions.dtype, dtype)
    event_axes = list(range(2, 2 + len(event_shape)))
    norms = tf.sqrt(tf.reduce_sum(tf.square(directions), event_axes))
    # Normalising is a handful of roundings of unit-size numbers.
    self.assertAllClose(
      norms,
      tf.ones([5, 4], dtype),
      atol=10 * np.finfo(dtype.as_numpy_dtype).eps,
    )

  def test_same_seed_same_directions_other_seed_other_directions(self):
    like = tf.zeros((4, 3))
    first = derivatives.sample_directions(2, like, tf.constant([1, 2]))
    again = derivatives.sample_directions(2, like, tf.constant([1, 2]))
    other = derivatives.sample_directions(2, like, tf.constant([1, 3]))

    self.assertAllEqual(first, again)
    self.assertNotAllClose(first, other)

  def test_eager_and_tf_function_agree(self):
    like = tf.zeros((4, 2, 3), tf.float64)
    seed = tf.constant([7, 8])
    sample = tf.function(
      lambda seed: derivatives.sample_directions(3, like, seed)
    )
    self.assertAllEqual(
      sample(seed), derivatives.sample_directions(3, like, seed)
    )

  def test_xla_is_deterministic_and_unit_norm(self):
    like = tf.zeros((4, 3), tf.float64)
    sample = tf.function(
      lambda seed: derivatives.sample_directions(3, like, seed),
      jit_compile=True,
    )
    directions = sample(tf.constant([7, 8]))

    self.assertAllEqual(directions, sample(tf.constant([7, 8])))
    self.assertAllClose(
      tf.norm(directions, axis=-1), tf.ones([3, 4], tf.float64), atol=1e-14
    )

  @parameterized.parameters(False, True)
  def test_uniform_on_the_sphere(self, jit_compile):
    num_directions, dimension = 4000, 3
    like = tf.zeros((1, dimension), tf.float64)
    sample = derivatives.sample_directions
    if jit_compile:  # XLA draws with another algorithm (Threefry).
      sample = tf.function(sample, jit_compile=True)
    directions = sample(num_directions, like, tf.constant([3, 4]))[:, 0].numpy()

    # Each coordinate of a uniform unit vector in R^3 has mean 0 and variance
    # 1/3, so the sample mean's standard deviation is sqrt(1 / (3 * 4000)) ~
    # 0.009: 0.05 is more than five of them. The second moment E[u u^T] is
    # I / 3; its entries' estimates have standard deviations below 0.01.
    self.assertAllClose(
      directions.mean(0), np.zeros(dimension), atol=0.05, rtol=0
    )
    self.assertAllClose(
      directions.T @ directions / num_directions,
      np.eye(dimension) / dimension,
      atol=0.05,
      rtol=0,
    )


class CompilationTest(tf.test.TestCase, parameterized.TestCase):
  """Eager, `tf.function` and XLA runs give the same derivatives."""

  def setUp(self):
    super().setUp()
    # out > in, so "auto" takes forward mode inside tf.function.
    self.model = _mlp((2,), (3,))
    self.x = _inputs((2,))
    self.v1 = _directions((3, 3), seed=1)
    self.v2 = _directions((3, 2), seed=2)

  def _check_agreement(self, compute):
    expected = compute()
    for jit_compile in (False, True):
      actual = tf.function(compute, jit_compile=jit_compile)()
      tf.nest.map_structure(
        lambda a, e: self.assertAllClose(a, e, atol=ROUND_OFF, rtol=ROUND_OFF),
        actual,
        expected,
      )

  @parameterized.parameters(*MODES)
  def test_jacobian(self, mode):
    self._check_agreement(
      lambda: derivatives.value_and_jacobian(self.model, self.x, mode)
    )

  @parameterized.parameters(*MODES)
  def test_hessian(self, mode):
    self._check_agreement(lambda: derivatives.hessian(self.model, self.x, mode))

  def test_projected_derivatives(self):
    self._check_agreement(
      lambda: derivatives.value_and_projected_derivatives(
        self.model, self.x, [self.v1, 2 * self.v1], [self.v2, -self.v2]
      )
    )

  def test_vector_jacobian_product_and_projected_hessian(self):
    self._check_agreement(
      lambda: (
        derivatives.vector_jacobian_product(self.model, self.x, self.v1),
        derivatives.projected_hessian(self.model, self.x, self.v1, self.v2),
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
      keras.layers.Dense(_size(out_shape), dtype="float64"),
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
    x = _inputs(in_shape)
    expected = self._jacobian_and_weight_gradients(net, x)  # Eager: unrolled.
    with mock.patch.object(
      derivatives.pfor_ops,
      "_pfor_impl",
      wraps=derivatives.pfor_ops._pfor_impl,
    ) as pfor:
      actual = tf.function(
        self._jacobian_and_weight_gradients, jit_compile=True
      )(net, x)
    pfor.assert_called_once()
    self.assertEqual(actual[0].shape, (x.shape[0],) + out_shape + in_shape)
    tf.nest.map_structure(
      lambda a, e: self.assertAllClose(a, e, atol=ROUND_OFF, rtol=ROUND_OFF),
      actual,
      expected,
    )

  def test_batch_and_weights_stay_arguments_of_the_program(self):
    # Through a function boundary (tf.vectorized_map), XLA would take the
    # batch as a compile-time constant with ReLU and compile every step.
    net = self._net("relu", (3,), (4,))
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(net.trainable_variables)
    x = _inputs((3,), batch=5)

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
    x = _inputs((3,))
    compute = tf.function(self._jacobian_and_weight_gradients, jit_compile=True)
    expected = compute(net, x)

    refuse = mock.Mock(
      side_effect=ValueError("No pfor vectorization defined for SomeOp")
    )
    with mock.patch.object(derivatives.pfor_ops, "_pfor_impl", refuse):
      actual = tf.function(
        self._jacobian_and_weight_gradients, jit_compile=True
      )(net, x)
    refuse.assert_called_once()
    tf.nest.map_structure(
      lambda a, e: self.assertAllClose(a, e, atol=ROUND_OFF, rtol=ROUND_OFF),
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

  def test_xla_context(self):
    self.assertFalse(derivatives.in_xla_context())
    seen = []

    def probe():
      seen.append(derivatives.in_xla_context())
      return tf.constant(0.0)

    tf.function(probe)()
    tf.function(probe, jit_compile=True)()
    self.assertEqual(seen, [False, True])

  def test_forward_mode_under_xla_trains_like_reverse_mode(self):
    # Forward products under XLA are double-backward ones; the Jacobian and
    # the weights' gradients through it equal reverse mode's.
    model = _mlp((2,), (5,))
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
    model = _mlp((2,), (3,))

    def fn(x):
      calls.append(None)
      return model(x)

    x = _inputs((2,))
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
          gradient, reference, atol=ROUND_OFF, rtol=ROUND_OFF, msg=msg
        )

  def _check_modes(self, model, order, modes, jit_compile=False):
    """Compiled weight gradients of sum(D^order ** 2) against eager reverse."""
    x = _inputs(model.input_shape[1:])

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
    self._check_modes(_mlp((2,), (3,)), 1, MODES, jit_compile)

  @parameterized.parameters(False, True)
  def test_hessian_weight_gradients_agree_between_modes(self, jit_compile):
    # out <= in, so "auto" is forward-over-reverse in graphs.
    self._check_modes(_mlp((3,), (2,)), 2, ("reverse", "auto"), jit_compile)

  # TF 2.21 differentiates nested forward accumulators wrongly through an
  # outer tape, even inside tf.function; value_and_derivatives therefore
  # uses forward mode for the highest order only. These guard that.
  def test_hessian_weight_gradients_forward(self):
    self._check_modes(_mlp((2,), (3,)), 2, ("forward",))

  def test_hessian_weight_gradients_auto_with_more_outputs_than_inputs(self):
    # out > in: "auto" would pick forward mode for both orders in graphs.
    self._check_modes(_mlp((2,), (3,)), 2, ("auto",))

  def test_eager_auto_is_safe_to_train_through(self):
    model = _mlp((2,), (3,))
    x = _inputs((2,))

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
    model = _mlp((3,), (2,))
    x = _inputs((3,))
    v1, v2 = _directions((3, 2), seed=1), _directions((3, 3), seed=2)

    with tf.GradientTape(persistent=True) as tape:
      _, first, second = derivatives.value_and_projected_derivatives(
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
          tf.square(derivatives.project_jacobian(jacobian, v1))
        ),
        "projected d2": tf.reduce_sum(
          tf.square(derivatives.project_hessian(hessian, v1, v2))
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
    self.fn, _ = _case((3,), (2,))

  @parameterized.parameters(
    derivatives.jacobian,
    derivatives.hessian,
    lambda fn, x: derivatives.vector_jacobian_product(fn, x, x[:, :2]),
  )
  def test_integer_input(self, compute):
    with self.assertRaisesRegex(ValueError, "floating-point.*dtype=int32"):
      compute(self.fn, tf.constant([[1, 2, 3]]))

  @parameterized.parameters(
    derivatives.jacobian,
    derivatives.hessian,
    lambda fn, x: derivatives.projected_hessian(fn, x, x, x),
  )
  def test_unbatched_input(self, compute):
    with self.assertRaisesRegex(ValueError, r"rank >= 2.*shape=\(3,\)"):
      compute(self.fn, tf.constant([1.0, 2.0, 3.0]))

  @parameterized.parameters(derivatives.jacobian, derivatives.hessian)
  def test_unknown_mode(self, compute):
    with self.assertRaisesRegex(ValueError, "mode='sideways'"):
      compute(self.fn, _inputs((3,)), mode="sideways")

  def test_negative_order(self):
    with self.assertRaisesRegex(ValueError, "non-negative.*order=-1"):
      derivatives.value_and_derivatives(self.fn, _inputs((3,)), -1)

  def test_mismatched_direction_lists(self):
    x = _inputs((3,))
    v1 = _directions((3, 2))
    with self.assertRaisesRegex(ValueError, "2 output and 1 input directions"):
      derivatives.value_and_projected_derivatives(self.fn, x, [v1, v1], [x])

  def test_dynamic_event_shape(self):
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float64)])
    def jacobian(x):
      return derivatives.jacobian(self.fn, x)

    with self.assertRaisesRegex(ValueError, "known statically"):
      jacobian(_inputs((3,)))

  @parameterized.parameters(*MODES)
  def test_dynamic_batch_size_is_fine(self, mode):
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float64)])
    def jacobian(x):
      return derivatives.jacobian(self.fn, x, mode)

    x = _inputs((3,))
    self.assertAllClose(
      jacobian(x), derivatives.jacobian(self.fn, x), atol=ROUND_OFF
    )


if __name__ == "__main__":
  tf.test.main()
