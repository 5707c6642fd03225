"""Training-step helpers shared by `SobolevModel` and the Sonnet trainers.

* `apply_if_finite`: applies an optimiser step only when the step is
  finite, under any `tf.distribute` strategy and under XLA (which drops
  assertions), so that no NaN or Inf reaches the weights or the optimiser's
  state.
* `clip_across_replicas`: clips the sum of the replicas' gradients, as one
  device would.
* `step_seed`: the stateless seed of a step's random directions.
* `all_reduce_sum`, `replica_count`: the replica context's reductions,
  identities outside a strategy.
"""

from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple
import warnings

import keras
import tensorflow as tf


def replica_count() -> int:
  """Replicas of the current strategy (1 outside one)."""
  return tf.distribute.get_strategy().num_replicas_in_sync


def all_reduce_sum(values: List[tf.Tensor]) -> List[tf.Tensor]:
  """Sums each tensor over the replicas of the current replica context."""
  context = tf.distribute.get_replica_context()
  if not values or context is None or context.num_replicas_in_sync == 1:
    return list(values)
  return context.all_reduce(tf.distribute.ReduceOp.SUM, list(values))


def replica_id() -> tf.Tensor:
  """This replica's index in its group (0 outside a strategy)."""
  context = tf.distribute.get_replica_context()
  return 0 if context is None else context.replica_id_in_sync_group


def step_seed(seed: int, step: tf.Tensor) -> tf.Tensor:
  """Stateless seed `[2]` of a step: new per step and per replica.

  Args:
    seed: the run's base seed.
    step: the step number (e.g. an optimiser's `iterations`).

  Returns:
    An int64 seed, the same for the same `(seed, step, replica)`.
  """
  pair = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
  return tf.random.experimental.stateless_fold_in(pair, replica_id())


def all_finite(tensors: Sequence[Optional[tf.Tensor]]) -> tf.Tensor:
  """Whether every entry of every tensor (`None`s skipped) is finite."""
  checks = [
    tf.reduce_all(tf.math.is_finite(t)) for t in tensors if t is not None
  ]
  return tf.reduce_all(checks) if checks else tf.constant(True)


def finite_everywhere(finite: tf.Tensor) -> tf.Tensor:
  """True only if `finite` holds on every replica (all must agree to skip)."""
  failures = all_reduce_sum([1.0 - tf.cast(finite, tf.float32)])[0]
  return tf.equal(failures, 0.0)


def clip_across_replicas(
  optimizer: keras.optimizers.Optimizer, gradients: List[tf.Tensor]
) -> List[tf.Tensor]:
  """Clips the sum of the replicas' gradients, as one replica would.

  Keras 3's TensorFlow optimiser clips each replica's gradient and then sums
  them, so with several replicas a clipping optimiser (`clipnorm`,
  `global_clipnorm` or `clipvalue`) steps differently than on one device.
  With several replicas and clipping on, this sums the gradients first,
  clips the sum with the optimiser's own setting and gives each replica a
  `1 / num_replicas` share: the optimiser's clipping leaves the shares alone
  (each is within the limit divided by the number of replicas) and its sum
  restores the clipped total.

  Args:
    optimizer: the model's optimiser.
    gradients: this replica's gradients.

  Returns:
    This replica's share of the clipped total, or `gradients` unchanged
    with one replica or no clipping.
  """
  context = tf.distribute.get_replica_context()
  replicas = context.num_replicas_in_sync if context else 1
  if replicas == 1 or not (
    optimizer.clipnorm or optimizer.global_clipnorm or optimizer.clipvalue
  ):
    return gradients
  total = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
  # The order of keras.optimizers.Optimizer._clip_gradients.
  if optimizer.clipnorm:
    total = [tf.clip_by_norm(g, optimizer.clipnorm) for g in total]
  elif optimizer.global_clipnorm:
    total, _ = tf.clip_by_global_norm(total, optimizer.global_clipnorm)
  else:
    limit = optimizer.clipvalue
    total = [tf.clip_by_value(g, -limit, limit) for g in total]
  return [g / replicas for g in total]


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
      stacklevel=2,
    )
  if not pairs:
    return [tf.zeros(v.shape, tf.as_dtype(v.dtype)) for v in variables], list(
      variables
    )
  return [g for g, _ in pairs], [v for _, v in pairs]


def apply_if_finite(
  optimizer: keras.optimizers.Optimizer,
  gradients: List[tf.Tensor],
  variables: List[tf.Variable],
  finite: tf.Tensor,
) -> None:
  """`optimizer.apply(gradients, variables)` only where `finite` is true.

  A skipped step leaves the weights, the optimiser's slots and its
  `iterations` as they were. `finite` must be the same on every replica
  (see `finite_everywhere`). The condition runs in a cross-replica context
  where the strategy needs one, as Keras's `LossScaleOptimizer` does.

  Args:
    optimizer: a built or unbuilt Keras optimiser.
    gradients: this replica's gradients.
    variables: the variables they update.
    finite: scalar bool.
  """
  if not optimizer.built:
    optimizer.build(variables)
  context = tf.distribute.get_replica_context()
  if (
    context is None
    or tf.__internal__.distribute.strategy_supports_no_merge_call()
  ):
    tf.cond(finite, lambda: optimizer.apply(gradients, variables), lambda: None)
    return

  def cross_replica(distribution, gradients, finite):
    first = distribution.experimental_local_results(finite)[0]

    def apply():
      distribution.extended.call_for_each_replica(
        optimizer.apply, args=(gradients, variables)
      )

    tf.cond(first, apply, lambda: None)

  context.merge_call(cross_replica, args=(gradients, finite))
