"""Small helpers for code that runs inside a `tf.distribute` replica.

* `configure_logical_cpus`: split the CPU into logical devices, so that
  `MirroredStrategy` has several replicas without accelerators.
* `num_replicas`, `replica_id` and `replica_scale`: the current replica
  context, or one replica outside any strategy.
* `all_reduce_sum`: a sum over the replicas (the identity outside them).
* `step_seed`: the stateless seed of one training step on one replica.
"""

from typing import List
from typing import Sequence
from typing import Union

import tensorflow as tf


def configure_logical_cpus(count: int) -> None:
  """Splits the physical CPU into `count` logical devices.

  It must run before TensorFlow initialises its devices (before any op
  runs); a later call is a no-op when the devices are already what is
  asked for.

  Args:
    count: number of logical CPU devices wanted.

  Raises:
    ValueError: if `count` is not a positive integer.
    RuntimeError: if TensorFlow's devices were initialised with another
      number of logical CPUs.
  """
  if isinstance(count, bool) or not isinstance(count, int) or count < 1:
    raise ValueError(
      "Received an invalid value for `count`, expected a positive integer. "
      f"Received: count={count!r}"
    )
  physical = tf.config.list_physical_devices("CPU")
  try:
    tf.config.set_logical_device_configuration(
      physical[0], [tf.config.LogicalDeviceConfiguration()] * count
    )
  except RuntimeError:
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) != count:
      raise RuntimeError(
        f"TensorFlow already runs on {len(logical)} logical CPUs; "
        f"{count} were asked for. Call configure_logical_cpus before "
        "any TensorFlow op runs."
      ) from None


def num_replicas() -> int:
  """Replicas in sync in the current replica context (1 outside one)."""
  context = tf.distribute.get_replica_context()
  return context.num_replicas_in_sync if context else 1


def replica_id() -> Union[int, tf.Tensor]:
  """This replica's index in its group (0 outside a replica context)."""
  context = tf.distribute.get_replica_context()
  return 0 if context is None else context.replica_id_in_sync_group


def all_reduce_sum(values: Sequence[tf.Tensor]) -> List[tf.Tensor]:
  """Sums each tensor over the replicas of the current replica context."""
  context = tf.distribute.get_replica_context()
  if not values or context is None or context.num_replicas_in_sync == 1:
    return list(values)
  return context.all_reduce(tf.distribute.ReduceOp.SUM, list(values))


def replica_scale() -> float:
  """`1 / num_replicas()`: what a loss is multiplied by inside a replica.

  Each replica averages its loss over its own examples; scaled so, the sum
  of the replicas' gradients is the gradient of the global batch's mean,
  as Keras losses do.
  """
  return 1.0 / num_replicas()


def step_seed(seed: int, step: Union[int, tf.Tensor]) -> tf.Tensor:
  """The stateless seed `[2]` of training step `step` on this replica.

  It depends only on `seed`, `step` and the replica's index, so a resumed
  run draws the numbers of an uninterrupted one, and replicas draw
  independent ones.

  Args:
    seed: the run's seed.
    step: the global step (a Python int or a scalar tensor, e.g. an
      optimiser's `iterations`).

  Returns:
    `stateless_fold_in([seed, step], replica_id())`.
  """
  base = tf.stack(
    [
      tf.constant(seed, tf.int64),
      tf.cast(tf.convert_to_tensor(step), tf.int64),
    ]
  )
  return tf.random.experimental.stateless_fold_in(base, replica_id())
