"""Times one benchmark row in TensorFlow and JAX, alternating the frameworks.

Measurement: a warm-up repeat per trainer (compilation included, its time
is reported), then R timed repeats of N steps, rotating which trainer goes
first, so that load from other processes falls on all alike. The JAX
reference runs once per workload and step kind; each TensorFlow variant
(full-Jacobian mode, XLA on or off) is one row beside it.
"""

import dataclasses
import gc
import statistics
import time
from typing import Any
from typing import Callable
from typing import List
from typing import Optional
from typing import Sequence

from absl import logging
import jax
import keras
import numpy as np

from benchmarks import jax_reference
from benchmarks import jax_trainer
from benchmarks import tf_trainer
from benchmarks import workloads

# Relative difference of the first losses above which the check says so.
CHECK_TOLERANCE = 1e-4


@dataclasses.dataclass
class Row:
  """The measurements of one workload, step kind and TensorFlow variant."""

  workload: workloads.Workload
  kind: workloads.StepKind
  variant: tf_trainer.TfVariant
  tf_seconds: List[float]
  jax_seconds: List[float]
  tf_warm_up: float
  jax_warm_up: float
  steps: int
  check: Optional[float]

  @property
  def tf_rate(self) -> float:
    """Median TF steps per second."""
    return self.steps / statistics.median(self.tf_seconds)

  @property
  def jax_rate(self) -> float:
    """Median JAX steps per second."""
    return self.steps / statistics.median(self.jax_seconds)


def variants_for(
  kind: workloads.StepKind,
  jacobian_modes: Sequence[str],
  xla_settings: Sequence[bool],
) -> List[tf_trainer.TfVariant]:
  """The TF variants worth running for `kind`.

  The Jacobian mode only matters for full derivatives, so other kinds run
  `auto` alone.

  Args:
    kind: the step kind.
    jacobian_modes: modes to try on full Sobolev steps.
    xla_settings: XLA on (True) and/or off (False).

  Returns:
    One variant per combination, XLA settings outermost.
  """
  modes = jacobian_modes if kind.mode == "full" and kind.order > 0 else ["auto"]
  return [
    tf_trainer.TfVariant(mode, xla) for xla in xla_settings for mode in modes
  ]


def _is_deterministic(
  workload: workloads.Workload, kind: workloads.StepKind
) -> bool:
  """Whether the loss is independent of the random directions."""
  if kind.order == 0 or kind.mode == "full":
    return True
  return kind.order == 1 and workload.num_outputs == 1 and not workload.teacher


def _timed(run: Callable[[], Any]) -> float:
  start = time.perf_counter()
  run()
  return time.perf_counter() - start


def _trainers(workload, kind, variants, steps, seed, method):
  """The JAX trainer and one TF trainer per variant, on the same weights."""
  rng = np.random.default_rng(seed)
  x = workloads.inputs(rng, workload)  # [B, in...]
  activation = workload.activation_for(kind)
  teacher, targets = None, None
  if workload.teacher and kind.order > 0:
    teacher = tf_trainer.keras_net(workload, activation, seed + 1)
    aux = {"teacher": jax_reference.params_from_weights(teacher.get_weights())}
  else:
    targets = workloads.array_targets(rng, workload, kind.order)
    aux = targets
  weights = tf_trainer.keras_net(workload, activation, seed).get_weights()
  jax_side = jax_trainer.JaxTrainer(
    workload,
    kind,
    jax_reference.params_from_weights(weights),
    x,
    aux,
    steps,
    seed,
    method,
  )
  tf_sides = [
    tf_trainer.TfTrainer(
      tf_trainer.keras_net(workload, activation, seed),
      kind,
      x,
      targets,
      teacher,
      steps,
      seed,
      variant,
    )
    for variant in variants
  ]
  return jax_side, tf_sides


def _loss_check(tf_loss: float, jax_loss: float, name: str) -> float:
  check = abs(tf_loss - jax_loss) / max(abs(jax_loss), 1e-30)
  if check > CHECK_TOLERANCE:
    logging.warning(
      "%s: first losses differ: TF %g, JAX %g.", name, tf_loss, jax_loss
    )
  return check


def _time_rotating(trainers: Sequence[Any], repeats: int) -> List[List[float]]:
  """Seconds of each trainer's `run`, `repeats` times, rotating the order."""
  seconds = [[] for _ in trainers]
  for repeat in range(repeats):
    first = repeat % len(trainers)
    for index in list(range(first, len(trainers))) + list(range(first)):
      seconds[index].append(_timed(trainers[index].run))
  return seconds


def _log(name: str, row: Row) -> None:
  logging.info(
    "%s (%s): TF %.1f steps/s, JAX %.1f steps/s (warm-up %.1f s, %.1f s).",
    name,
    row.variant.label or "auto, XLA",
    row.tf_rate,
    row.jax_rate,
    row.tf_warm_up,
    row.jax_warm_up,
  )


def measure(
  workload: workloads.Workload,
  kind: workloads.StepKind,
  variants: Sequence[tf_trainer.TfVariant],
  steps: int,
  repeats: int,
  seed: int,
  method: str,
) -> List[Row]:
  """Warms up and times one workload and step kind in both frameworks.

  Args:
    workload: network and batch size.
    kind: the step kind.
    variants: the TF variants to time beside the JAX reference.
    steps: steps per repeat.
    repeats: timed repeats per trainer.
    seed: seed of weights, data and directions.
    method: how JAX builds full derivatives (`workloads.FULL_METHODS`).

  Returns:
    One row per TF variant, sharing the JAX measurements.
  """
  name = f"{workload.name}/{kind.name}"
  jax_side, tf_sides = _trainers(workload, kind, variants, steps, seed, method)
  tf_loss = None
  if _is_deterministic(workload, kind):
    tf_loss = tf_sides[0].initial_loss()
  tf_warm_ups = [_timed(side.run) for side in tf_sides]
  start = time.perf_counter()
  jax_loss = jax_side.run()
  jax_warm_up = time.perf_counter() - start
  check = None if tf_loss is None else _loss_check(tf_loss, jax_loss, name)

  seconds = _time_rotating([jax_side] + tf_sides, repeats)
  rows = [
    Row(
      workload,
      kind,
      variant,
      tf_seconds,
      seconds[0],
      tf_warm_up,
      jax_warm_up,
      steps,
      check,
    )
    for variant, tf_seconds, tf_warm_up in zip(
      variants, seconds[1:], tf_warm_ups, strict=True
    )
  ]
  for row in rows:
    _log(name, row)
  del jax_side, tf_sides
  keras.backend.clear_session()
  jax.clear_caches()
  gc.collect()
  return rows
