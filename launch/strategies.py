"""The `tf.distribute` strategies a launcher runs under, and worker roles.

`make_strategy` builds a strategy from its name (`--strategy`); under a
multi-worker strategy `is_chief` says which task writes, `task_id` names
a worker, and `barrier` waits for every worker.
"""

from typing import Optional

import tensorflow as tf

STRATEGIES = (
  "default",
  "one_device",
  "mirrored",
  "multi_worker_mirrored",
  "tpu",
)


def make_strategy(
  name: str, num_gpus: int = 0, tpu: str = ""
) -> tf.distribute.Strategy:
  """Returns the `tf.distribute` strategy called `name`.

  Args:
    name: one of `STRATEGIES`.
    num_gpus: GPUs to use for `one_device` and `mirrored`; with 0, `mirrored`
      mirrors over every logical CPU.
    tpu: TPU name or address for `tpu`.

  Returns:
    The strategy.

  Raises:
    ValueError: for an unknown `name` or a negative `num_gpus`.
  """
  if name not in STRATEGIES:
    raise ValueError(
      f"Received an invalid value for `strategy`, expected one of "
      f"{list(STRATEGIES)}. Received: strategy={name!r}"
    )
  if num_gpus < 0:
    raise ValueError(
      "Received an invalid value for `num_gpus`, expected a non-negative "
      f"integer. Received: num_gpus={num_gpus}"
    )
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy("/gpu:0" if num_gpus else "/cpu:0")
  if name == "mirrored":
    if num_gpus:
      devices = [f"/gpu:{i}" for i in range(num_gpus)]
    else:
      devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)
  if name == "multi_worker_mirrored":
    return tf.distribute.MultiWorkerMirroredStrategy()
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
  tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this task writes checkpoints, summaries and results.

  The chief is the task of type `chief` if the cluster has one, else
  worker 0; without a cluster, the only task.
  """
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  return resolver.task_type == "chief" or (
    resolver.task_type == "worker"
    and resolver.task_id == 0
    and "chief" not in resolver.cluster_spec().as_dict()
  )


def task_id(strategy: tf.distribute.Strategy) -> Optional[int]:
  """This worker's index in a multi-worker cluster, or `None`."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return None
  return resolver.task_id


def is_distributed(strategy: tf.distribute.Strategy) -> bool:
  """Whether `strategy` has several replicas or is one worker of a cluster."""
  return strategy.num_replicas_in_sync > 1 or task_id(strategy) is not None


def barrier(strategy: tf.distribute.Strategy) -> None:
  """Returns on every worker once all have called it (an all-reduce).

  For example after the chief wrote a file the others then read.
  """
  strategy.reduce(
    "SUM",
    strategy.run(
      lambda: tf.distribute.get_replica_context().all_reduce(
        "SUM", tf.constant(1.0)
      )
    ),
    axis=None,
  )
