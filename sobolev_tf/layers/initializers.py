"""Seeded Sonnet initialisers that use no global random state.

Sonnet's initialisers draw from TensorFlow's stateful generators, so the
weights they make depend on the global seed and on every random op run
before them in the process. These draw from stateless generators keyed by
an explicit seed `[2]`: the same seed gives the same weights whatever ran
before, so each run of a sweep starts from its own weights.

* `FanInTruncatedNormal`: Sonnet's default for `Linear` and `Conv2D`, a
  normal truncated at two standard deviations with standard deviation
  `1 / sqrt(fan_in)`.
* `Orthogonal`: Sonnet's `Orthogonal` (Saxe et al., 2014), a random
  orthogonal matrix times `gain`.

A network seeded with `seed` gives its `k`-th layer the seed `(seed, k)`.
"""

import math
from typing import Sequence
from typing import Tuple

import sonnet as snt
import tensorflow as tf


def _check_seed(seed: Sequence[int]) -> Tuple[int, int]:
  if len(seed) != 2 or not all(isinstance(s, int) for s in seed):
    raise ValueError(
      "Received an invalid value for `seed`, expected two integers. "
      f"Received: seed={seed!r}"
    )
  return tuple(seed)


class FanInTruncatedNormal(snt.initializers.Initializer):
  """Truncated normal with standard deviation `1 / sqrt(fan_in)`.

  `fan_in` is the product of every dimension but the last (`[in, out]` of a
  linear layer, `[height, width, in, out]` of a convolution), as Sonnet's
  default initialiser computes it.

  Args:
    seed: stateless seed, two integers.
  """

  def __init__(self, seed: Sequence[int]):
    self._seed = _check_seed(seed)

  def __call__(self, shape: Sequence[int], dtype: tf.DType) -> tf.Tensor:
    """Draws the weights of a variable of `shape`."""
    fan_in = math.prod(shape[:-1])
    return tf.random.stateless_truncated_normal(
      shape, self._seed, stddev=1.0 / math.sqrt(fan_in), dtype=dtype
    )


class Orthogonal(snt.initializers.Initializer):
  """A random orthogonal matrix times `gain`, reshaped to the variable.

  The variable is seen as a matrix `[prod(shape[:-1]), shape[-1]]`, whose
  rows (or columns, whichever are fewer) are orthonormal.

  Args:
    gain: factor applied to the orthogonal matrix.
    seed: stateless seed, two integers.
  """

  def __init__(self, gain: float, seed: Sequence[int]):
    self._gain = gain
    self._seed = _check_seed(seed)

  def __call__(self, shape: Sequence[int], dtype: tf.DType) -> tf.Tensor:
    """Draws the weights of a variable of `shape` (rank 2 or more)."""
    if len(shape) < 2:
      raise ValueError(
        "Orthogonal initialisation needs a variable of rank 2 or more. "
        f"Received: shape={list(shape)}"
      )
    rows, columns = math.prod(shape[:-1]), shape[-1]
    normal = tf.random.stateless_normal(
      [max(rows, columns), min(rows, columns)], self._seed, dtype=dtype
    )
    q, r = tf.linalg.qr(normal)
    # The signs of R's diagonal make Q uniform over orthogonal matrices.
    q *= tf.sign(tf.linalg.diag_part(r))
    if rows < columns:
      q = tf.transpose(q)
    return self._gain * tf.reshape(q, shape)
