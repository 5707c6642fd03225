"""The optimisation benchmark functions of the paper's regression experiment.

Czarnecki et al. (2017), "Sobolev Training for Neural Networks", Sec. 4.1 and
Figure 2, regress seven classic 2-D test functions from their values and
derivatives. Each is one row of `FUNCTIONS`: its value written with
TensorFlow ops, its box domains, where it has kinks, and the dimensions it
is defined in. `get_function` builds a `BenchmarkFunction` from a row.

`gradient` and `hessian` are float64 autodiff of `value` by the library's own
derivative engine (`sobolev_tf.derivatives`), so the regression targets come
from the same code that differentiates the networks; the tests check them
against hand-derived derivatives and central finite differences.

Domains (the scalable functions repeat one interval for every coordinate, in
any dimension d):

  function         "paper" (default)       "standard"               dim
  ackley           [-5, 5]^d               [-32.768, 32.768]^d      >= 1
  beale            [-4.5, 4.5]^2           same                     2
  booth            [-10, 10]^2             same                     2
  bukin_n6         [-15, -5] x [-3, 3]     same                     2
  mccormick        [-1.5, 4] x [-3, 4]     same                     2
  rosenbrock       [-2, 2]^d               [-5, 10]^d               >= 2
  styblinski_tang  [-5, 5]^d               same                     >= 1

"paper": the boxes of the paper's supplementary material, pp. 14-15, as
copied in the public reproduction Tikquuss/lwd
(`notebooks/optimization_functions.ipynb`).

"standard": the boxes of Surjanovic & Bingham's library, Virtual Library of
Simulation Experiments: Test Functions and Datasets (2013),
https://www.sfu.ca/~ssurjano/optimization.html; Jamil & Yang (2013), "A
literature survey of benchmark functions for global optimisation problems",
arXiv:1308.4008, agree on them.

Ackley and Bukin N.6 are not differentiable everywhere and have no `hessian`.
At their kinks autodiff takes `sign(0) = 0` and gives `sqrt(s)` a zero
derivative at `s = 0` (`_safe_sqrt`), so `gradient` is finite there, not NaN.
At the origin of Ackley, its minimiser, that gradient is 0, a valid
subgradient. On the ridge `x2 = 0.01 * x1**2` of Bukin N.6 the derivative is
unbounded and dropping the ridge term is a convention only; the ridge has
measure zero, so uniform samples almost never hit it.
"""

import dataclasses
import math
import operator
import types
from typing import Callable
from typing import Collection
from typing import Mapping
from typing import Optional
from typing import Tuple

import numpy as np
import tensorflow as tf

from sobolev_tf import derivatives

TensorFn = Callable[[tf.Tensor], tf.Tensor]
# One (low, high) interval per coordinate, or one shared by every coordinate.
Box = Tuple[Tuple[float, float], ...]

DOMAINS = ("paper", "standard")


@dataclasses.dataclass(frozen=True, eq=False)
class BenchmarkFunction:
  """A scalar test function on a box domain.

  Equality is identity: the NumPy fields have no single truth value, so the
  generated field-wise `__eq__` could not work.

  Attributes:
    name: Registry name, e.g. "bukin_n6".
    dim: Input dimension `d`.
    domain: Name of the domain in `DOMAINS` the box was built from.
    lower: Lower corner of the box domain, float64 of shape [dim], read-only.
    upper: Upper corner of the box domain, float64 of shape [dim], read-only.
    value_fn: The function on a validated [B, dim] tensor, returning [B, 1]
      in the input's dtype.
    kink: Where and why the function fails to be twice differentiable,
      quoted by the `hessian` error; empty for smooth functions.
  """

  name: str
  dim: int
  domain: str
  lower: np.ndarray
  upper: np.ndarray
  value_fn: TensorFn = dataclasses.field(repr=False)
  kink: str = ""

  def __post_init__(self):
    for field in ("lower", "upper"):
      array = np.array(getattr(self, field), dtype=np.float64)
      if array.shape != (self.dim,):
        raise ValueError(
          f"`{field}` of {self.name} must have shape ({self.dim},). "
          f"Received: {field} with shape={array.shape}."
        )
      # Frozen fields would still be mutable through the array buffer.
      array.setflags(write=False)
      object.__setattr__(self, field, array)
    if not np.all(self.lower <= self.upper):
      raise ValueError(
        f"The domain of {self.name} is empty: `lower` must be <= `upper`. "
        f"Received: lower={self.lower}, upper={self.upper}."
      )

  @property
  def smooth(self) -> bool:
    """Whether the function is twice differentiable on the whole domain."""
    return not self.kink

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
    """Evaluates the gradient by float64 autodiff of `value`.

    Args:
      x: Floating-point points of shape [B, dim], a tensor or NumPy array.

    Returns:
      The gradients, of shape [B, dim] and the dtype of `x`.

    Raises:
      ValueError: If `x` is not floating point or not of shape [B, dim].
    """
    x = self._check_input(x)
    jacobian = derivatives.jacobian(self.value_fn, tf.cast(x, tf.float64))
    return tf.cast(jacobian[:, 0, :], x.dtype)  # [B, dim]

  def hessian(self, x: tf.Tensor) -> tf.Tensor:
    """Evaluates the Hessian by float64 autodiff of `value`.

    Args:
      x: Floating-point points of shape [B, dim], a tensor or NumPy array.

    Returns:
      The Hessians, of shape [B, dim, dim] and the dtype of `x`.

    Raises:
      ValueError: If the function is not smooth, or if `x` is not floating
        point or not of shape [B, dim].
    """
    if not self.smooth:
      raise ValueError(
        f"`hessian` is not defined for {self.name}: it is not twice "
        f"differentiable on its domain ({self.kink})."
      )
    x = self._check_input(x)
    hessian = derivatives.hessian(self.value_fn, tf.cast(x, tf.float64))
    return tf.cast(hessian[:, 0], x.dtype)  # [B, dim, dim]

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
    # The derivative engine needs the input size statically.
    return tf.ensure_shape(x, [None, self.dim])


def _safe_sqrt(s: tf.Tensor) -> tf.Tensor:
  """Square root of `s >= 0` whose autodiff derivative at 0 is 0, not NaN."""
  positive = s > 0
  # The inner `where` keeps the backward pass of `sqrt` away from 0, where its
  # infinite derivative times the zero upstream gradient would give NaN.
  safe = tf.where(positive, s, tf.ones_like(s))
  return tf.where(positive, tf.sqrt(safe), tf.zeros_like(s))


def _ackley(x: tf.Tensor) -> tf.Tensor:
  """-20 exp(-0.2 sqrt(mean x_i^2)) - exp(mean cos(2 pi x_i)) + 20 + e."""
  radius = _safe_sqrt(tf.reduce_mean(tf.square(x), axis=1, keepdims=True))
  mean_cos = tf.reduce_mean(tf.cos(2.0 * math.pi * x), axis=1, keepdims=True)
  return -20.0 * tf.exp(-0.2 * radius) - tf.exp(mean_cos) + (20.0 + math.e)


def _beale(x: tf.Tensor) -> tf.Tensor:
  """Sum over k = 1, 2, 3 of (c_k - x1 + x1 x2^k)^2, c = (1.5, 2.25, 2.625)."""
  x1, x2 = x[:, 0:1], x[:, 1:2]
  terms = [
    tf.square(c - x1 + x1 * x2**k)
    for k, c in enumerate((1.5, 2.25, 2.625), start=1)
  ]
  return tf.add_n(terms)


def _booth(x: tf.Tensor) -> tf.Tensor:
  """(x1 + 2 x2 - 7)^2 + (2 x1 + x2 - 5)^2."""
  x1, x2 = x[:, 0:1], x[:, 1:2]
  return tf.square(x1 + 2.0 * x2 - 7.0) + tf.square(2.0 * x1 + x2 - 5.0)


def _bukin_n6(x: tf.Tensor) -> tf.Tensor:
  """100 sqrt(|x2 - 0.01 x1^2|) + 0.01 |x1 + 10|."""
  x1, x2 = x[:, 0:1], x[:, 1:2]
  ridge = x2 - 0.01 * tf.square(x1)
  return 100.0 * _safe_sqrt(tf.abs(ridge)) + 0.01 * tf.abs(x1 + 10.0)


def _mccormick(x: tf.Tensor) -> tf.Tensor:
  """sin(x1 + x2) + (x1 - x2)^2 - 1.5 x1 + 2.5 x2 + 1."""
  x1, x2 = x[:, 0:1], x[:, 1:2]
  return tf.sin(x1 + x2) + tf.square(x1 - x2) - 1.5 * x1 + 2.5 * x2 + 1.0


def _rosenbrock(x: tf.Tensor) -> tf.Tensor:
  """Sum over i < d of 100 (x_{i+1} - x_i^2)^2 + (x_i - 1)^2."""
  head = x[:, :-1]  # [B, d - 1]
  terms = 100.0 * tf.square(x[:, 1:] - tf.square(head)) + tf.square(head - 1)
  return tf.reduce_sum(terms, axis=1, keepdims=True)


def _styblinski_tang(x: tf.Tensor) -> tf.Tensor:
  """1/2 sum_i (x_i^4 - 16 x_i^2 + 5 x_i)."""
  terms = tf.square(tf.square(x)) - 16.0 * tf.square(x) + 5.0 * x
  return 0.5 * tf.reduce_sum(terms, axis=1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class FunctionSpec:
  """One row of the benchmark table.

  Attributes:
    value_fn: The function on a [B, d] tensor, returning [B, 1].
    domains: The box of each name in `DOMAINS`.
    min_dim: The smallest input dimension.
    scalable: Whether every `dim >= min_dim` is valid; if not, only 2 is.
    kink: Where and why the function is not twice differentiable; empty
      when it is.
  """

  value_fn: TensorFn
  domains: Mapping[str, Box]
  min_dim: int = 2
  scalable: bool = False
  kink: str = ""


def _same_box(box: Box) -> Mapping[str, Box]:
  return {domain: box for domain in DOMAINS}


FUNCTIONS: Mapping[str, FunctionSpec] = types.MappingProxyType(
  {
    "ackley": FunctionSpec(
      _ackley,
      {"paper": ((-5.0, 5.0),), "standard": ((-32.768, 32.768),)},
      min_dim=1,
      scalable=True,
      kink=(
        "sqrt(mean(x**2)) has a cone-shaped kink at the origin, its global "
        "minimiser"
      ),
    ),
    "beale": FunctionSpec(_beale, _same_box(((-4.5, 4.5),))),
    "booth": FunctionSpec(_booth, _same_box(((-10.0, 10.0),))),
    "bukin_n6": FunctionSpec(
      _bukin_n6,
      _same_box(((-15.0, -5.0), (-3.0, 3.0))),
      kink=(
        "sqrt(|x2 - 0.01 x1**2|) and |x1 + 10| have kinks along the parabola "
        "x2 = 0.01 x1**2 and the line x1 = -10, which cross at its global "
        "minimiser"
      ),
    ),
    "mccormick": FunctionSpec(
      _mccormick, _same_box(((-1.5, 4.0), (-3.0, 4.0)))
    ),
    "rosenbrock": FunctionSpec(
      _rosenbrock,
      {"paper": ((-2.0, 2.0),), "standard": ((-5.0, 10.0),)},
      scalable=True,
    ),
    "styblinski_tang": FunctionSpec(
      _styblinski_tang, _same_box(((-5.0, 5.0),)), min_dim=1, scalable=True
    ),
  }
)
PAPER_FUNCTIONS = tuple(FUNCTIONS)


def _check_choice(argument: str, value: str, choices: Collection[str]) -> None:
  if value not in choices:
    raise ValueError(
      f"Received an invalid value for `{argument}`, expected one of "
      f"{list(choices)}. Received: {argument}={value!r}"
    )


def _check_dim(name: str, spec: FunctionSpec, dim: int) -> int:
  dim = operator.index(dim)
  if spec.scalable and dim < spec.min_dim:
    raise ValueError(
      f"Received an invalid value for `dim`, expected an integer >= "
      f"{spec.min_dim} for {name}. Received: dim={dim}"
    )
  if not spec.scalable and dim != 2:
    raise ValueError(
      f"Received an invalid value for `dim`, expected 2: {name} is defined "
      f"only in 2 dimensions. Received: dim={dim}"
    )
  return dim


def get_function(
  name: str, dim: int = 2, domain: str = "paper"
) -> BenchmarkFunction:
  """Builds a benchmark function by name.

  Args:
    name: One of `FUNCTIONS`, e.g. "rosenbrock".
    dim: Input dimension. Must be 2 except for "ackley" and
      "styblinski_tang" (any dim >= 1) and "rosenbrock" (any dim >= 2).
    domain: One of `DOMAINS`: "paper" for the paper's boxes, "standard" for
      Surjanovic & Bingham's (see the module docstring).

  Returns:
    The function on the chosen box.

  Raises:
    ValueError: If `name` or `domain` is unknown, or `dim` is invalid for
      the function.
    TypeError: If `dim` is not an integer.
  """
  _check_choice("name", name, FUNCTIONS)
  _check_choice("domain", domain, DOMAINS)
  spec = FUNCTIONS[name]
  dim = _check_dim(name, spec, dim)
  box = np.broadcast_to(np.array(spec.domains[domain]), (dim, 2))
  return BenchmarkFunction(
    name=name,
    dim=dim,
    domain=domain,
    lower=box[:, 0],
    upper=box[:, 1],
    value_fn=spec.value_fn,
    kink=spec.kink,
  )
