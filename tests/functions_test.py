import dataclasses
import math

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from sobolev_tf.tasks import functions

SCALABLE = ("ackley", "rosenbrock", "styblinski_tang")
NON_SMOOTH = ("ackley", "bukin_n6")
# Every 2-D function, plus the scalable ones in higher dimensions.
ALL_CASES = [(name, 2) for name in functions.PAPER_FUNCTIONS] + [
  (name, dim) for name in SCALABLE for dim in (10, 100)
]
SMOOTH_CASES = [case for case in ALL_CASES if case[0] not in NON_SMOOTH]
NON_SMOOTH_CASES = [("ackley", 2), ("ackley", 10), ("bukin_n6", 2)]

# The paper's supplementary material, pp. 14-15: one interval per coordinate.
PAPER_BOXES = {
  "ackley": [(-5, 5)] * 2,
  "beale": [(-4.5, 4.5)] * 2,
  "booth": [(-10, 10)] * 2,
  "bukin_n6": [(-15, -5), (-3, 3)],
  "mccormick": [(-1.5, 4), (-3, 4)],
  "rosenbrock": [(-2, 2)] * 2,
  "styblinski_tang": [(-5, 5)] * 2,
}
# Surjanovic & Bingham's boxes, as the module used before the paper's.
STANDARD_BOXES = {
  **PAPER_BOXES,
  "ackley": [(-32.768, 32.768)] * 2,
  "rosenbrock": [(-5, 10)] * 2,
}


def _named(cases):
  return [
    dict(testcase_name=f"{name}_{dim}d", name=name, dim=dim)
    for name, dim in cases
  ]


# Independent NumPy transcriptions of the textbook formulas and their
# hand-derived derivatives; x is [B, d], gradients [B, d], Hessians [B, d, d].
def _np_ackley(x):
  radius = np.sqrt(np.mean(x**2, axis=1))
  mean_cos = np.mean(np.cos(2 * np.pi * x), axis=1)
  return -20 * np.exp(-0.2 * radius) - np.exp(mean_cos) + 20 + np.e


def _np_ackley_gradient(x):
  dim = x.shape[1]
  radius = np.sqrt(np.mean(x**2, axis=1, keepdims=True))
  mean_cos = np.mean(np.cos(2 * np.pi * x), axis=1, keepdims=True)
  # d radius / dx = x / (dim * radius), taken as 0 at the origin.
  with np.errstate(invalid="ignore", divide="ignore"):
    d_radius = np.where(radius > 0, x / (dim * radius), 0.0)
  radial = 20 * 0.2 * np.exp(-0.2 * radius) * d_radius
  return radial + (2 * np.pi / dim) * np.sin(2 * np.pi * x) * np.exp(mean_cos)


def _beale_terms(x):
  """Yields (k, t_k, dt_k/dx1, dt_k/dx2) for t_k = c_k - x1 + x1 x2^k."""
  a, b = x[:, 0], x[:, 1]
  for k, c in enumerate((1.5, 2.25, 2.625), start=1):
    yield k, c - a + a * b**k, b**k - 1, k * a * b ** (k - 1)


def _np_beale(x):
  return sum(t**2 for _, t, _, _ in _beale_terms(x))


def _np_beale_gradient(x):
  return sum(
    np.stack([2 * t * dt1, 2 * t * dt2], axis=1)
    for _, t, dt1, dt2 in _beale_terms(x)
  )


def _np_beale_hessian(x):
  # Each term contributes 2 (grad t grad t^T + t Hess t).
  a, b = x[:, 0], x[:, 1]
  h11, h12, h22 = 0, 0, 0
  for k, t, dt1, dt2 in _beale_terms(x):
    h11 = h11 + 2 * dt1**2
    h12 = h12 + 2 * (dt1 * dt2 + t * k * b ** (k - 1))
    h22 = h22 + 2 * dt2**2 + 2 * t * k * (k - 1) * a * b ** max(k - 2, 0)
  return _symmetric_2x2(h11, h12, h22)


def _np_booth(x):
  a, b = x[:, 0], x[:, 1]
  return (a + 2 * b - 7) ** 2 + (2 * a + b - 5) ** 2


def _np_booth_gradient(x):
  u, v = x[:, 0] + 2 * x[:, 1] - 7, 2 * x[:, 0] + x[:, 1] - 5
  return np.stack([2 * u + 4 * v, 4 * u + 2 * v], axis=1)


def _np_booth_hessian(x):
  return np.broadcast_to([[10.0, 8.0], [8.0, 10.0]], (len(x), 2, 2))


def _np_bukin_n6(x):
  a, b = x[:, 0], x[:, 1]
  return 100 * np.sqrt(np.abs(b - 0.01 * a**2)) + 0.01 * np.abs(a + 10)


def _np_bukin_n6_gradient(x):
  a, b = x[:, 0], x[:, 1]
  ridge = b - 0.01 * a**2
  # d/du 100 sqrt(|u|) = 50 sign(u) / sqrt(|u|), taken as 0 on the ridge.
  with np.errstate(invalid="ignore", divide="ignore"):
    d_ridge = np.where(ridge != 0, 50 * np.sign(ridge) / np.sqrt(abs(ridge)), 0)
  d_a = -0.02 * a * d_ridge + 0.01 * np.sign(a + 10)
  return np.stack([d_a, d_ridge], axis=1)


def _np_mccormick(x):
  a, b = x[:, 0], x[:, 1]
  return np.sin(a + b) + (a - b) ** 2 - 1.5 * a + 2.5 * b + 1


def _np_mccormick_gradient(x):
  a, b = x[:, 0], x[:, 1]
  cos_sum, diff = np.cos(a + b), 2 * (a - b)
  return np.stack([cos_sum + diff - 1.5, cos_sum - diff + 2.5], axis=1)


def _np_mccormick_hessian(x):
  sin_sum = np.sin(x[:, 0] + x[:, 1])
  return _symmetric_2x2(2 - sin_sum, -2 - sin_sum, 2 - sin_sum)


def _np_rosenbrock(x):
  return np.sum(
    100 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (x[:, :-1] - 1) ** 2, axis=1
  )


def _np_rosenbrock_gradient(x):
  head, valley = x[:, :-1], x[:, 1:] - x[:, :-1] ** 2
  # Coordinate i appears as x_i in term i and as x_{i+1} in term i - 1.
  as_head = -400 * head * valley + 2 * (head - 1)
  return np.pad(as_head, [(0, 0), (0, 1)]) + np.pad(
    200 * valley, [(0, 0), (1, 0)]
  )


def _np_rosenbrock_hessian(x):
  head, valley = x[:, :-1], x[:, 1:] - x[:, :-1] ** 2
  as_head = -400 * valley + 800 * head**2 + 2
  diagonal = np.pad(as_head, [(0, 0), (0, 1)]) + np.pad(
    np.full_like(valley, 200.0), [(0, 0), (1, 0)]
  )
  hessian = np.stack([np.diag(row) for row in diagonal])
  rows, cols = np.arange(x.shape[1] - 1), np.arange(1, x.shape[1])
  hessian[:, rows, cols] = hessian[:, cols, rows] = -400 * head
  return hessian


def _np_styblinski_tang(x):
  return 0.5 * np.sum(x**4 - 16 * x**2 + 5 * x, axis=1)


def _np_styblinski_tang_gradient(x):
  return 2 * x**3 - 16 * x + 2.5


def _np_styblinski_tang_hessian(x):
  return np.stack([np.diag(row) for row in 6 * x**2 - 16])


def _symmetric_2x2(h11, h12, h22):
  return np.stack([np.stack([h11, h12], -1), np.stack([h12, h22], -1)], -2)


def _styblinski_tang_root():
  """The per-coordinate minimiser: the negative root of 2 t^3 - 16 t + 2.5.

  It gives the minimum -39.1661657 d; the literature's -39.16599 d is off by
  1.7e-4 per dimension.
  """
  return float(np.min(np.roots([2.0, 0.0, -16.0, 2.5]).real))


# (value, gradient, Hessian or None) for each function.
ORACLES = {
  "ackley": (_np_ackley, _np_ackley_gradient, None),
  "beale": (_np_beale, _np_beale_gradient, _np_beale_hessian),
  "booth": (_np_booth, _np_booth_gradient, _np_booth_hessian),
  "bukin_n6": (_np_bukin_n6, _np_bukin_n6_gradient, None),
  "mccormick": (_np_mccormick, _np_mccormick_gradient, _np_mccormick_hessian),
  "rosenbrock": (
    _np_rosenbrock,
    _np_rosenbrock_gradient,
    _np_rosenbrock_hessian,
  ),
  "styblinski_tang": (
    _np_styblinski_tang,
    _np_styblinski_tang_gradient,
    _np_styblinski_tang_hessian,
  ),
}

# A global minimiser of each function in `dim` dimensions. McCormick's comes
# from grad f = 0: x1 - x2 = 1 and cos(x1 + x2) = -1/2; the literature rounds
# it to (-0.54719, -1.54719).
MINIMIZERS = {
  "ackley": np.zeros,
  "beale": lambda dim: np.array([3.0, 0.5]),
  "booth": lambda dim: np.array([1.0, 3.0]),
  "bukin_n6": lambda dim: np.array([-10.0, 1.0]),
  "mccormick": lambda dim: np.array([0.5, -0.5]) - math.pi / 3,
  "rosenbrock": np.ones,
  "styblinski_tang": lambda dim: np.full(dim, _styblinski_tang_root()),
}


def _minimum(name, dim):
  """The global minimum, by the NumPy oracle at the known minimiser."""
  return float(ORACLES[name][0](MINIMIZERS[name](dim)[None, :])[0])


def _points(fn, num_points=32, seed=0):
  return tf.constant(fn.sample(num_points, seed=seed), dtype=tf.float64)


def _central_differences(fn, x, step):
  """Central differences of `fn` ([B, d] -> [B, ...]), as [B, ..., d]."""
  dim = x.shape[1]
  shifts = step * np.eye(dim)
  # Perturb every coordinate of every point in one batch: [B * d, d].
  plus = (x[:, None, :] + shifts).reshape(-1, dim)
  minus = (x[:, None, :] - shifts).reshape(-1, dim)
  difference = (np.asarray(fn(plus)) - np.asarray(fn(minus))) / (2 * step)
  difference = difference.reshape((len(x), dim) + difference.shape[1:])
  return np.moveaxis(difference, 1, -1)


def _close_tolerance(reference, rtol):
  """An atol that scales with the largest entry, as cancellation can make
  individual entries tiny compared with the rounding error of their terms."""
  return dict(rtol=rtol, atol=rtol * max(1.0, float(np.max(np.abs(reference)))))


class GetFunctionTest(tf.test.TestCase, parameterized.TestCase):
  def test_registry_holds_the_papers_functions(self):
    self.assertCountEqual(functions.PAPER_FUNCTIONS, PAPER_BOXES)
    self.assertEqual(tuple(functions.FUNCTIONS), functions.PAPER_FUNCTIONS)
    for name in functions.PAPER_FUNCTIONS:
      fn = functions.get_function(name)
      self.assertEqual((fn.name, fn.dim, fn.domain), (name, 2, "paper"))
      self.assertEqual(fn.smooth, name not in NON_SMOOTH)

  def test_default_domain_is_the_papers(self):
    for name, box in PAPER_BOXES.items():
      fn = functions.get_function(name)
      self.assertAllEqual(np.stack([fn.lower, fn.upper], axis=1), box)

  def test_standard_domain_is_surjanovic_and_bingham(self):
    for name, box in STANDARD_BOXES.items():
      fn = functions.get_function(name, domain="standard")
      self.assertEqual(fn.domain, "standard")
      self.assertAllEqual(np.stack([fn.lower, fn.upper], axis=1), box)

  @parameterized.product(name=SCALABLE, domain=functions.DOMAINS)
  def test_scalable_box_repeats_per_coordinate(self, name, domain):
    fn = functions.get_function(name, dim=7, domain=domain)
    box = functions.get_function(name, domain=domain)
    self.assertAllEqual(fn.lower, np.full(7, box.lower[0]))
    self.assertAllEqual(fn.upper, np.full(7, box.upper[0]))

  def test_unknown_name(self):
    with self.assertRaisesRegex(
      ValueError,
      r"Received an invalid value for `name`, expected one of \['ackley', "
      r"'beale', .*'styblinski_tang'\]\. Received: name='sphere'",
    ):
      functions.get_function("sphere")

  def test_unknown_domain(self):
    with self.assertRaisesRegex(
      ValueError,
      r"Received an invalid value for `domain`, expected one of "
      r"\['paper', 'standard'\]\. Received: domain='wide'",
    ):
      functions.get_function("booth", domain="wide")

  @parameterized.parameters("beale", "booth", "bukin_n6", "mccormick")
  def test_two_dimensional_functions_reject_other_dims(self, name):
    for dim in (1, 3):
      with self.assertRaisesRegex(
        ValueError,
        rf"Received an invalid value for `dim`, expected 2: {name} is "
        rf"defined only in 2 dimensions\. Received: dim={dim}",
      ):
        functions.get_function(name, dim=dim)

  @parameterized.parameters(
    ("ackley", 1), ("rosenbrock", 2), ("styblinski_tang", 1)
  )
  def test_scalable_functions_reject_too_small_dims(self, name, minimum):
    self.assertEqual(functions.get_function(name, dim=minimum).dim, minimum)
    with self.assertRaisesRegex(
      ValueError,
      rf"Received an invalid value for `dim`, expected an integer >= "
      rf"{minimum} for {name}\. Received: dim={minimum - 1}",
    ):
      functions.get_function(name, dim=minimum - 1)

  def test_non_integer_dim(self):
    with self.assertRaises(TypeError):
      functions.get_function("ackley", dim=2.0)


class BenchmarkFunctionTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(_named(ALL_CASES))
  def test_value_matches_numpy_reference(self, name, dim):
    fn = functions.get_function(name, dim)
    x = _points(fn)
    self.assertAllClose(
      fn.value(x)[:, 0], ORACLES[name][0](x.numpy()), rtol=1e-12, atol=1e-12
    )

  @parameterized.named_parameters(_named(ALL_CASES))
  def test_known_minimum_is_the_smallest_value(self, name, dim):
    minimizer, minimum = MINIMIZERS[name](dim), _minimum(name, dim)
    self.assertAllClose(
      functions.get_function(name, dim).value(minimizer[None, :]),
      [[minimum]],
      rtol=1e-12,
      atol=1e-12,
    )
    for domain in functions.DOMAINS:
      fn = functions.get_function(name, dim, domain)
      self.assertAllInRange(minimizer, fn.lower, fn.upper)
      if dim == 2:
        axes = np.linspace(fn.lower, fn.upper, 201)  # [201, 2]
        x = np.stack(np.meshgrid(*axes.T), axis=-1).reshape(-1, 2)
      else:
        x = _points(fn, num_points=4096, seed=1)
      # NumPy and TensorFlow may round the minimum differently.
      self.assertGreaterEqual(
        float(tf.reduce_min(fn.value(x))),
        minimum - 1e-12 * max(1, abs(minimum)),
      )

  @parameterized.named_parameters(_named(ALL_CASES))
  def test_gradient_matches_hand_derived_oracle(self, name, dim):
    fn = functions.get_function(name, dim)
    x = _points(fn)
    expected = ORACLES[name][1](x.numpy())
    self.assertAllClose(
      fn.gradient(x), expected, **_close_tolerance(expected, 1e-10)
    )

  @parameterized.named_parameters(_named(ALL_CASES))
  def test_gradient_matches_central_differences(self, name, dim):
    fn = functions.get_function(name, dim)
    x = _points(fn, num_points=8).numpy()
    differences = _central_differences(fn.value, x, step=1e-6)[:, 0]
    gradient = fn.gradient(x).numpy()
    # Truncation (step^2) and cancellation (eps / step) errors stay far below
    # 1e-6 relative to the largest gradient entry.
    self.assertAllClose(
      gradient, differences, **_close_tolerance(gradient, 1e-6)
    )

  @parameterized.named_parameters(_named(SMOOTH_CASES))
  def test_hessian_matches_oracle_and_central_differences(self, name, dim):
    fn = functions.get_function(name, dim)
    x = _points(fn, num_points=8).numpy()
    hessian = fn.hessian(x).numpy()
    expected = ORACLES[name][2](x)
    self.assertAllClose(hessian, expected, **_close_tolerance(expected, 1e-10))
    # Symmetric up to rounding: the two mixed partials take different paths.
    self.assertAllClose(
      hessian, np.swapaxes(hessian, 1, 2), **_close_tolerance(hessian, 1e-14)
    )
    differences = _central_differences(fn.gradient, x, step=1e-6)
    self.assertAllClose(hessian, differences, **_close_tolerance(hessian, 1e-6))

  @parameterized.named_parameters(_named(SMOOTH_CASES))
  def test_known_minimizer_is_a_strict_local_minimum(self, name, dim):
    fn = functions.get_function(name, dim)
    minimizer = MINIMIZERS[name](dim)[None, :]
    self.assertAllClose(fn.gradient(minimizer), np.zeros([1, dim]), atol=1e-9)
    eigenvalues = tf.linalg.eigvalsh(fn.hessian(minimizer))
    self.assertGreater(float(tf.reduce_min(eigenvalues)), 0.0)

  @parameterized.named_parameters(_named(NON_SMOOTH_CASES))
  def test_non_smooth_minimizer_is_a_kink(self, name, dim):
    fn = functions.get_function(name, dim)
    self.assertFalse(fn.smooth)
    # One-sided slopes along the first axis differ: no derivative there.
    minimizer = MINIMIZERS[name](dim)[None, :]
    step = 1e-7 * np.eye(dim)[:1]
    value = fn.value(minimizer)
    right = (fn.value(minimizer + step) - value) / step[0, 0]
    left = (value - fn.value(minimizer - step)) / step[0, 0]
    self.assertGreater(float(right[0, 0] - left[0, 0]), 1e-3)
    # The autodiff gradient there is 0, the documented convention.
    self.assertAllEqual(fn.gradient(minimizer), np.zeros([1, dim]))
    with self.assertRaisesRegex(
      ValueError,
      rf"`hessian` is not defined for {name}: it is not twice differentiable",
    ):
      fn.hessian(minimizer)

  @parameterized.named_parameters(_named(ALL_CASES))
  def test_float32_input_keeps_dtype_and_uses_float64_derivatives(
    self, name, dim
  ):
    fn = functions.get_function(name, dim)
    x = fn.sample(5, seed=2)
    x64 = x.astype(np.float64)
    outputs = [(fn.value, [5, 1]), (fn.gradient, [5, dim])]
    if fn.smooth:
      outputs.append((fn.hessian, [5, dim, dim]))
    for method, shape in outputs:
      output = method(x)
      self.assertIsInstance(output, tf.Tensor)
      self.assertEqual(output.dtype, tf.float32)
      self.assertEqual(output.shape.as_list(), shape)
    self.assertAllClose(fn.value(x), fn.value(x64), rtol=1e-5, atol=1e-4)
    self.assertAllEqual(fn.gradient(x), tf.cast(fn.gradient(x64), tf.float32))

  def test_graph_mode_matches_eager_with_unknown_input_size(self):
    fn = functions.get_function("rosenbrock", 3)
    x = _points(fn, num_points=4)
    spec = [tf.TensorSpec([None, None], tf.float64)]
    for method in (fn.value, fn.gradient, fn.hessian):
      graph = tf.function(method, input_signature=spec)
      self.assertAllClose(graph(x), method(x), rtol=1e-12, atol=0)

  @parameterized.product(
    name=functions.PAPER_FUNCTIONS, domain=functions.DOMAINS
  )
  def test_sample_is_uniform_in_the_box(self, name, domain):
    fn = functions.get_function(name, domain=domain)
    points = fn.sample(2000, seed=3)
    self.assertEqual(points.shape, (2000, 2))
    self.assertEqual(points.dtype, np.float32)
    self.assertAllInRange(points.astype(np.float64), fn.lower, fn.upper)
    width = fn.upper - fn.lower
    # The sample mean has standard deviation width / sqrt(12 * 2000); allow
    # five. Missing 1% of the width at an end has probability 0.99**2000.
    self.assertAllClose(
      points.mean(axis=0), (fn.lower + fn.upper) / 2, atol=0.033 * width
    )
    self.assertAllLess((points.min(axis=0) - fn.lower) / width, 0.01)
    self.assertAllLess((fn.upper - points.max(axis=0)) / width, 0.01)
    self.assertAllEqual(points, fn.sample(2000, seed=3))
    self.assertNotAllClose(points, fn.sample(2000, seed=4))


class KinkTest(tf.test.TestCase):
  def test_ackley_gradient_near_origin_is_finite_and_exact(self):
    fn = functions.get_function("ackley", 3)
    x = np.array([[0.0, 0.0, 0.0], [1e-12, 0.0, 0.0], [0.0, -1e-300, 0.0]])
    gradient = fn.gradient(x)
    self.assertAllEqual(gradient[0], [0.0, 0.0, 0.0])
    # Approaching the cone's tip along an axis: slope a b / sqrt(d).
    self.assertAllClose(gradient[1], [4 / math.sqrt(3), 0, 0], rtol=1e-6)
    # Where x**2 underflows the radius is the tip's, and the gradient is the
    # periodic term's alone, of the order of x: not 0 * inf = NaN.
    self.assertAllClose(gradient[2], np.zeros(3), atol=1e-297)
    self.assertAllClose(gradient[:2], _np_ackley_gradient(x[:2]), rtol=1e-10)

  def test_bukin_n6_gradient_on_its_kinks_is_finite(self):
    fn = functions.get_function("bukin_n6")
    x1 = np.array([-14.0, -12.0, -8.0, -6.0])
    on_ridge = np.stack([x1, 0.01 * x1**2], axis=1)
    # Only the |x1 + 10| term is left on the ridge.
    self.assertAllEqual(
      fn.gradient(on_ridge), [[-0.01, 0], [-0.01, 0], [0.01, 0], [0.01, 0]]
    )
    on_line = np.array([[-10.0, 2.0], [-10.0, -2.0]])
    self.assertAllClose(
      fn.gradient(on_line), _np_bukin_n6_gradient(on_line), rtol=1e-12
    )


class BenchmarkFunctionFieldsTest(tf.test.TestCase):
  def test_sample_stays_inside_bounds_not_representable_in_float32(self):
    # float32(32.768) > 32.768, so without clipping many of these points,
    # drawn from a box a few float32 spacings wide, would round out of it.
    lower, upper = 32.768 - 1e-5, 32.768
    fn = dataclasses.replace(
      functions.get_function("ackley", 1), lower=[lower], upper=[upper]
    )
    points = fn.sample(1000, seed=0).astype(np.float64)
    self.assertTrue(np.all(points <= upper))
    self.assertTrue(np.all(points >= lower))
    # The points that rounded up to float32(upper) were clipped one step down.
    self.assertEqual(
      np.max(points), np.nextafter(np.float32(upper), np.float32(-np.inf))
    )

  def test_frozen_and_read_only(self):
    fn = functions.get_function("booth")
    with self.assertRaises(dataclasses.FrozenInstanceError):
      fn.dim = 3
    with self.assertRaisesRegex(ValueError, "read-only"):
      fn.lower[0] = 0.0
    with self.assertRaises(TypeError):
      functions.FUNCTIONS["booth"] = functions.FUNCTIONS["beale"]

  def test_invalid_fields(self):
    fn = functions.get_function("booth")
    with self.assertRaisesRegex(
      ValueError,
      r"`upper` of booth must have shape \(2,\)\. "
      r"Received: upper with shape=\(3,\)\.",
    ):
      dataclasses.replace(fn, upper=[1.0, 2.0, 3.0])
    with self.assertRaisesRegex(ValueError, "The domain of booth is empty"):
      dataclasses.replace(fn, lower=[0.0, 0.0], upper=[1.0, -1.0])

  def test_invalid_inputs(self):
    fn = functions.get_function("rosenbrock", 3)
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


if __name__ == "__main__":
  tf.test.main()
