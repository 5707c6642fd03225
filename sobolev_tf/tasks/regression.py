"""Regression on optimisation benchmark functions (paper Sec. 4.1, Fig. 2-3).

One run (`RunConfig`; `regression_task.RegressionTask` runs it in
`launch/loop.py`) fits an MLP to `train_size` uniform samples of a benchmark
function with one training method and scores it on a fixed held-out sample.

Methods:
* `regular`: values only (L2).
* `sobolev`: values and full input gradients (L2 + L2), the paper's method.
* `stochastic`: values and one random projection of the gradient per example.
* `sobolev2`: values, gradients and Hessians (full); smooth functions only.
* `stochastic2`: values, projected gradients and Hessian-vector products
  projected again (one random direction per example and step); for scalar
  functions the order-1 projection is the full gradient, and the order-2
  term costs one Hessian-vector product instead of `d`.
* `sobolev_fd`: like `sobolev`, with gradients from central finite
  differences of the function treated as a black-box NumPy callable.
* `sobolev_missing`: like `sobolev`, each gradient entry unknown with
  probability 1/2 (NaN, `nonfinite_targets="missing"`): a simulator that
  gives some partials and not others.
* `directional`: the derivative along one random unit direction per
  example, fixed in the data (`d1_directions`, `d1_directional`): what
  forward-mode differentiation along chosen directions gives.

Units. The functions span many orders of magnitude (Rosenbrock reaches 1e6 on
its domain), so the network works in normalised units inside: the input box is
mapped to [-1, 1]^d and the value standardised with the training set's mean
and spread (`keras.layers.Normalization` layers at both ends), while the model
as a whole maps original inputs to original outputs, so its input derivatives
are in original units. The losses are the paper's (`gradient_loss="sum"`): L2
on values, and L2 on gradients summed over the input dimensions,
||grad m - grad f||^2 (`"mean"` averages over them, Keras's convention).
With the library's default balance (`balance="target_scale"`) each term is
relative to its targets' scale, so weight 1 on each needs no per-function
tuning; `balance="none"` is the plain sum, divided by the training values'
variance (a common constant, so the terms keep the paper's raw balance while
the loss is O(1) for the optimiser's gradient clipping): the setting of the
earlier measurements. Test errors are reported in original units, as means
over points and input dimensions.
"""

import dataclasses
import functools
from typing import Any
from typing import Dict
from typing import Optional
from typing import Tuple

import numpy as np
import tensorflow as tf

from sobolev_tf import checks
from sobolev_tf import config as config_lib
from sobolev_tf import finite_differences
from sobolev_tf.tasks import functions
from sobolev_tf.tasks import input_pipeline

METHODS = {
  "regular": dict(order=0),
  "sobolev": dict(order=1, mode="full"),
  "stochastic": dict(order=1, mode="stochastic"),
  "sobolev2": dict(order=2, mode="full"),
  "stochastic2": dict(order=2, mode="stochastic"),
  "sobolev_fd": dict(order=1, mode="full"),
  "sobolev_missing": dict(order=1, mode="full"),
  "directional": dict(order=1, mode="full"),
}
# The methods that train on every partial derivative of every point.
WHOLE_GRADIENT_METHODS = frozenset(
  ("sobolev", "stochastic", "sobolev2", "stochastic2", "sobolev_fd")
)
GRADIENT_LOSSES = {"sum": "sum_squared_error", "mean": "mean_squared_error"}
TEST_SEED_OFFSET = 1_000_003
VALIDATION_SEED_OFFSET = 2_000_003


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """One training run of the sweep.

  Attributes:
    function: name in `functions.FUNCTIONS`.
    dim: input dimension.
    train_size: number of training points.
    method: key of `METHODS`.
    seed: seed of the training sample, initialisation and batches.
    steps: optimiser steps.
    batch_size: global batch size (capped at `train_size`).
    learning_rate: Adam step size.
    activation: hidden activation; `sobolev2` needs a smooth one.
    derivative_weight: multiplies the derivative terms' weights.
    hidden_sizes: widths of the hidden layers.
    test_size: number of held-out points (sampled with a fixed seed).
    domain: `"paper"` (the paper's boxes) or `"standard"` (Surjanovic and
      Bingham's), see `functions`.
    balance: `SobolevConfig.balance`; `"none"` is the earlier setting (the
      plain sum over the value variance).
    gradient_loss: `"sum"` (the paper's) or `"mean"` over input dimensions.
    balance_floor: `SobolevConfig.balance_floor`.
    validation_fraction: share of the `train_size` points held out of
      training to select the run's best weights by the validation error of
      what the method trains on (`val_objective`: values, and gradients for
      `WHOLE_GRADIENT_METHODS`); 0 trains on every point and keeps the last
      weights.
    cycle_steps: length of the cosine learning-rate cycle: a run of
      `steps` has `steps // cycle_steps` cycles (at least one), each ending
      at rate 0 and restarting (SGDR, Loshchilov and Hutter 2017). 0 (the
      default): one cosine over the whole run.
  """

  function: str
  dim: int
  train_size: int
  method: str
  seed: int
  steps: int = 5000
  batch_size: int = 32
  learning_rate: float = 1e-3
  activation: str = "relu"
  derivative_weight: float = 1.0
  hidden_sizes: Tuple[int, ...] = (256, 256)
  test_size: int = 10_000
  domain: str = "paper"
  balance: str = "target_scale"
  gradient_loss: str = "sum"
  balance_floor: float = config_lib.SobolevConfig.balance_floor
  validation_fraction: float = 0.0
  cycle_steps: int = 0

  def __post_init__(self):
    for name, choices in (
      ("method", METHODS),
      ("domain", functions.DOMAINS),
      ("balance", config_lib.BALANCES),
      ("gradient_loss", GRADIENT_LOSSES),
    ):
      if getattr(self, name) not in choices:
        raise ValueError(
          f"Received an invalid value for `{name}`, expected one of "
          f"{list(choices)}. Received: {name}={getattr(self, name)!r}"
        )
    checks.positive_ints(
      dim=self.dim,
      train_size=self.train_size,
      steps=self.steps,
      batch_size=self.batch_size,
      test_size=self.test_size,
    )
    checks.non_negative_ints(seed=self.seed, cycle_steps=self.cycle_steps)
    checks.positive_numbers(learning_rate=self.learning_rate)
    checks.non_negative_numbers(
      derivative_weight=self.derivative_weight, balance_floor=self.balance_floor
    )
    if self.validation_fraction:
      checks.fraction("validation_fraction", self.validation_fraction)
      if self.train_size < 2:
        raise ValueError(
          "Received a `validation_fraction` for a single training point; "
          "hold out points from a sample of 2 or more. Received: "
          f"train_size={self.train_size}"
        )

  @property
  def cycles(self) -> int:
    """Cosine cycles of the learning-rate schedule (`cycle_steps`)."""
    if not self.cycle_steps:
      return 1
    return max(1, self.steps // self.cycle_steps)

  @property
  def validation_size(self) -> int:
    """Points held out of the `train_size` for validation (0 without)."""
    if not self.validation_fraction:
      return 0
    count = round(self.validation_fraction * self.train_size)
    return min(max(count, 1), self.train_size - 1)

  @property
  def run_id(self) -> str:
    """A name unique within a sweep, usable as a directory name."""
    settings = "" if self.activation == "relu" else f"-{self.activation}"
    if self.derivative_weight != 1:
      settings += f"-w{self.derivative_weight:g}"
    for name, default in (
      ("domain", "paper"),
      ("balance", "target_scale"),
      ("gradient_loss", "sum"),
    ):
      if getattr(self, name) != default:
        settings += f"-{getattr(self, name)}"
    if self.balance_floor != RunConfig.balance_floor:
      settings += f"-f{self.balance_floor:g}"
    if self.validation_fraction:
      settings += f"-v{self.validation_fraction:g}"
    if self.cycle_steps != RunConfig.cycle_steps:
      settings += f"-c{self.cycle_steps}"
    return (
      f"{self.function}-d{self.dim}-n{self.train_size}-{self.method}"
      f"{settings}-s{self.seed}"
    )

  @property
  def order(self) -> int:
    """The Sobolev order of the method."""
    return METHODS[self.method]["order"]


def targets(
  function: functions.BenchmarkFunction,
  x: np.ndarray,
  order: int,
  finite_difference: bool = False,
) -> Dict[str, np.ndarray]:
  """Values and derivatives of `function` at `x`, in the data convention.

  Args:
    function: the benchmark function.
    x: points `[B, d]`.
    order: highest derivative order to include.
    finite_difference: estimate the gradient by central differences of the
      function as a black box instead of the analytic one.

  Returns:
    `{"value": [B, 1], "d1": [B, 1, d], "d2": [B, 1, d, d]}` up to `order`,
    float32.
  """
  x64 = np.asarray(x, np.float64)
  result = {"value": function.value(x64).numpy()}
  if order >= 1:
    if finite_difference:
      result["d1"] = finite_differences.jacobian(
        lambda points: function.value(points).numpy(), x64
      )
    else:
      result["d1"] = function.gradient(x64).numpy()[:, None, :]
  if order >= 2:
    result["d2"] = function.hessian(x64).numpy()[:, None]
  return {key: value.astype(np.float32) for key, value in result.items()}


def train_dataset(
  x: np.ndarray,
  y: Dict[str, np.ndarray],
  batch_size: int,
  seed: int,
  start_step: int = 0,
  input_context: Optional[tf.distribute.InputContext] = None,
) -> tf.data.Dataset:
  """Endless shuffled `(x, y)` batches from global step `start_step` on.

  `input_pipeline.shuffled_batches` of the training sample, with the batch
  capped at the sample's size.

  Args:
    x: inputs `[N, d]`.
    y: targets, each `[N, ...]`.
    batch_size: global batch size, capped at `N`.
    seed: seed of the permutations.
    start_step: index of the first global batch.
    input_context: from `strategy.distribute_datasets_from_function`.

  Returns:
    Batches of `min(batch_size, N)` examples, or per-replica slices of them.
  """
  return input_pipeline.shuffled_batches(
    (x, y), min(batch_size, len(x)), seed, start_step, input_context
  )


def make_data(
  config: RunConfig, function: Optional[functions.BenchmarkFunction] = None
) -> Tuple[Any, Any]:
  """The run's training sample with its targets, and the fixed test set."""
  function = function or get_function(config)
  x_train = function.sample(config.train_size, seed=config.seed)
  y_train = targets(
    function,
    x_train,
    config.order,
    finite_difference=config.method == "sobolev_fd",
  )
  rng = np.random.default_rng([config.seed, TEST_SEED_OFFSET])
  if config.method == "sobolev_missing":
    unknown = rng.random(y_train["d1"].shape) < 0.5
    y_train["d1"] = np.where(unknown, np.nan, y_train["d1"]).astype(np.float32)
  if config.method == "directional":
    y_train = _along_random_directions(y_train, rng)
  test = _test_set(config.function, config.dim, config.domain, config.test_size)
  return (x_train, y_train), test


@functools.lru_cache(maxsize=16)
def _test_set(name: str, dim: int, domain: str, size: int):
  """A function's fixed test points and targets, made once per process.

  Every run of a function scores on the same points; the arrays are
  read-only, as they are shared.
  """
  function = functions.get_function(name, dim, domain)
  x = function.sample(size, seed=TEST_SEED_OFFSET)
  y = targets(function, x, 1)
  for array in (x, *y.values()):
    array.setflags(write=False)
  return x, y


def split_validation(
  config: RunConfig, x: np.ndarray, y: Dict[str, np.ndarray]
):
  """The training sample without and with its held-out validation points.

  Args:
    config: the run (its `validation_size` and seed).
    x: the training points `[N, d]`.
    y: their targets.

  Returns:
    `((x, y), validation)`: the points trained on, and the held-out ones
    as `(x, y)`, or `None` without a validation split.
  """
  count = config.validation_size
  if not count:
    return (x, y), None
  rng = np.random.default_rng([config.seed, VALIDATION_SEED_OFFSET])
  held = np.zeros(len(x), bool)
  held[rng.choice(len(x), count, replace=False)] = True

  def part(mask):
    return x[mask], {key: value[mask] for key, value in y.items()}

  return part(~held), part(held)


def get_function(config: RunConfig) -> functions.BenchmarkFunction:
  """The run's function on its domain."""
  return functions.get_function(config.function, config.dim, config.domain)


def _along_random_directions(
  y: Dict[str, np.ndarray], rng: np.random.Generator
) -> Dict[str, np.ndarray]:
  """`y` with `d1` replaced by the derivative along one unit direction."""
  gradient = y.pop("d1")  # [B, 1, d]
  directions = rng.normal(size=(len(gradient), 1, gradient.shape[-1]))
  directions /= np.linalg.norm(directions, axis=-1, keepdims=True)  # [B, 1, d]
  return {
    **y,
    "d1_directions": directions.astype(np.float32),
    "d1_directional": np.einsum("boi,bki->bok", gradient, directions).astype(
      np.float32
    ),  # [B, 1, 1]
  }
