"""What the benchmarks measure: networks, step kinds and the objective's setup.

Plain Python and NumPy, no framework: both the TensorFlow side
(`tf_trainer`) and the JAX reference (`jax_reference`) build their networks,
targets and objectives from these specs, so the two run the same step.
"""

import dataclasses
import math
from typing import Any
from typing import Dict
from typing import Optional
from typing import Tuple

import numpy as np

# The data keys of `SobolevModel`'s array targets, by order.
TARGET_KEYS = ("value", "d1", "d2")
# Directions per example and step in stochastic mode.
NUM_PROJECTIONS = 1
LEARNING_RATE = 1e-3
# `jacobian_mode` values of `SobolevModel` (full derivatives in TF).
JACOBIAN_MODES = ("auto", "reverse", "forward")
# How the JAX reference builds full derivatives (see `jax_reference`).
FULL_METHODS = ("auto", "vmap", "unrolled")

# Layers, the last one being the output: ("dense", units),
# ("conv", filters, kernel_size, stride) or ("flatten",).
LayerSpec = Tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class StepKind:
  """One kind of training step: Sobolev order, mode, default activation."""

  name: str
  order: int
  mode: str
  activation: str


@dataclasses.dataclass(frozen=True)
class Workload:
  """A network, a batch size and the step kinds measured on them."""

  name: str
  label: str
  batch_size: int
  input_shape: Tuple[int, ...]
  layers: Tuple[LayerSpec, ...]
  kinds: Tuple[str, ...]
  # Whether the Sobolev steps distil a teacher instead of fitting arrays.
  teacher: bool = False
  # Hidden activation of every kind, instead of the kind's own.
  activation: Optional[str] = None

  @property
  def num_outputs(self) -> int:
    """Width of the output layer."""
    return self.layers[-1][1]

  def activation_for(self, kind: StepKind) -> str:
    """The hidden activation of `kind`'s network on this workload."""
    return self.activation or kind.activation


KINDS = {
  kind.name: kind
  for kind in (
    StepKind("plain", 0, "full", "relu"),
    StepKind("full_o1", 1, "full", "relu"),
    StepKind("stochastic_o1", 1, "stochastic", "relu"),
    # Order 2 needs a smooth activation: ReLU networks have zero Hessians.
    StepKind("stochastic_o2", 2, "stochastic", "softplus"),
    StepKind("full_o2", 2, "full", "softplus"),
  )
}


def objective_kwargs(kind: StepKind) -> Dict[str, Any]:
  """Every loss-relevant argument of `SobolevModel` for `kind`, explicit.

  The one place where the benchmarks and their tests configure the Sobolev
  objective: the TensorFlow side passes these to `SobolevModel` or
  `SobolevObjective`, and the JAX reference reads the same values, so that a
  change of the library's defaults cannot make the two compute different
  losses.

  Args:
    kind: the step kind.

  Returns:
    Keyword arguments `order`, `mode`, `num_projections`, `loss_weights`,
    `losses` and `balance` (the plain weighted sum, which the JAX reference
    computes).
  """
  return {
    "order": kind.order,
    "mode": kind.mode,
    "num_projections": NUM_PROJECTIONS,
    "loss_weights": (1.0,) * (kind.order + 1),
    "losses": "mean_squared_error",
    "balance": "none",
  }


def mlp(
  input_dim: int,
  num_outputs: int,
  batch_size: int,
  kinds: Tuple[str, ...] = tuple(KINDS),
  activation: Optional[str] = None,
  name: Optional[str] = None,
) -> Workload:
  """An MLP `input_dim`-256-256-`num_outputs` workload.

  Args:
    input_dim: input width d.
    num_outputs: output width.
    batch_size: examples per step.
    kinds: names of the step kinds it runs.
    activation: hidden activation of every kind, or None for each kind's.
    name: short name; defaults to `mlp_<d>_<outputs>`.

  Returns:
    The workload.

  Raises:
    ValueError: for a non-positive size or an unknown kind.
  """
  for argument, value in (
    ("input_dim", input_dim),
    ("num_outputs", num_outputs),
    ("batch_size", batch_size),
  ):
    if not isinstance(value, int) or value < 1:
      raise ValueError(
        f"Received an invalid value for `{argument}`, expected a positive "
        f"integer. Received: {argument}={value!r}"
      )
  unknown = sorted(set(kinds) - set(KINDS))
  if unknown:
    raise ValueError(f"Unknown step kinds {unknown}; known: {sorted(KINDS)}")
  label = f"MLP {input_dim}-256-256-{num_outputs}"
  if activation:
    label += f" {activation}"
  return Workload(
    name=name or f"mlp_{input_dim}_{num_outputs}",
    label=f"{label}, B={batch_size}",
    batch_size=batch_size,
    input_shape=(input_dim,),
    layers=(("dense", 256), ("dense", 256), ("dense", num_outputs)),
    kinds=tuple(kinds),
    activation=activation,
  )


WORKLOADS = {
  workload.name: workload
  for workload in (
    mlp(2, 1, 128, name="mlp_a"),
    mlp(
      32,
      8,
      256,
      ("plain", "full_o1", "stochastic_o1", "stochastic_o2"),
      name="mlp_b",
    ),
    # Fewer inputs than outputs: where `jacobian_mode="auto"` picks forward
    # mode for the full Jacobian (issue 18).
    mlp(2, 8, 64, ("plain", "full_o1"), "softplus", name="mlp_c"),
    Workload(
      "atari",
      "Atari convnet 84x84x4-6, B=64",
      64,
      (84, 84, 4),
      (
        ("conv", 32, 8, 4),
        ("conv", 64, 4, 2),
        ("conv", 64, 3, 1),
        ("flatten",),
        ("dense", 512),
        ("dense", 6),
      ),
      ("plain", "stochastic_o1"),
      teacher=True,
    ),
  )
}


def target_shapes(workload: Workload) -> Dict[str, Tuple[int, ...]]:
  """Shapes of the full array targets, keyed by `TARGET_KEYS`."""
  batch = (workload.batch_size, workload.num_outputs)
  return {
    "value": batch,  # [B, out]
    "d1": batch + workload.input_shape,  # [B, out, in...]
    "d2": batch + workload.input_shape * 2,  # [B, out, in..., in...]
  }


def target_bytes(workload: Workload, order: int) -> int:
  """Bytes of the float32 array targets up to `order`."""
  shapes = target_shapes(workload)
  return sum(4 * math.prod(shapes[key]) for key in TARGET_KEYS[: order + 1])


def array_targets(
  rng: np.random.Generator, workload: Workload, order: int
) -> Dict[str, np.ndarray]:
  """Standard normal float32 targets up to `order`, keyed by `TARGET_KEYS`."""
  shapes = target_shapes(workload)
  return {
    key: rng.standard_normal(shapes[key], dtype=np.float32)
    for key in TARGET_KEYS[: order + 1]
  }


def inputs(rng: np.random.Generator, workload: Workload) -> np.ndarray:
  """A standard normal float32 input batch, `[B, in...]`."""
  shape = (workload.batch_size,) + workload.input_shape
  return rng.standard_normal(shape, dtype=np.float32)
