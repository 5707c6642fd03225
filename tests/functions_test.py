import dataclasses
import math

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from sobolev_tf.tasks import functions

# Every 2-D function, plus the scalable ones in higher dimensions.
ALL_CASES = [(name, 2) for name in functions.PAPER_FUNCTIONS] + [
  (name, dim)
  for name in ("ackley", "rosenbrock", "styblinski_tang")
  for dim in (10, 100)
]
SMOOTH_CASES = [
  case for case in ALL_CASES if case[0] not in ("ackley", "bukin_n6")
]
NON_SMOOTH_CASES = [("ackley", 2), ("ackley", 10), ("bukin_n6", 2)]


def _named(cases):
  return [
    dict(testcase_name=f"{name}_{dim}d", name=name, dim=dim)
    for name, dim in cases
  ]


# Independent NumPy transcriptions of the textbook formulas; x is [B, d].
def _np_ackley(x):
  radius = np.sqrt(np.mean(x**2, axis=1))
  mean_cos = np.mean(np.cos(2 * np.pi * x), axis=1)
  return -20 * np.exp(-0.2 * radius) - np.exp(mean_cos) + 20 + np.e


def _np_beale(x):
  a, b = x[:, 0], x[:, 1]
  return (
    (1.5 - a + a * b) ** 2
    + (2.25 - a + a * b**2) ** 2
    + (2.625 - a + a * b**3) ** 2
  )


def _np_booth(x):
  a, b = x[:, 0], x[:, 1]
  return (a + 2 * b - 7) ** 2 + (2 * a + b - 5) ** 2


def _np_bukin_n6(x):
  a, b = x[:, 0], x[:, 1]
  return 100 * np.sqrt(np.abs(b - 0.01 * a**2)) + 0.01 * np.abs(a + 10)


def _np_mccormick(x):
  a, b = x[:, 0], x[:, 1]
  return np.sin(a + b) + (a - b) ** 2 - 1.5 * a + 2.5 * b + 1


def _np_rosenbrock(x):
  return np.sum(
    100 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (x[:, :-1] - 1) ** 2, axis=1
  )


def _np_styblinski_tang(x):
  return 0.5 * np.sum(x**4 - 16 * x**2 + 5 * x, axis=1)


NUMPY_REFERENCE = {
  "ackley": _np_ackley,
  "beale": _np_beale,
  "booth": _np_booth,
  "bukin_n6": _np_bukin_n6,
  "mccormick": _np_mccormick,
  "rosenbrock": _np_rosenbrock,
  "styblinski_tang": _np_styblinski_tang,
}


def _points(fn, num_points=32, seed=0):
  return tf.constant(fn.sample(num_points, seed=seed), dtype=tf.float64)


def _autodiff_gradient(fn, x):
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = fn.value(x)
  return tape.gradient(y, x)


def _close_tolerance(reference, rtol):
  """An atol that scales with the largest entry, as cancellation can make
  individual entries tiny compared with the rounding error of their terms."""
  return dict(rtol=rtol, atol=rtol * max(1.0, float(np.max(np.abs(reference)))))


class RegistryTest(tf.test.TestCase):
  def test_paper_functions_match_registry(self):
    self.assertEqual(
      functions.PAPER_FUNCTIONS,
      (
        "ackley",
        "beale",
        "booth",
        "bukin_n6",
        "mccormick",
        "rosenbrock",
        "styblinski_tang",
      ),
    )
    self.assertEqual(tuple(functions.FUNCTIONS), functions.PAPER_FUNCTIONS)
    for name in functions.PAPER_FUNCTIONS:
      fn = functions.get_function(name)
      self.assertEqual(fn.name, name)
      self.assertEqual(fn.dim, 2)

  def test_smooth_flags(self):
    smooth = {
      name: functions.get_function(name).smooth
      for name in functions.PAPER_FUNCTIONS
    }
    self.assertEqual(
      smooth,
      {
        "ackley": False,
        "beale": True,
        "booth": True,
        "bukin_n6": False,
        "mccormick": True,
        "rosenbrock": True,
        "styblinski_tang": True,
      },
    )

  def test_scalable_2d_case_matches_default(self):
    for name in ("ackley", "rosenbrock", "styblinski_tang"):
      fn = functions.get_function(name, dim=7)
      self.assertEqual(fn.dim, 7)
      self.assertEqual(fn.lower.shape, (7,))
      self.assertEqual(fn.minimizer.shape, (7,))
      self.assertEqual(
        functions.get_function(name, 2).minimum,
        functions.FUNCTIONS[name]().minimum,
      )

  def test_unknown_name(self):
    with self.assertRaisesRegex(
      ValueError,
      r"Received an invalid value for `name`, expected one of \['ackley', "
      r"'beale', .*'styblinski_tang'\]\. Received: name='sphere'",
    ):
      functions.get_function("sphere")

  def test_two_dimensional_only_functions_reject_other_dims(self):
    for name in ("beale", "booth", "bukin_n6", "mccormick"):
      with self.assertRaisesRegex(
        ValueError,
        rf"{name} is defined only in 2 dimensions\. Received: dim=3\.",
      ):
        functions.get_function(name, dim=3)

  def test_scalable_functions_reject_too_small_dims(self):
    for name, minimum in (
      ("ackley", 1),
      ("rosenbrock", 2),
      ("styblinski_tang", 1),
    ):
      with self.assertRaisesRegex(
        ValueError,
        rf"{name} needs dim >= {minimum}\. Received: dim={minimum - 1}\.",
      ):
        functions.get_function(name, dim=minimum - 1)
    self.assertEqual(functions.get_function("ackley", dim=1).dim, 1)

  def test_non_integer_dim(self):
    with self.assertRaises(TypeError):
      functions.get_function("ackley", dim=2.0)


class BenchmarkFunctionTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(_named(ALL_CASES))
  def test_value_matches_numpy_reference(self, name, dim):
    fn = functions.get_function(name, dim)
    x = _points(fn)
    self.assertAllClose(
      fn.value(x)[:, 0],
      NUMPY_REFERENCE[name](x.numpy()),
      rtol=1e-12,
      atol=1e-12,
    )

  @parameterized.named_parameters(_named(ALL_CASES))
  def test_minimum(self, name, dim):
    fn = functions.get_function(name, dim)
    self.assertAllInRange(fn.minimizer, fn.lower, fn.upper)
    # Exact up to float64 rounding of the sums, hence relative 1e-12.
    value = fn.value(fn.minimizer[None, :])
    self.assertAllClose(value, [[fn.minimum]], rtol=1e-12, atol=1e-12)
    values = fn.value(_points(fn, num_points=4096, seed=1))
    self.assertGreaterEqual(float(tf.reduce_min(values)), fn.minimum)

  @parameterized.named_parameters(_named(ALL_CASES))
  def test_gradient_matches_autodiff(self, name, dim):
    fn = functions.get_function(name, dim)
    x = _points(fn)
    expected = _autodiff_gradient(fn, x)
    self.assertAllClose(
      fn.gradient(x), expected, **_close_tolerance(expected, 1e-10)
    )

  @parameterized.named_parameters(_named(ALL_CASES))
  def test_gradient_matches_central_differences(self, name, dim):
    fn = functions.get_function(name, dim)
    x = _points(fn, num_points=8).numpy()
    step = 1e-6
    # Perturb every coordinate of every point in one batch: [B, dim, dim].
    shifts = step * np.eye(dim)
    plus = (x[:, None, :] + shifts).reshape(-1, dim)
    minus = (x[:, None, :] - shifts).reshape(-1, dim)
    differences = (fn.value(plus) - fn.value(minus)).numpy().reshape(
      -1, dim
    ) / (2 * step)
    analytic = fn.gradient(x).numpy()
    # Truncation (step^2) and cancellation (eps / step) errors stay far below
    # 1e-6 relative to the largest gradient entry.
    self.assertAllClose(
      analytic, differences, **_close_tolerance(analytic, 1e-6)
    )

  @parameterized.named_parameters(_named(ALL_CASES))
  def test_gradient_at_minimizer_is_zero(self, name, dim):
    # For Ackley and Bukin N.6 the minimiser is a kink; 0 is then the
    # documented convention, shared by autodiff through `value`.
    fn = functions.get_function(name, dim)
    x = tf.constant(fn.minimizer[None, :])
    self.assertAllClose(fn.gradient(x), np.zeros([1, dim]), atol=1e-12)
    self.assertAllClose(
      _autodiff_gradient(fn, x), np.zeros([1, dim]), atol=1e-12
    )

  @parameterized.named_parameters(_named(SMOOTH_CASES))
  def test_hessian_matches_autodiff(self, name, dim):
    fn = functions.get_function(name, dim)
    x = _points(fn, num_points=8)
    with tf.GradientTape() as outer:
      outer.watch(x)
      gradient = _autodiff_gradient(fn, x)
    expected = outer.batch_jacobian(gradient, x)
    self.assertAllClose(
      fn.hessian(x), expected, **_close_tolerance(expected, 1e-10)
    )

  @parameterized.named_parameters(_named(SMOOTH_CASES))
  def test_hessian_at_minimizer_is_positive_semidefinite(self, name, dim):
    fn = functions.get_function(name, dim)
    hessian = fn.hessian(fn.minimizer[None, :])
    self.assertAllClose(hessian, tf.linalg.matrix_transpose(hessian))
    self.assertGreater(float(tf.reduce_min(tf.linalg.eigvalsh(hessian))), 0.0)

  @parameterized.named_parameters(_named(NON_SMOOTH_CASES))
  def test_hessian_raises_for_non_smooth(self, name, dim):
    fn = functions.get_function(name, dim)
    self.assertFalse(fn.smooth)
    with self.assertRaisesRegex(
      ValueError,
      rf"`hessian` is not defined for {name}: it is not twice differentiable",
    ):
      fn.hessian(fn.minimizer[None, :])

  @parameterized.named_parameters(_named(ALL_CASES))
  def test_numpy_input_keeps_dtype_and_shapes(self, name, dim):
    fn = functions.get_function(name, dim)
    x = fn.sample(5, seed=2)
    outputs = [(fn.value(x), [5, 1]), (fn.gradient(x), [5, dim])]
    if fn.smooth:
      outputs.append((fn.hessian(x), [5, dim, dim]))
    for output, shape in outputs:
      self.assertIsInstance(output, tf.Tensor)
      self.assertEqual(output.dtype, tf.float32)
      self.assertEqual(output.shape.as_list(), shape)
    self.assertAllClose(
      fn.value(x), fn.value(x.astype(np.float64)), rtol=1e-5, atol=1e-4
    )

  @parameterized.named_parameters(_named(ALL_CASES))
  def test_sample(self, name, dim):
    fn = functions.get_function(name, dim)
    points = fn.sample(1000, seed=3)
    self.assertEqual(points.shape, (1000, dim))
    self.assertEqual(points.dtype, np.float32)
    self.assertTrue(np.all(points.astype(np.float64) >= fn.lower))
    self.assertTrue(np.all(points.astype(np.float64) <= fn.upper))
    self.assertAllEqual(points, fn.sample(1000, seed=3))
    self.assertNotAllClose(points, fn.sample(1000, seed=4))


class BenchmarkFunctionEdgeCasesTest(tf.test.TestCase):
  def test_sample_stays_inside_bounds_not_representable_in_float32(self):
    # float32(32.768) > 32.768, so without clipping many of these points,
    # drawn from a box a few float32 spacings wide, would round out of it.
    lower, upper = 32.768 - 1e-5, 32.768
    fn = dataclasses.replace(functions.ackley(1), lower=[lower], upper=[upper])
    points = fn.sample(1000, seed=0).astype(np.float64)
    self.assertTrue(np.all(points <= upper))
    self.assertTrue(np.all(points >= lower))
    # The points that rounded up to float32(upper) were clipped one step down.
    self.assertEqual(
      np.max(points), np.nextafter(np.float32(upper), np.float32(-np.inf))
    )

  def test_replace_with_smaller_box(self):
    fn = dataclasses.replace(
      functions.ackley(2), lower=[-5.0, -5.0], upper=[5.0, 5.0]
    )
    self.assertAllInRange(fn.sample(100, seed=0), -5.0, 5.0)

  def test_frozen_and_read_only(self):
    fn = functions.booth()
    with self.assertRaises(dataclasses.FrozenInstanceError):
      fn.dim = 3
    with self.assertRaisesRegex(ValueError, "read-only"):
      fn.lower[0] = 0.0

  def test_invalid_fields(self):
    fn = functions.booth()
    with self.assertRaisesRegex(
      ValueError,
      r"`upper` of booth must have shape \(2,\)\. "
      r"Received: upper with shape=\(3,\)\.",
    ):
      dataclasses.replace(fn, upper=[1.0, 2.0, 3.0])
    with self.assertRaisesRegex(ValueError, "The domain of booth is empty"):
      dataclasses.replace(fn, lower=[0.0, 0.0], upper=[1.0, -1.0])
    with self.assertRaisesRegex(
      ValueError, "`hessian_fn` must be given exactly when `smooth` is True"
    ):
      dataclasses.replace(fn, smooth=False)
    with self.assertRaisesRegex(
      ValueError, "`hessian_fn` must be given exactly when `smooth` is True"
    ):
      dataclasses.replace(functions.bukin_n6(), smooth=True)

  def test_invalid_inputs(self):
    fn = functions.rosenbrock(3)
    with self.assertRaisesRegex(
      ValueError,
      r"rosenbrock expects inputs of shape \[B, 3\]\. "
      r"Received: x with shape=\(4, 2\)\.",
    ):
      fn.value(np.zeros([4, 2], np.float32))
    with self.assertRaisesRegex(
      ValueError, r"shape \[B, 3\]\. Received: x with shape=\(3,\)\."
    ):
      fn.gradient(np.zeros([3], np.float32))
    with self.assertRaisesRegex(
      ValueError,
      "rosenbrock needs a floating-point input. Received: x with dtype=int32",
    ):
      fn.hessian(np.zeros([4, 3], np.int32))

  def test_ackley_gradient_at_origin_is_finite(self):
    # Near, but not at, the kink the gradient is bounded and autodiff agrees.
    fn = functions.ackley(3)
    x = tf.constant([[0.0, 0.0, 0.0], [1e-12, 0.0, 0.0]], tf.float64)
    gradient = fn.gradient(x)
    self.assertAllClose(gradient, _autodiff_gradient(fn, x), rtol=1e-10)
    self.assertAllClose(
      gradient[1], [20 * 0.2 / math.sqrt(3), 0.0, 0.0], rtol=1e-6
    )

  def test_known_values(self):
    # Values quoted alongside the definitions, as a check on the constants.
    origin = np.zeros([1, 2])
    self.assertAllClose(functions.beale().value(origin), [[14.203125]])
    self.assertAllClose(functions.booth().value(origin), [[74.0]])
    self.assertAllClose(functions.rosenbrock().value(origin), [[1.0]])
    self.assertAllClose(functions.mccormick().minimum, -1.9133, atol=1e-4)
    self.assertAllClose(
      functions.mccormick().minimizer, [-0.54719, -1.54719], atol=1e-5
    )
    self.assertAllClose(
      functions.styblinski_tang(1).minimizer, [-2.903534], atol=1e-6
    )
    self.assertAllClose(
      functions.styblinski_tang(3).minimum, -39.16616 * 3, atol=1e-4
    )


if __name__ == "__main__":
  tf.test.main()
