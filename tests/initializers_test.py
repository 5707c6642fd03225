"""Tests for sobolev_tf.layers.initializers."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from sobolev_tf.layers import initializers


class FanInTruncatedNormalTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.parameters(([400, 300], 400), ([5, 5, 16, 64], 400))
  def test_spread_of_sonnets_default(self, shape, fan_in):
    init = initializers.FanInTruncatedNormal((3, 4))
    values = init(shape, tf.float32).numpy()
    self.assertEqual(values.shape, tuple(shape))
    # A normal truncated at 2 standard deviations keeps 0.88 of its spread.
    self.assertAllClose(values.std(), 0.8796 / np.sqrt(fan_in), rtol=0.03)
    self.assertLessEqual(np.abs(values).max(), 2 / np.sqrt(fan_in))

  def test_seeded_without_global_state(self):
    init = initializers.FanInTruncatedNormal((3, 4))
    first = init([20, 10], tf.float32)
    tf.random.set_seed(99)
    tf.random.normal([5])  # advances the stateful generators
    self.assertAllEqual(first, init([20, 10], tf.float32))
    other = initializers.FanInTruncatedNormal((3, 5))([20, 10], tf.float32)
    self.assertNotAllEqual(first, other)

  def test_seed_must_be_two_ints(self):
    with self.assertRaisesRegex(ValueError, r"Received: seed=\(1,\)"):
      initializers.FanInTruncatedNormal((1,))


class OrthogonalTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.parameters(([6, 4], 1.0), ([4, 6], 2.0), ([3, 3, 8, 5], 0.5))
  def test_orthonormal_rows_or_columns_times_gain(self, shape, gain):
    values = initializers.Orthogonal(gain, (0, 1))(shape, tf.float32)
    matrix = tf.reshape(values, [-1, shape[-1]]).numpy() / gain
    rows, columns = matrix.shape
    gram = matrix.T @ matrix if rows >= columns else matrix @ matrix.T
    self.assertAllClose(gram, np.eye(min(rows, columns)), atol=1e-5)

  def test_seeded_and_rank_checked(self):
    init = initializers.Orthogonal(1.0, (2, 3))
    self.assertAllEqual(init([8, 8], tf.float32), init([8, 8], tf.float32))
    with self.assertRaisesRegex(ValueError, r"rank 2 or more.*\[5\]"):
      init([5], tf.float32)


if __name__ == "__main__":
  tf.test.main()
