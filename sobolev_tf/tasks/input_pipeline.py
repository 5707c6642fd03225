"""Resumable training batches of in-memory arrays, under any strategy.

`shuffled_batches` is the experiments' one training pipeline for data that
fits in memory (regression samples, scikit-learn's digits, recorded Atari
states): pass `p` over the data is the permutation drawn from `(seed, p)` by
a stateless shuffle, so global batch `k` depends only on `seed` and `k`. A
run resumed at step `start_step` continues with exactly the batches it would
have seen, and every strategy sees the same global batches.
"""

from typing import Any
from typing import Optional

import tensorflow as tf

from sobolev_tf import checks


def _check(data: Any, batch_size: int, start_step: int) -> int:
  """The number of examples of `data`, after checking the arguments."""
  lengths = {len(array) for array in tf.nest.flatten(data)}
  if len(lengths) != 1 or 0 in lengths:
    raise ValueError(
      "Expected `data` to hold non-empty arrays of one length. Received "
      f"lengths: {sorted(lengths)}"
    )
  checks.positive_ints(batch_size=batch_size)
  checks.non_negative_ints(start_step=start_step)
  return lengths.pop()


def shuffled_batches(
  data: Any,
  batch_size: int,
  seed: int,
  start_step: int = 0,
  input_context: Optional[tf.distribute.InputContext] = None,
) -> tf.data.Dataset:
  """An endless dataset of shuffled batches of `data`, from any step on.

  Args:
    data: an array or tensor `[N, ...]`, or a nest (tuple, dict) of them
      with the same first dimension.
    batch_size: global batch size (a batch larger than `N` spans passes).
    seed: seed of the permutations.
    start_step: index of the first global batch.
    input_context: from `strategy.distribute_datasets_from_function`: the
      global batch is cut into per-replica slices, handed to the replicas
      in order, and this input pipeline keeps its own replicas' slices.

  Returns:
    Batches of `batch_size` examples (per-replica slices of them with an
    `input_context`), with the structure of `data`.

  Raises:
    ValueError: for an empty `data`, arrays of different lengths, a
      `batch_size` below 1, a negative `start_step`, or a global batch that
      does not divide among the replicas.
  """
  n = _check(data, batch_size, start_step)
  replicas, per_replica = 1, batch_size
  if input_context is not None:
    replicas = input_context.num_replicas_in_sync
    per_replica = input_context.get_per_replica_batch_size(batch_size)

  def permutation(epoch: tf.Tensor) -> tf.data.Dataset:
    order = tf.random.experimental.stateless_shuffle(
      tf.range(n, dtype=tf.int64),
      seed=tf.stack([tf.constant(seed, tf.int64), epoch]),
    )
    return tf.data.Dataset.from_tensor_slices(order)

  # Skipping index slices, before any gather, makes resuming cheap.
  slices = (
    tf.data.Dataset.counter()
    .flat_map(permutation)
    .batch(per_replica, drop_remainder=True)
    .skip(start_step * replicas)
  )
  if input_context is not None:
    slices = slices.shard(
      input_context.num_input_pipelines, input_context.input_pipeline_id
    )
  tensors = tf.nest.map_structure(tf.convert_to_tensor, data)
  return slices.map(
    lambda index: tf.nest.map_structure(
      lambda tensor: tf.gather(tensor, index), tensors
    )
  ).prefetch(tf.data.AUTOTUNE)
