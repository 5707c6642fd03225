"""Optimisation benchmark functions with analytic first and second derivatives.

Czarnecki et al. (2017), "Sobolev Training for Neural Networks", Figure 2,
regress seven classic 2-D test functions from their values and derivatives:
Ackley, Beale, Booth, Bukin N.6, McCormick, Rosenbrock and Styblinski-Tang.
This module provides them on their standard benchmark domains, and the
scalable Ackley, Rosenbrock and Styblinski-Tang for any dimension `d` (the 2-D
versions are their `d = 2` case).

Each function is a `BenchmarkFunction` that holds its box domain and a known
global minimiser. `value` is written with TensorFlow ops, so autodiff can
differentiate it; `gradient` and `hessian` are derived by hand, so the
derivative targets can be checked against autodiff and vice versa.

Ackley and Bukin N.6 are not differentiable everywhere. At their kinks both
`gradient` and autodiff through `value` take `sign(0) = 0` and give
`sqrt(s)` a zero derivative at `s = 0`, so they return finite values instead
of NaN. At the origin of Ackley, its minimiser, that value is 0, a valid
subgradient. On the ridge `x2 = 0.01 * x1**2` of Bukin N.6 the derivative is
unbounded and 0 is a convention only; the ridge has measure zero, so uniform
samples almost never hit it.

Domains and minima follow Surjanovic & Bingham's library unless noted:

  Surjanovic, S. & Bingham, D. (2013). Virtual Library of Simulation
  Experiments: Test Functions and Datasets.
  https://www.sfu.ca/~ssurjano/optimization.html

  Jamil, M. & Yang, X.-S. (2013). A literature survey of benchmark functions
  for global optimisation problems. Int. J. Mathematical Modelling and
  Numerical Optimisation 4(2), 150-194. arXiv:1308.4008.

Use `dataclasses.replace(fn, lower=..., upper=...)` to sample a smaller box,
for example the [-5, 5]^2 window that plots of Ackley often show.
"""

import dataclasses
import math
import operator
from typing import Callable
from typing import Dict
from typing import Optional

import numpy as np
import tensorflow as tf

TensorFn = Callable[[tf.Tensor], tf.Tensor]

PAPER_FUNCTIONS = (
  "ackley",
  "beale",
  "booth",
  "bukin_n6",
  "mccormick",
  "rosenbrock",
  "styblinski_tang",
)


@dataclasses.dataclass(frozen=True, eq=False)
class BenchmarkFunction:
  """A scalar test function on a box domain, with its known global minimum.

  Equality is identity: the NumPy fields have no single truth value, so the
  generated field-wise `__eq__` could not work.

  Attributes:
    name: Registry name, e.g. "bukin_n6".
    dim: Input dimension `d`.
    lower: Lower corner of the box domain, float64 of shape [dim], read-only.
    upper: Upper corner of the box domain, float64 of shape [dim], read-only.
    minimizer: One global minimiser in the domain, float64 of shape [dim],
      read-only.
    minimum: The global minimum value on the domain.
    smooth: Whether the function is twice differentiable on the whole domain.
      Only smooth functions have a `hessian`.
    value_fn: Implementation of `value` on a validated [B, dim] tensor.
    gradient_fn: Implementation of `gradient` on a validated [B, dim] tensor.
    hessian_fn: Implementation of `hessian` on a validated [B, dim] tensor;
      None exactly when `smooth` is False.
    kink: Where and why a non-smooth function fails to be twice
      differentiable, quoted by the `hessian` error; empty for smooth ones.
  """

  name: str
  dim: int
  lower: np.ndarray
  upper: np.ndarray
  minimizer: np.ndarray
  minimum: float
  smooth: bool
  value_fn: TensorFn = dataclasses.field(repr=False)
  gradient_fn: TensorFn = dataclasses.field(repr=False)
  hessian_fn: Optional[TensorFn] = dataclasses.field(default=None, repr=False)
  kink: str = ""

  def __post_init__(self):
    for field in ("lower", "upper", "minimizer"):
      array = np.array(getattr(self, field), dtype=np.float64)
      if array.shape != (self.dim,):
        raise ValueError(
          f"`{field}` of {self.name} must have shape ({self.dim},). "
          f"Received: {field} with shape={array.shape}."
        )
      # Frozen fields would still be mutable through the array buffer.
      array.setflags(write=False)
      object.__setattr__(self, field, array)
    object.__setattr__(self, "minimum", float(self.minimum))
    if not np.all(self.lower <= self.upper):
      raise ValueError(
        f"The domain of {self.name} is empty: `lower` must be <= `upper`. "
        f"Received: lower={self.lower}, upper={self.upper}."
      )
    if self.smooth != (self.hessian_fn is not None):
      raise ValueError(
        f"{self.name}: `hessian_fn` must be given exactly when `smooth` is "
        f"True. Received: smooth={self.smooth}, "
        f"hessian_fn={self.hessian_fn!r}."
      )

  def value(self, x: tf.Tensor) -> tf.Tensor:
    """Evaluates the function.

    Args:
      x: Floating-point points of shape [B, dim], a tensor or NumPy array.

    Returns:
      The values, of shape [B, 1] and the dtype of `x`.

    Raises:
      ValueError: If `x` is not floating point or not of shape [B, dim].
    """
    return self.value_fn(self._check_input(x))

  def gradient(self, x: tf.Tensor) -> tf.Tensor:
    """Evaluates the hand-derived gradient.

    Args:
      x: Floating-point points of shape [B, dim], a tensor or NumPy array.

    Returns:
      The gradients, of shape [B, dim] and the dtype of `x`.

    Raises:
      ValueError: If `x` is not floating point or not of shape [B, dim].
    """
    return self.gradient_fn(self._check_input(x))

  def hessian(self, x: tf.Tensor) -> tf.Tensor:
    """Evaluates the hand-derived Hessian.

    Args:
      x: Floating-point points of shape [B, dim], a tensor or NumPy array.

    Returns:
      The Hessians, of shape [B, dim, dim] and the dtype of `x`.

    Raises:
      ValueError: If the function is not smooth, or if `x` is not floating
        point or not of shape [B, dim].
    """
    if self.hessian_fn is None:
      raise ValueError(
        f"`hessian` is not defined for {self.name}: it is not twice "
        f"differentiable on its domain ({self.kink})."
      )
    return self.hessian_fn(self._check_input(x))

  def sample(self, num_points: int, seed: Optional[int] = None) -> np.ndarray:
    """Draws points uniformly from the box domain.

    Args:
      num_points: Number of points.
      seed: Seed of `np.random.default_rng`; None draws fresh entropy.

    Returns:
      A float32 array of shape [num_points, dim] whose entries satisfy
      `lower <= x <= upper` even when compared in float64 (for any box that
      contains float32 values at all).
    """
    rng = np.random.default_rng(seed)
    points = rng.uniform(self.lower, self.upper, size=(num_points, self.dim))
    # Rounding to float32 can step just outside a bound that float32 cannot
    # represent, such as 32.768; clip to the nearest float32 values inside.
    low = self.lower.astype(np.float32)
    low = np.where(low < self.lower, np.nextafter(low, np.float32(np.inf)), low)
    high = self.upper.astype(np.float32)
    high = np.where(
      high > self.upper, np.nextafter(high, np.float32(-np.inf)), high
    )
    return np.clip(points.astype(np.float32), low, high)

  def _check_input(self, x: tf.Tensor) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
      raise ValueError(
        f"{self.name} needs a floating-point input. Received: x with "
        f"dtype={x.dtype.name}; cast it to float32 or float64 first."
      )
    if x.shape.rank != 2 or x.shape[-1] not in (None, self.dim):
      raise ValueError(
        f"{self.name} expects inputs of shape [B, {self.dim}]. Received: x "
        f"with shape={x.shape}."
      )
    return x


def _safe_sqrt(s: tf.Tensor) -> tf.Tensor:
  """Square root of `s >= 0` whose autodiff derivative at 0 is 0, not NaN."""
  positive = s > 0
  # The inner `where` keeps the backward pass of `sqrt` away from 0, where its
  # infinite derivative times the zero upstream gradient would give NaN.
  safe = tf.where(positive, s, tf.ones_like(s))
  return tf.where(positive, tf.sqrt(safe), tf.zeros_like(s))


def _symmetric_2x2(h11: tf.Tensor, h12: tf.Tensor, h22: tf.Tensor) -> tf.Tensor:
  """Assembles [B, 1] entries into Hessians of shape [B, 2, 2]."""
  return tf.reshape(tf.concat([h11, h12, h12, h22], axis=1), [-1, 2, 2])


def _check_dim_is_2(name: str, dim: int) -> int:
  dim = operator.index(dim)
  if dim != 2:
    raise ValueError(
      f"{name} is defined only in 2 dimensions. Received: dim={dim}."
    )
  return dim


def _check_dim_at_least(name: str, dim: int, minimum: int) -> int:
  dim = operator.index(dim)
  if dim < minimum:
    raise ValueError(f"{name} needs dim >= {minimum}. Received: dim={dim}.")
  return dim


# Ackley.

_ACKLEY_A = 20.0
_ACKLEY_B = 0.2
_ACKLEY_C = 2.0 * math.pi


def _ackley_value(x: tf.Tensor) -> tf.Tensor:
  radius = _safe_sqrt(tf.reduce_mean(tf.square(x), axis=1, keepdims=True))
  mean_cos = tf.reduce_mean(tf.cos(_ACKLEY_C * x), axis=1, keepdims=True)
  return (
    -_ACKLEY_A * tf.exp(-_ACKLEY_B * radius)
    - tf.exp(mean_cos)
    + (_ACKLEY_A + math.e)
  )


def _ackley_gradient(x: tf.Tensor) -> tf.Tensor:
  dim = tf.cast(tf.shape(x)[1], x.dtype)
  radius = _safe_sqrt(tf.reduce_mean(tf.square(x), axis=1, keepdims=True))
  mean_cos = tf.reduce_mean(tf.cos(_ACKLEY_C * x), axis=1, keepdims=True)
  # d radius / dx = x / (dim * radius); taking 0 at the origin, where it is
  # undefined, matches the autodiff of `_safe_sqrt`.
  radial = (
    _ACKLEY_A
    * _ACKLEY_B
    * tf.exp(-_ACKLEY_B * radius)
    * tf.math.divide_no_nan(x, dim * radius)
  )
  periodic = (_ACKLEY_C / dim) * tf.sin(_ACKLEY_C * x) * tf.exp(mean_cos)
  return radial + periodic


def ackley(dim: int = 2) -> BenchmarkFunction:
  """Ackley's function in `dim` dimensions.

  f(x) = -a exp(-b sqrt(mean_i x_i^2)) - exp(mean_i cos(c x_i)) + a + e, with
  a = 20, b = 0.2 and c = 2 pi. Global minimum 0 at x = 0.

  Domain [-32.768, 32.768]^dim, as in Surjanovic & Bingham's library ("Ackley
  Function"); Jamil & Yang (2013) survey it as "Ackley 1". Plots often show
  the smaller window [-5, 5]^2 (e.g. Wikipedia's "Test functions for
  optimization"); the library's box is kept so that results compare with the
  benchmark literature.

  Not smooth: sqrt(mean_i x_i^2) has a cone-shaped kink at the origin, which
  is the global minimiser, so the function is not differentiable there and
  has no Hessian.

  Args:
    dim: Input dimension, >= 1.

  Returns:
    The function.

  Raises:
    ValueError: If `dim < 1`.
  """
  dim = _check_dim_at_least("ackley", dim, 1)
  return BenchmarkFunction(
    name="ackley",
    dim=dim,
    lower=np.full(dim, -32.768),
    upper=np.full(dim, 32.768),
    minimizer=np.zeros(dim),
    minimum=0.0,
    smooth=False,
    value_fn=_ackley_value,
    gradient_fn=_ackley_gradient,
    kink=(
      "sqrt(mean(x**2)) has a cone-shaped kink at the origin, its global "
      "minimiser"
    ),
  )


# Beale.

_BEALE_C = (1.5, 2.25, 2.625)


def _beale_terms(x: tf.Tensor):
  """Yields (k, t_k, x1, x2) with t_k = c_k - x1 + x1 x2^k, each [B, 1]."""
  x1, x2 = x[:, 0:1], x[:, 1:2]
  for k, c in enumerate(_BEALE_C, start=1):
    yield k, c - x1 + x1 * x2**k, x1, x2


def _beale_value(x: tf.Tensor) -> tf.Tensor:
  return tf.add_n([tf.square(t) for _, t, _, _ in _beale_terms(x)])


def _beale_gradient(x: tf.Tensor) -> tf.Tensor:
  g1, g2 = 0.0, 0.0
  for k, t, x1, x2 in _beale_terms(x):
    g1 += 2.0 * t * (x2**k - 1.0)
    g2 += 2.0 * t * k * x1 * x2 ** (k - 1)
  return tf.concat([g1, g2], axis=1)


def _beale_hessian(x: tf.Tensor) -> tf.Tensor:
  # Each term contributes 2 (grad t grad t^T + t Hess t).
  h11, h12, h22 = 0.0, 0.0, 0.0
  for k, t, x1, x2 in _beale_terms(x):
    dt1 = x2**k - 1.0
    dt2 = k * x1 * x2 ** (k - 1)
    h11 += 2.0 * tf.square(dt1)
    h12 += 2.0 * (dt1 * dt2 + t * k * x2 ** (k - 1))
    h22 += 2.0 * tf.square(dt2)
    if k >= 2:
      h22 += 2.0 * t * k * (k - 1) * x1 * x2 ** (k - 2)
  return _symmetric_2x2(h11, h12, h22)


def beale(dim: int = 2) -> BenchmarkFunction:
  """Beale's function.

  f(x) = (1.5 - x1 + x1 x2)^2 + (2.25 - x1 + x1 x2^2)^2
    + (2.625 - x1 + x1 x2^3)^2. Global minimum 0 at (3, 0.5).

  Domain [-4.5, 4.5]^2, as in Surjanovic & Bingham's library ("Beale
  Function") and Jamil & Yang (2013).

  Args:
    dim: Must be 2.

  Returns:
    The function.

  Raises:
    ValueError: If `dim != 2`.
  """
  dim = _check_dim_is_2("beale", dim)
  return BenchmarkFunction(
    name="beale",
    dim=dim,
    lower=np.full(dim, -4.5),
    upper=np.full(dim, 4.5),
    minimizer=np.array([3.0, 0.5]),
    minimum=0.0,
    smooth=True,
    value_fn=_beale_value,
    gradient_fn=_beale_gradient,
    hessian_fn=_beale_hessian,
  )


# Booth.


def _booth_residuals(x: tf.Tensor):
  x1, x2 = x[:, 0:1], x[:, 1:2]
  return x1 + 2.0 * x2 - 7.0, 2.0 * x1 + x2 - 5.0


def _booth_value(x: tf.Tensor) -> tf.Tensor:
  u, v = _booth_residuals(x)
  return tf.square(u) + tf.square(v)


def _booth_gradient(x: tf.Tensor) -> tf.Tensor:
  u, v = _booth_residuals(x)
  return tf.concat([2.0 * u + 4.0 * v, 4.0 * u + 2.0 * v], axis=1)


def _booth_hessian(x: tf.Tensor) -> tf.Tensor:
  hessian = tf.constant([[10.0, 8.0], [8.0, 10.0]], dtype=x.dtype)
  return tf.broadcast_to(hessian, [tf.shape(x)[0], 2, 2])


def booth(dim: int = 2) -> BenchmarkFunction:
  """Booth's function.

  f(x) = (x1 + 2 x2 - 7)^2 + (2 x1 + x2 - 5)^2. Global minimum 0 at (1, 3).

  Domain [-10, 10]^2, as in Surjanovic & Bingham's library ("Booth Function")
  and Jamil & Yang (2013).

  Args:
    dim: Must be 2.

  Returns:
    The function.

  Raises:
    ValueError: If `dim != 2`.
  """
  dim = _check_dim_is_2("booth", dim)
  return BenchmarkFunction(
    name="booth",
    dim=dim,
    lower=np.full(dim, -10.0),
    upper=np.full(dim, 10.0),
    minimizer=np.array([1.0, 3.0]),
    minimum=0.0,
    smooth=True,
    value_fn=_booth_value,
    gradient_fn=_booth_gradient,
    hessian_fn=_booth_hessian,
  )


# Bukin N.6.


def _bukin_n6_value(x: tf.Tensor) -> tf.Tensor:
  x1, x2 = x[:, 0:1], x[:, 1:2]
  ridge = x2 - 0.01 * tf.square(x1)
  return 100.0 * _safe_sqrt(tf.abs(ridge)) + 0.01 * tf.abs(x1 + 10.0)


def _bukin_n6_gradient(x: tf.Tensor) -> tf.Tensor:
  x1, x2 = x[:, 0:1], x[:, 1:2]
  ridge = x2 - 0.01 * tf.square(x1)
  # d/du 100 sqrt(|u|) = 50 sign(u) / sqrt(|u|), set to 0 on the ridge u = 0
  # like the autodiff of `_safe_sqrt`.
  d_ridge = tf.math.divide_no_nan(50.0 * tf.sign(ridge), tf.sqrt(tf.abs(ridge)))
  g1 = -0.02 * x1 * d_ridge + 0.01 * tf.sign(x1 + 10.0)
  return tf.concat([g1, d_ridge], axis=1)


def bukin_n6(dim: int = 2) -> BenchmarkFunction:
  """Bukin's function N.6.

  f(x) = 100 sqrt(|x2 - 0.01 x1^2|) + 0.01 |x1 + 10|. Global minimum 0 at
  (-10, 1).

  Domain x1 in [-15, -5], x2 in [-3, 3], as in Surjanovic & Bingham's library
  ("Bukin Function N. 6") and Jamil & Yang (2013).

  Not smooth: it has kinks along the parabola x2 = 0.01 x1^2 (where the
  derivative is unbounded) and the line x1 = -10, which cross at the global
  minimiser, so it has no Hessian.

  Args:
    dim: Must be 2.

  Returns:
    The function.

  Raises:
    ValueError: If `dim != 2`.
  """
  dim = _check_dim_is_2("bukin_n6", dim)
  return BenchmarkFunction(
    name="bukin_n6",
    dim=dim,
    lower=np.array([-15.0, -3.0]),
    upper=np.array([-5.0, 3.0]),
    minimizer=np.array([-10.0, 1.0]),
    minimum=0.0,
    smooth=False,
    value_fn=_bukin_n6_value,
    gradient_fn=_bukin_n6_gradient,
    kink=(
      "sqrt(|x2 - 0.01 x1**2|) and |x1 + 10| have kinks along the parabola "
      "x2 = 0.01 x1**2 and the line x1 = -10, which cross at its global "
      "minimiser"
    ),
  )


# McCormick.


def _mccormick_value(x: tf.Tensor) -> tf.Tensor:
  x1, x2 = x[:, 0:1], x[:, 1:2]
  return tf.sin(x1 + x2) + tf.square(x1 - x2) - 1.5 * x1 + 2.5 * x2 + 1.0


def _mccormick_gradient(x: tf.Tensor) -> tf.Tensor:
  x1, x2 = x[:, 0:1], x[:, 1:2]
  cos_sum = tf.cos(x1 + x2)
  diff = 2.0 * (x1 - x2)
  return tf.concat([cos_sum + diff - 1.5, cos_sum - diff + 2.5], axis=1)


def _mccormick_hessian(x: tf.Tensor) -> tf.Tensor:
  sin_sum = tf.sin(x[:, 0:1] + x[:, 1:2])
  return _symmetric_2x2(2.0 - sin_sum, -2.0 - sin_sum, 2.0 - sin_sum)


def mccormick(dim: int = 2) -> BenchmarkFunction:
  """McCormick's function.

  f(x) = sin(x1 + x2) + (x1 - x2)^2 - 1.5 x1 + 2.5 x2 + 1.

  Domain x1 in [-1.5, 4], x2 in [-3, 4], as in Surjanovic & Bingham's library
  ("McCormick Function"); some libraries cut x2 at 3, which leaves the
  minimiser inside.

  The library quotes the minimum -1.9133 at (-0.54719, -1.54719). Setting the
  gradient to zero gives x1 - x2 = 1 and cos(x1 + x2) = -1/2, so the exact
  minimiser is (1/2 - pi/3, -1/2 - pi/3) with minimum -sqrt(3)/2 - pi/3
  = -1.9132229...; these exact values are used.

  Args:
    dim: Must be 2.

  Returns:
    The function.

  Raises:
    ValueError: If `dim != 2`.
  """
  dim = _check_dim_is_2("mccormick", dim)
  return BenchmarkFunction(
    name="mccormick",
    dim=dim,
    lower=np.array([-1.5, -3.0]),
    upper=np.array([4.0, 4.0]),
    minimizer=np.array([0.5 - math.pi / 3.0, -0.5 - math.pi / 3.0]),
    minimum=-math.sqrt(3.0) / 2.0 - math.pi / 3.0,
    smooth=True,
    value_fn=_mccormick_value,
    gradient_fn=_mccormick_gradient,
    hessian_fn=_mccormick_hessian,
  )


# Rosenbrock.


def _rosenbrock_parts(x: tf.Tensor):
  """Returns x_i and the valley residuals x_{i+1} - x_i^2, i < d, [B, d-1]."""
  head = x[:, :-1]
  return head, x[:, 1:] - tf.square(head)


def _rosenbrock_value(x: tf.Tensor) -> tf.Tensor:
  head, valley = _rosenbrock_parts(x)
  terms = 100.0 * tf.square(valley) + tf.square(head - 1.0)
  return tf.reduce_sum(terms, axis=1, keepdims=True)


def _rosenbrock_gradient(x: tf.Tensor) -> tf.Tensor:
  head, valley = _rosenbrock_parts(x)
  # Coordinate i appears as x_i in term i and as x_{i+1} in term i - 1.
  as_head = -400.0 * head * valley + 2.0 * (head - 1.0)
  as_tail = 200.0 * valley
  return tf.pad(as_head, [[0, 0], [0, 1]]) + tf.pad(as_tail, [[0, 0], [1, 0]])


def _rosenbrock_hessian(x: tf.Tensor) -> tf.Tensor:
  head, valley = _rosenbrock_parts(x)
  # Only neighbouring coordinates interact, so the Hessian is tridiagonal.
  as_head = -400.0 * valley + 800.0 * tf.square(head) + 2.0
  as_tail = tf.fill(tf.shape(valley), tf.constant(200.0, x.dtype))
  diagonal = tf.pad(as_head, [[0, 0], [0, 1]]) + tf.pad(
    as_tail, [[0, 0], [1, 0]]
  )
  off_diagonal = -400.0 * head
  return (
    tf.linalg.diag(diagonal)
    + tf.linalg.diag(off_diagonal, k=1)
    + tf.linalg.diag(off_diagonal, k=-1)
  )  # [B, dim, dim]


def rosenbrock(dim: int = 2) -> BenchmarkFunction:
  """Rosenbrock's function in `dim` dimensions.

  f(x) = sum_{i<d} 100 (x_{i+1} - x_i^2)^2 + (x_i - 1)^2. Global minimum 0 at
  x = (1, ..., 1).

  Domain [-5, 10]^dim, as in Surjanovic & Bingham's library ("Rosenbrock
  Function"), which notes that it may be restricted to [-2.048, 2.048]^dim;
  the wider box is the library's default and is kept here.

  Args:
    dim: Input dimension, >= 2; the sum couples neighbouring coordinates, so
      for dim = 1 the function would be the constant 0.

  Returns:
    The function.

  Raises:
    ValueError: If `dim < 2`.
  """
  dim = _check_dim_at_least("rosenbrock", dim, 2)
  return BenchmarkFunction(
    name="rosenbrock",
    dim=dim,
    lower=np.full(dim, -5.0),
    upper=np.full(dim, 10.0),
    minimizer=np.ones(dim),
    minimum=0.0,
    smooth=True,
    value_fn=_rosenbrock_value,
    gradient_fn=_rosenbrock_gradient,
    hessian_fn=_rosenbrock_hessian,
  )


# Styblinski-Tang.


def _styblinski_tang_root() -> float:
  """Returns the minimising root of f'(t) = 2 t^3 - 16 t + 2.5 per coordinate.

  The depressed cubic t^3 - 8 t + 5/4 has three real roots; the trigonometric
  formula gives the negative one to full precision.
  """
  p, q = -8.0, 1.25
  angle = math.acos(1.5 * q / p * math.sqrt(-3.0 / p)) / 3.0
  return 2.0 * math.sqrt(-p / 3.0) * math.cos(angle - 4.0 * math.pi / 3.0)


_STYBLINSKI_TANG_ROOT = _styblinski_tang_root()
_STYBLINSKI_TANG_MIN_PER_DIM = 0.5 * (
  _STYBLINSKI_TANG_ROOT**4
  - 16.0 * _STYBLINSKI_TANG_ROOT**2
  + 5.0 * _STYBLINSKI_TANG_ROOT
)


def _styblinski_tang_value(x: tf.Tensor) -> tf.Tensor:
  terms = tf.square(tf.square(x)) - 16.0 * tf.square(x) + 5.0 * x
  return 0.5 * tf.reduce_sum(terms, axis=1, keepdims=True)


def _styblinski_tang_gradient(x: tf.Tensor) -> tf.Tensor:
  return 2.0 * x**3 - 16.0 * x + 2.5


def _styblinski_tang_hessian(x: tf.Tensor) -> tf.Tensor:
  return tf.linalg.diag(6.0 * tf.square(x) - 16.0)  # [B, dim, dim]


def styblinski_tang(dim: int = 2) -> BenchmarkFunction:
  """The Styblinski-Tang function in `dim` dimensions.

  f(x) = 1/2 sum_i (x_i^4 - 16 x_i^2 + 5 x_i). Global minimum at
  x_i = -2.903534027771..., the negative root of 2 t^3 - 16 t + 2.5 = 0.

  Domain [-5, 5]^dim, as in Surjanovic & Bingham's library
  ("Styblinski-Tang Function") and Jamil & Yang (2013).

  The library quotes the minimum as -39.16599 dim; evaluating f at the root
  gives -39.1661657037714 dim, which is used here (-39.16599 dim is off by
  1.7e-4 per dimension).

  Args:
    dim: Input dimension, >= 1.

  Returns:
    The function.

  Raises:
    ValueError: If `dim < 1`.
  """
  dim = _check_dim_at_least("styblinski_tang", dim, 1)
  return BenchmarkFunction(
    name="styblinski_tang",
    dim=dim,
    lower=np.full(dim, -5.0),
    upper=np.full(dim, 5.0),
    minimizer=np.full(dim, _STYBLINSKI_TANG_ROOT),
    minimum=dim * _STYBLINSKI_TANG_MIN_PER_DIM,
    smooth=True,
    value_fn=_styblinski_tang_value,
    gradient_fn=_styblinski_tang_gradient,
    hessian_fn=_styblinski_tang_hessian,
  )


FUNCTIONS: Dict[str, Callable[[int], BenchmarkFunction]] = {
  "ackley": ackley,
  "beale": beale,
  "booth": booth,
  "bukin_n6": bukin_n6,
  "mccormick": mccormick,
  "rosenbrock": rosenbrock,
  "styblinski_tang": styblinski_tang,
}


def get_function(name: str, dim: int = 2) -> BenchmarkFunction:
  """Builds a benchmark function by name.

  Args:
    name: One of `FUNCTIONS`, e.g. "rosenbrock".
    dim: Input dimension. Must be 2 except for "ackley" and
      "styblinski_tang" (any dim >= 1) and "rosenbrock" (any dim >= 2).

  Returns:
    The function.

  Raises:
    ValueError: If `name` is unknown or `dim` is invalid for it.
  """
  if name not in FUNCTIONS:
    raise ValueError(
      f"Received an invalid value for `name`, expected one of "
      f"{list(FUNCTIONS)}. Received: name={name!r}"
    )
  return FUNCTIONS[name](dim)
