"""Tests for sobolev_tf.tasks.input_pipeline."""

import numpy as np
import tensorflow as tf

from sobolev_tf.tasks import input_pipeline

_X = np.arange(24, dtype=np.float32)[:, None] * [1.0, -1.0]  # [24, 2]
_Y = {"value": np.arange(24, dtype=np.float32)[:, None]}


def _batches(dataset, count):
  return np.stack([x.numpy() for x, _ in dataset.take(count)])


def _context(pipelines, pipeline, replicas):
  return tf.distribute.InputContext(
    num_input_pipelines=pipelines,
    input_pipeline_id=pipeline,
    num_replicas_in_sync=replicas,
  )


class ShuffledBatchesTest(tf.test.TestCase):
  def test_batch_k_depends_only_on_seed_and_k(self):
    full = _batches(input_pipeline.shuffled_batches((_X, _Y), 8, seed=3), 10)
    resumed = _batches(
      input_pipeline.shuffled_batches((_X, _Y), 8, 3, start_step=7), 3
    )
    self.assertAllEqual(resumed, full[7:10])
    other = _batches(input_pipeline.shuffled_batches((_X, _Y), 8, seed=4), 10)
    self.assertNotAllEqual(other, full)

  def test_every_pass_is_a_permutation_and_targets_follow(self):
    dataset = input_pipeline.shuffled_batches((_X, _Y), 8, seed=0)
    pairs = list(dataset.take(6))
    x = np.concatenate([x.numpy() for x, _ in pairs])
    y = np.concatenate([y["value"].numpy() for _, y in pairs])
    self.assertAllEqual(x[:, :1], y)  # each x keeps its own target
    for first in (0, 24):
      self.assertAllEqual(np.sort(x[first : first + 24, 0]), _X[:, 0])
    self.assertNotAllEqual(x[:24], x[24:])
    self.assertNotAllEqual(x[:24], _X)

  def test_replica_slices_make_the_global_batches(self):
    full = _batches(input_pipeline.shuffled_batches((_X, _Y), 8, 0, 2), 3)
    # Two workers with one replica each: each keeps its own half of every
    # global batch.
    halves = [
      _batches(
        input_pipeline.shuffled_batches(
          (_X, _Y), 8, 0, 2, input_context=_context(2, worker, 2)
        ),
        3,
      )
      for worker in (0, 1)
    ]
    # One pipeline for two local replicas: consecutive halves.
    local = _batches(
      input_pipeline.shuffled_batches(
        (_X, _Y), 8, 0, 2, input_context=_context(1, 0, 2)
      ),
      6,
    )
    for k in range(3):
      self.assertAllEqual(np.concatenate([halves[0][k], halves[1][k]]), full[k])
      self.assertAllEqual(np.concatenate(local[2 * k : 2 * k + 2]), full[k])

  def test_a_tensor_or_a_single_array(self):
    from_array = _batches(
      input_pipeline.shuffled_batches(_X, 5, 1).map(lambda x: (x, x)), 4
    )
    from_tensor = _batches(
      input_pipeline.shuffled_batches(tf.constant(_X), 5, 1).map(
        lambda x: (x, x)
      ),
      4,
    )
    self.assertAllEqual(from_array, from_tensor)

  def test_invalid_arguments(self):
    with self.assertRaisesRegex(ValueError, "not divisible"):
      input_pipeline.shuffled_batches(
        (_X, _Y), 7, 0, input_context=_context(1, 0, 2)
      )
    with self.assertRaisesRegex(ValueError, "Received: batch_size=0"):
      input_pipeline.shuffled_batches((_X, _Y), 0, 0)
    with self.assertRaisesRegex(ValueError, "Received: start_step=-1"):
      input_pipeline.shuffled_batches((_X, _Y), 8, 0, start_step=-1)
    with self.assertRaisesRegex(ValueError, r"lengths: \[3, 24\]"):
      input_pipeline.shuffled_batches((_X, _X[:3]), 2, 0)
    with self.assertRaisesRegex(ValueError, r"lengths: \[0\]"):
      input_pipeline.shuffled_batches(_X[:0], 2, 0)


if __name__ == "__main__":
  tf.test.main()
