"""Tests for sobolev_tf.finite_differences."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from sobolev_tf import derivatives
from sobolev_tf import finite_differences
from sobolev_tf import projections

# Inputs are drawn in [-1, 1], so the default steps are eps^(1/3) ~ 6.1e-6
# (first order) and eps^(1/4) ~ 1.2e-4 (second order), and the test functions'
# values and derivatives up to order four are at most ~10 in size.
#
# First order: truncation step^2 / 6 * |f'''| ~ 6e-11, round-off
# eps * |f| / step ~ 4e-10. Measured: ~2e-10.
JACOBIAN_TOLERANCE = 1e-8
# Second order: truncation ~ step^2 / 6 * |f''''| ~ 3e-8, round-off
# eps * |f| / step^2 ~ 1.5e-7. Measured: ~6e-8.
HESSIAN_TOLERANCE = 3e-6

SHAPE_CASES = (
  # (name, input event shape, indices of `_analytic`'s outputs, output shape)
  ("vector_to_vector", (3,), (0, 3), (2,)),
  ("vector_to_scalar", (4,), (3,), ()),
  ("matrix_to_matrix", (2, 2), (0, 1, 2, 3), (2, 2)),
)


def _weights(n):
  """Three fixed weight vectors of size `n` for the ridge functions."""
  i = np.arange(n, dtype=np.float64)
  return 0.8 * np.cos(i + 0.5), 0.6 * np.sin(i + 1.0), 0.5 + 0.1 * i


def _analytic(x):
  """Four functions of `x` `[B, n]` (n >= 2) and their derivatives.

  f0 = sin(<a, x>), f1 = exp(<b, x>), f2 = <c, x>^3 and f3 = x_0^2 x_{n-1}.

  Args:
    x: float64 array `[B, n]`.

  Returns:
    `(value [B, 4], jacobian [B, 4, n], hessian [B, 4, n, n])`.
  """
  n = x.shape[1]
  a, b, c = _weights(n)
  ax, bx, cx = x @ a, x @ b, x @ c
  x0, xl = x[:, 0], x[:, -1]
  value = np.stack([np.sin(ax), np.exp(bx), cx**3, x0**2 * xl], -1)

  j3 = np.zeros_like(x)
  j3[:, 0] = 2 * x0 * xl
  j3[:, -1] += x0**2
  jacobian = np.stack(
    [
      np.cos(ax)[:, None] * a,
      np.exp(bx)[:, None] * b,
      3 * cx[:, None] ** 2 * c,
      j3,
    ],
    1,
  )

  h3 = np.zeros(x.shape + (n,))
  h3[:, 0, 0] = 2 * xl
  h3[:, 0, -1] += 2 * x0
  h3[:, -1, 0] += 2 * x0
  hessian = np.stack(
    [
      -np.sin(ax)[:, None, None] * np.outer(a, a),
      np.exp(bx)[:, None, None] * np.outer(b, b),
      6 * cx[:, None, None] * np.outer(c, c),
      h3,
    ],
    1,
  )
  return value, jacobian, hessian


def _case(in_shape, outputs, out_shape):
  """A NumPy function `[B, in...] -> [B, out...]` and its exact derivatives."""
  in_size = int(np.prod(in_shape))
  outputs = list(outputs)

  def fn(x):
    batch = x.shape[0]
    value, _, _ = _analytic(x.reshape(batch, in_size))
    return value[:, outputs].reshape((batch, *out_shape))

  def reference(x):
    batch = x.shape[0]
    value, jac, hess = _analytic(np.asarray(x, np.float64).reshape(batch, -1))
    return (
      value[:, outputs].reshape((batch, *out_shape)),
      jac[:, outputs].reshape((batch, *out_shape, *in_shape)),
      hess[:, outputs].reshape((batch, *out_shape, *in_shape, *in_shape)),
    )

  return fn, reference


def _inputs(in_shape, batch=3, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (batch, *in_shape))


def _directions(shape, seed=1):
  v = np.random.default_rng(seed).normal(size=shape)
  return v / np.sqrt(np.sum(v**2, axis=tuple(range(1, v.ndim)), keepdims=True))


def _project_jacobian(jac, v1):
  batch = jac.shape[0]
  flat = jac.reshape(batch, v1[0].size, -1)
  return np.einsum("bo,boi->bi", v1.reshape(batch, -1), flat)


def _project_hessian(hess, v1, v2):
  batch, in_size = v2.shape[0], v2[0].size
  flat = hess.reshape(batch, -1, in_size, in_size)
  return np.einsum(
    "bo,boij,bi->bj", v1.reshape(batch, -1), flat, v2.reshape(batch, -1)
  )


def _ridge(x):
  """sin and exp ridge functions, `[B, 3] -> [B, 2]`, for the step tests."""
  a, b, _ = _weights(3)
  return np.stack([np.sin(x @ a), np.exp(x @ b)], -1)


def _ridge_derivatives(x):
  value, jac, hess = _analytic(x)
  return value[:, :2], jac[:, :2], hess[:, :2]


class FiniteDifferencesTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(*SHAPE_CASES)
  def test_jacobian(self, in_shape, outputs, out_shape):
    fn, reference = _case(in_shape, outputs, out_shape)
    x = _inputs(in_shape)

    jacobian = finite_differences.jacobian(fn, x)

    self.assertEqual(jacobian.dtype, np.float64)
    self.assertEqual(jacobian.shape, (3, *out_shape, *in_shape))
    self.assertAllClose(
      jacobian, reference(x)[1], atol=JACOBIAN_TOLERANCE, rtol=0
    )

  @parameterized.named_parameters(*SHAPE_CASES)
  def test_hessian(self, in_shape, outputs, out_shape):
    fn, reference = _case(in_shape, outputs, out_shape)
    x = _inputs(in_shape)

    hessian = finite_differences.hessian(fn, x)

    self.assertEqual(hessian.dtype, np.float64)
    self.assertEqual(hessian.shape, (3, *out_shape, *in_shape, *in_shape))
    self.assertAllClose(
      hessian, reference(x)[2], atol=HESSIAN_TOLERANCE, rtol=0
    )
    # Symmetrised: the two input-axis groups can be swapped exactly.
    in_axes = tuple(range(1 + len(out_shape), hessian.ndim))
    half = len(in_axes) // 2
    swapped = np.transpose(
      hessian,
      tuple(range(1 + len(out_shape))) + in_axes[half:] + in_axes[:half],
    )
    self.assertAllEqual(hessian, swapped)

  @parameterized.named_parameters(*SHAPE_CASES)
  def test_vector_jacobian_product(self, in_shape, outputs, out_shape):
    fn, reference = _case(in_shape, outputs, out_shape)
    x = _inputs(in_shape)
    v1 = _directions((3, *out_shape)) if out_shape else np.ones(3) * 0.7

    product = finite_differences.vector_jacobian_product(fn, x, v1)

    self.assertEqual(product.dtype, np.float64)
    self.assertEqual(product.shape, x.shape)
    expected = _project_jacobian(reference(x)[1], v1).reshape(x.shape)
    self.assertAllClose(product, expected, atol=JACOBIAN_TOLERANCE, rtol=0)

  @parameterized.named_parameters(*SHAPE_CASES)
  def test_projected_hessian(self, in_shape, outputs, out_shape):
    fn, reference = _case(in_shape, outputs, out_shape)
    x = _inputs(in_shape)
    v1 = _directions((3, *out_shape)) if out_shape else np.ones(3) * 0.7
    v2 = _directions((3, *in_shape), seed=2)

    product = finite_differences.projected_hessian(fn, x, v1, v2)

    self.assertEqual(product.dtype, np.float64)
    self.assertEqual(product.shape, x.shape)
    expected = _project_hessian(reference(x)[2], v1, v2).reshape(x.shape)
    self.assertAllClose(product, expected, atol=HESSIAN_TOLERANCE, rtol=0)

  def test_float32_input_is_evaluated_in_float64(self):
    seen = []

    def fn(x):
      seen.append(x.dtype)
      return _ridge(x).astype(np.float32)

    x = _inputs((3,)).astype(np.float32)
    self.assertEqual(finite_differences.jacobian(fn, x).dtype, np.float64)
    self.assertEqual(finite_differences.hessian(fn, x).dtype, np.float64)
    self.assertEqual(set(seen), {np.dtype(np.float64)})


class StepTest(tf.test.TestCase, parameterized.TestCase):
  """The central differences' O(step^2) error."""

  def _errors(self, estimate, exact, steps):
    x = _inputs((3,))
    return [
      np.max(np.abs(estimate(_ridge, x, step) - exact(x))) for step in steps
    ]

  @parameterized.named_parameters(
    (
      "jacobian",
      finite_differences.jacobian,
      lambda x: _ridge_derivatives(x)[1],
    ),
    (
      "hessian",
      finite_differences.hessian,
      lambda x: _ridge_derivatives(x)[2],
    ),
    (
      "vector_jacobian_product",
      lambda fn, x, step: finite_differences.vector_jacobian_product(
        fn, x, _directions((3, 2)), step
      ),
      lambda x: _project_jacobian(
        _ridge_derivatives(x)[1], _directions((3, 2))
      ),
    ),
    (
      "projected_hessian",
      lambda fn, x, step: finite_differences.projected_hessian(
        fn, x, _directions((3, 2)), _directions((3, 3), seed=2), step
      ),
      lambda x: _project_hessian(
        _ridge_derivatives(x)[2],
        _directions((3, 2)),
        _directions((3, 3), seed=2),
      ),
    ),
  )
  def test_error_is_quadratic_in_the_step(self, estimate, exact):
    default, large, half = self._errors(estimate, exact, (None, 0.1, 0.05))
    # A step of 0.1 is far from optimal: its O(step^2) error, ~1e-3 here, is
    # orders of magnitude above the default step's ~1e-8 or less.
    self.assertGreater(large, 1000 * default)
    # Halving the step quarters the leading error term; the step^4 terms
    # shift the ratio by well under 1% at these steps (measured 3.998 to
    # 3.9993), so [3.5, 4.5] is loose.
    self.assertBetween(large / half, 3.5, 4.5)

  def test_explicit_step_is_used(self):
    x = _inputs((3,))
    exact = _ridge_derivatives(x)[1]
    step = 1e-3
    jacobian = finite_differences.jacobian(_ridge, x, step=step)
    # Truncation step^2 / 6 * |f'''| <= 1e-6 / 6 * ~3; round-off ~1e-13.
    self.assertAllClose(jacobian, exact, atol=1e-6, rtol=0)
    # ... and visibly not the default step's result, which is ~1e-10 exact.
    self.assertGreater(np.max(np.abs(jacobian - exact)), 1e-9)


class AgreesWithAutodiffTest(tf.test.TestCase, parameterized.TestCase):
  """Finite differences of a TF function against `sobolev_tf.derivatives`.

  Autodiff is exact to float64 round-off here, so the error budget is the
  finite differences' alone, as against analytic derivatives.
  """

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(3)
    kernel = tf.constant(rng.normal(size=(4, 5)) * 0.5)
    output_kernel = tf.constant(rng.normal(size=(5, 3)) * 0.5)

    def tf_fn(x):
      # [B, 2, 2] -> [B, 3].
      hidden = tf.tanh(tf.reshape(x, [-1, 4]) @ kernel)
      return tf.math.softplus(hidden @ output_kernel) + tf.sin(x[:, :1, 0])

    self.tf_fn = tf_fn
    self.x = _inputs((2, 2))
    self.v1 = _directions((3, 3))
    self.v2 = _directions((3, 2, 2), seed=2)

  def numpy_fn(self, x):
    return self.tf_fn(tf.constant(x)).numpy()

  def test_jacobian(self):
    self.assertAllClose(
      finite_differences.jacobian(self.numpy_fn, self.x),
      derivatives.jacobian(self.tf_fn, tf.constant(self.x)),
      atol=JACOBIAN_TOLERANCE,
      rtol=0,
    )

  def test_hessian(self):
    self.assertAllClose(
      finite_differences.hessian(self.numpy_fn, self.x),
      derivatives.hessian(self.tf_fn, tf.constant(self.x)),
      atol=HESSIAN_TOLERANCE,
      rtol=0,
    )

  def test_vector_jacobian_product(self):
    self.assertAllClose(
      finite_differences.vector_jacobian_product(
        self.numpy_fn, self.x, self.v1
      ),
      projections.vector_jacobian_product(
        self.tf_fn, tf.constant(self.x), tf.constant(self.v1)
      ),
      atol=JACOBIAN_TOLERANCE,
      rtol=0,
    )

  def test_projected_hessian(self):
    self.assertAllClose(
      finite_differences.projected_hessian(
        self.numpy_fn, self.x, self.v1, self.v2
      ),
      projections.projected_hessian(
        self.tf_fn,
        tf.constant(self.x),
        tf.constant(self.v1),
        tf.constant(self.v2),
      ),
      atol=HESSIAN_TOLERANCE,
      rtol=0,
    )


def _call(name, x, step=None, v1=None, v2=None):
  """Calls `finite_differences.<name>` on `_ridge` with default directions."""
  batch = np.shape(x)[0]
  v1 = np.ones((batch, 2)) if v1 is None else v1
  v2 = np.ones(np.shape(x)) if v2 is None else v2
  if name == "jacobian":
    return finite_differences.jacobian(_ridge, x, step)
  if name == "hessian":
    return finite_differences.hessian(_ridge, x, step)
  if name == "vector_jacobian_product":
    return finite_differences.vector_jacobian_product(_ridge, x, v1, step)
  return finite_differences.projected_hessian(_ridge, x, v1, v2, step)


FUNCTION_NAMES = (
  "jacobian",
  "hessian",
  "vector_jacobian_product",
  "projected_hessian",
)


class ErrorTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.parameters(*FUNCTION_NAMES)
  def test_unbatched_input(self, name):
    with self.assertRaisesRegex(ValueError, r"rank >= 2.*shape=\(3,\)"):
      _call(name, np.ones(3), v1=np.ones((3, 2)), v2=np.ones(3))

  @parameterized.product(name=FUNCTION_NAMES, step=[0.0, -1e-3, np.nan])
  def test_non_positive_step(self, name, step):
    with self.assertRaisesRegex(ValueError, f"positive number.*step={step}"):
      _call(name, _inputs((3,)), step=step)

  @parameterized.parameters("vector_jacobian_product", "projected_hessian")
  def test_output_direction_of_wrong_batch_size(self, name):
    with self.assertRaisesRegex(
      ValueError, r"one output direction per example.*shape=\(2, 2\)"
    ):
      _call(name, _inputs((3,)), v1=np.ones((2, 2)))

  @parameterized.parameters(
    ("vector_jacobian_product", (3, 3)),
    ("projected_hessian", (3, 3)),
  )
  def test_output_direction_of_wrong_event_shape(self, name, shape):
    with self.assertRaises(ValueError):
      _call(name, _inputs((3,)), v1=np.ones(shape))

  def test_output_direction_that_broadcasts(self):
    # A [B, 1] direction for a [B, 2] output must not broadcast silently.
    with self.assertRaisesRegex(ValueError, "shape of fn"):
      _call("projected_hessian", _inputs((3,)), v1=np.ones((3, 1)))

  @parameterized.parameters((3, 2), (2, 3), (3, 3, 1))
  def test_input_direction_of_wrong_shape(self, *shape):
    with self.assertRaisesRegex(
      ValueError, "`input_direction` of the same shape as `x`"
    ):
      _call("projected_hessian", _inputs((3,)), v2=np.ones(shape))


if __name__ == "__main__":
  tf.test.main()
