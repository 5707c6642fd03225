"""Trains the JAX reference: Adam as Keras writes it, one jitted step.

The whole step, Adam included, is one `jax.jit` program (parameters and
optimizer state donated), called from a Python loop: one compiled program per
step, as on the TensorFlow side (a `lax.scan` over steps would fuse steps,
which Keras cannot). Dispatch is asynchronous; `JaxTrainer.run` ends with
`block_until_ready`. `tests/jax_trainer_test.py` checks Adam and a whole step
against Keras and `SobolevModel`.
"""

from typing import Any
from typing import Callable
from typing import Dict
from typing import Mapping
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import jax_reference
from benchmarks import workloads

Params = jax_reference.Params


def adam_init(params: Params) -> Dict[str, Any]:
  """Keras Adam's state: step count, first and second moments."""
  # Separate buffers for m and v: the step donates them.
  return {
    "step": jnp.zeros([], jnp.int32),
    "m": jax.tree.map(jnp.zeros_like, params),
    "v": jax.tree.map(jnp.zeros_like, params),
  }


def adam_update(
  gradients: Params,
  state: Dict[str, Any],
  params: Params,
  learning_rate: float = workloads.LEARNING_RATE,
  beta_1: float = 0.9,
  beta_2: float = 0.999,
  epsilon: float = 1e-7,
) -> Tuple[Params, Dict[str, Any]]:
  """One step of `keras.optimizers.Adam`, as Keras writes it."""
  step = state["step"] + 1
  t = step.astype(jnp.float32)
  alpha = learning_rate * jnp.sqrt(1 - beta_2**t) / (1 - beta_1**t)
  m = jax.tree.map(
    lambda m, g: m + (g - m) * (1 - beta_1), state["m"], gradients
  )
  v = jax.tree.map(
    lambda v, g: v + (jnp.square(g) - v) * (1 - beta_2), state["v"], gradients
  )
  params = jax.tree.map(
    lambda p, m, v: p - alpha * m / (jnp.sqrt(v) + epsilon), params, m, v
  )
  return params, {"step": step, "m": m, "v": v}


def train_step(
  loss: Callable[..., jax.Array],
  workload: workloads.Workload,
  objective: Mapping[str, Any],
  seed: int,
) -> Callable:
  """Jitted `(params, adam, x, aux) -> (params, adam, loss before update)`."""
  order, mode, _ = jax_reference.objective_settings(objective)
  stochastic = mode == "stochastic" and order > 0

  def step(params, adam, x, aux):
    directions = None
    if stochastic:
      # New directions every step, from the step number, as SobolevModel.
      key = jax.random.fold_in(jax.random.key(seed), adam["step"])
      directions = jax_reference.sample_directions(
        key, x, workload.num_outputs, order
      )
    value, gradients = jax.value_and_grad(loss)(params, x, aux, directions)
    params, adam = adam_update(gradients, adam, params)
    return params, adam, value

  return jax.jit(step, donate_argnums=(0, 1))


class JaxTrainer:
  """The reference step, its parameters, Adam state and batch."""

  def __init__(
    self,
    workload: workloads.Workload,
    kind: workloads.StepKind,
    params: Params,
    x: np.ndarray,
    aux: Mapping[str, Any],
    steps: int,
    seed: int,
    method: str = "auto",
  ):
    """Builds the jitted step.

    Args:
      workload: the network and batch.
      kind: the step kind.
      params: initial parameters (copied: the step donates its buffers).
      x: the input batch, `[B, in...]`.
      aux: `{"teacher": params}` or full array targets.
      steps: training steps per `run`.
      seed: seed of the random directions.
      method: how full derivatives are built, one of
        `workloads.FULL_METHODS`.
    """
    objective = workloads.objective_kwargs(kind)
    self.steps = steps
    self.params = jax.tree.map(jnp.array, params)
    self.adam = adam_init(self.params)
    self.x = jnp.asarray(x)
    self.aux = jax.tree.map(jnp.asarray, dict(aux))
    loss = jax_reference.sobolev_loss(
      workload,
      workload.activation_for(kind),
      objective,
      teacher="teacher" in aux,
      method=method,
    )
    self.step = train_step(loss, workload, objective, seed)

  def run(self) -> float:
    """Runs `steps` training steps; returns the first one's loss."""
    params, adam = self.params, self.adam
    first = None
    for _ in range(self.steps):
      params, adam, loss = self.step(params, adam, self.x, self.aux)
      if first is None:
        first = loss
    jax.block_until_ready((params, adam))
    self.params, self.adam = params, adam
    return float(first)
