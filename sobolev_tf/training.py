"""The Sobolev training step, written once for every trainer.

`SobolevModel.train_step` and `test_step`, the distillation `Distiller` and
the decoupled classifier's synthetic-gradient modules all train through
these functions:

* `sobolev_gradients`: the objective under a tape, the connected
  variables' gradients and the step's checks (input, targets, loss);
* `finite_updates.apply_updates`: the optimisers' updates, applied only if
  the whole step is finite, and the guard's record of why not;
* `sobolev_train_step` (the two above, for one optimiser) and
  `sobolev_test_step` (the objective and the checks, no update);
* `step_logs`: the step's terms over the global batch, by Keras's names.

A trainer whose step is not one objective (a decoupled classifier, whose
stages learn from synthetic gradients) calls `sobolev_gradients` for each
objective and `apply_updates` once for all its optimisers.
"""

import dataclasses
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple
import warnings

import keras
import tensorflow as tf

from sobolev_tf import distribute_utils
from sobolev_tf import finite_updates
from sobolev_tf import objective as objective_lib

BatchFn = Callable[[tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class SobolevGradients:
  """The objective's terms on a batch and the gradients of their total.

  Attributes:
    losses: the `SobolevLosses` of the batch.
    gradients: the gradients of the connected variables.
    variables: those variables.
    checks: the step's checks on this replica.
  """

  losses: objective_lib.SobolevLosses
  gradients: List[tf.Tensor]
  variables: List[tf.Variable]
  checks: finite_updates.StepChecks


@dataclasses.dataclass(frozen=True)
class Step:
  """What one step did.

  Attributes:
    losses: the `SobolevLosses` of the batch.
    finite: scalar bool: the step was applied (training) or its checks
      held (evaluation), on every replica.
  """

  losses: objective_lib.SobolevLosses
  finite: tf.Tensor


def loss_scale(optimizer) -> Optional[tf.Tensor]:
  """The loss scale of a float16 mixed-precision optimiser, or `None`.

  Derivatives are taken of the output times this scale (see
  `SobolevObjective`'s `derivative_scale`), so that their float16 backward
  pass does not underflow.
  """
  if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    return None
  if optimizer.built:
    return optimizer.dynamic_scale
  return tf.constant(optimizer.initial_scale, tf.float32)


def connected(
  gradients: Sequence[Optional[tf.Tensor]], variables: Sequence[tf.Variable]
) -> Tuple[list, list]:
  """The gradients that exist and their variables, as Keras filters them.

  A variable off the loss's path (a bias that does not move an input
  derivative, a layer of another output) gets no update, with a warning
  when the step is traced, as plain Keras `fit` does. If no variable has a
  gradient (every loss weight zero), every variable gets a zero gradient so
  that the step still counts.

  Args:
    gradients: from `tape.gradient`, `None` where not connected.
    variables: the variables they belong to.

  Returns:
    `(gradients, variables)` of the connected pairs.
  """
  pairs = [
    (g, v) for g, v in zip(gradients, variables, strict=True) if g is not None
  ]
  missing = [
    v.path if hasattr(v, "path") else v.name
    for g, v in zip(gradients, variables, strict=True)
    if g is None
  ]
  if missing:
    warnings.warn(
      f"Gradients do not exist for variables {missing} when minimizing the "
      "Sobolev objective; they are not updated.",
      stacklevel=3,
    )
  if not pairs:
    zeros = [tf.zeros(v.shape, tf.as_dtype(v.dtype)) for v in variables]
    return zeros, list(variables)
  return [g for g, _ in pairs], [v for _, v in pairs]


def sobolev_gradients(
  objective: objective_lib.SobolevObjective,
  fn: BatchFn,
  x: tf.Tensor,
  targets=None,
  *,
  variables: Sequence[tf.Variable],
  optimizer: Optional[keras.optimizers.Optimizer] = None,
  inputs=None,
  teacher: Optional[BatchFn] = None,
  sample_weight=None,
  seed: Optional[tf.Tensor] = None,
) -> SobolevGradients:
  """The objective on a batch, the gradients of its total, and the checks.

  Args:
    objective: the Sobolev objective.
    fn: the model as a function of the differentiated input `x`.
    x: the differentiated input batch `[B, in...]`.
    targets: array targets (see `SobolevObjective`), or `None` with a
      teacher.
    variables: the variables to train.
    optimizer: the optimiser that will apply the gradients; its loss
      scaling (mixed precision) applies to the total and the derivatives.
    inputs: the whole input when `x` is a part of it (every part is
      checked to be finite), else `None`.
    teacher: a differentiable callable of `x` supplying the targets.
    sample_weight: per-example weights, or a dict of them by term.
    seed: the step's stateless seed (stochastic mode).

  Returns:
    The `SobolevGradients` of the connected variables.
  """
  with tf.GradientTape() as tape:
    losses = objective(
      fn,
      x,
      targets,
      teacher=teacher,
      sample_weight=sample_weight,
      seed=seed,
      training=True,
      derivative_scale=loss_scale(optimizer),
      raise_nonfinite=False,
    )
    total = (
      losses.total if optimizer is None else optimizer.scale_loss(losses.total)
    )
  gradients, variables = connected(
    tape.gradient(total, list(variables)), list(variables)
  )
  checks = _checks(x if inputs is None else inputs, losses, optimizer)
  return SobolevGradients(losses, gradients, variables, checks)


def _checks(inputs, losses, optimizer) -> finite_updates.StepChecks:
  """The checks of a step on its inputs, targets and loss.

  An overflow of a scaled float16 loss is the loss-scale optimiser's to
  handle: it skips the step and halves the scale.
  """
  loss = tf.math.is_finite(losses.total)
  if loss_scale(optimizer) is not None:
    loss = tf.constant(True)
  floating = [
    t for t in tf.nest.flatten(inputs) if tf.as_dtype(t.dtype).is_floating
  ]
  return finite_updates.StepChecks(
    finite_updates.all_finite(floating), losses.targets_finite, loss
  )


def sobolev_train_step(
  objective: objective_lib.SobolevObjective,
  fn: BatchFn,
  x: tf.Tensor,
  targets=None,
  *,
  optimizer: keras.optimizers.Optimizer,
  variables: Sequence[tf.Variable],
  guard: finite_updates.StepGuard,
  **kwargs,
) -> Step:
  """One optimiser step on the Sobolev objective, applied only if finite.

  Args:
    objective: the Sobolev objective.
    fn: the model as a function of the differentiated input `x`.
    x: the differentiated input batch `[B, in...]`.
    targets: array targets, or `None` with a teacher.
    optimizer: applies the gradients.
    variables: the variables to train.
    guard: records why a step was not applied.
    **kwargs: `inputs`, `teacher`, `sample_weight`, `seed`, as in
      `sobolev_gradients`.

  Returns:
    The `Step`: the batch's losses and whether the step was applied.
  """
  result = sobolev_gradients(
    objective,
    fn,
    x,
    targets,
    variables=variables,
    optimizer=optimizer,
    **kwargs,
  )
  update = finite_updates.Update(optimizer, result.gradients, result.variables)
  applied = finite_updates.apply_updates(
    [update],
    result.checks,
    guard,
    check_gradients=loss_scale(optimizer) is None,
  )
  return Step(result.losses, applied)


def sobolev_test_step(
  objective: objective_lib.SobolevObjective,
  fn: BatchFn,
  x: tf.Tensor,
  targets=None,
  *,
  guard: finite_updates.StepGuard,
  optimizer: Optional[keras.optimizers.Optimizer] = None,
  inputs=None,
  **kwargs,
) -> Step:
  """The objective on a batch for evaluation, and its checks.

  Args:
    objective: the Sobolev objective.
    fn: the model as a function of the differentiated input `x`.
    x: the differentiated input batch.
    targets: array targets, or `None` with a teacher.
    guard: records why the batch does not count.
    optimizer: the training optimiser, for its loss scaling, if any.
    inputs: the whole input when `x` is a part of it.
    **kwargs: `teacher`, `sample_weight`, `seed` (`SobolevObjective`).

  Returns:
    The `Step`; `finite` says whether the batch's checks held everywhere.
  """
  losses = objective(
    fn,
    x,
    targets,
    training=False,
    derivative_scale=loss_scale(optimizer),
    raise_nonfinite=False,
    **kwargs,
  )
  checks = _checks(x if inputs is None else inputs, losses, optimizer)
  finite = finite_updates.finite_everywhere(checks.all())
  guard.record(finite, checks, tf.constant(True))
  return Step(losses, finite)


def step_logs(
  losses: objective_lib.SobolevLosses, balanced: bool
) -> Dict[str, tf.Tensor]:
  """The step's scalars over the global batch, by Keras's names.

  Args:
    losses: this replica's losses (its shares of the global means).
    balanced: whether to log the balanced terms too.

  Returns:
    `loss` (the total), `<term>_loss` in the data's units and with
    `balanced` `<term>_normalized_loss`, each summed over the replicas:
    every replica returns the global batch's value.
  """
  keys = list(losses.terms)
  names = ["loss"] + [f"{key}_loss" for key in keys]
  values = [losses.total] + [losses.terms[key] for key in keys]
  if balanced:
    names += [f"{key}_normalized_loss" for key in keys]
    values += [losses.normalized[key] for key in keys]
  return dict(zip(names, distribute_utils.all_reduce_sum(values), strict=True))
