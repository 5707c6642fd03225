"""Tests for benchmarks.jacobian_modes_benchmark: its reference and choices."""

import unittest

from absl.testing import parameterized
import keras
import tensorflow as tf

from sobolev_tf import derivatives

try:
  from benchmarks import jacobian_modes_benchmark as bench
except ModuleNotFoundError as error:
  if error.name not in ("jax", "jaxlib"):
    raise
  bench = None


@unittest.skipIf(
  bench is None,
  "JAX is not installed; the benchmarks need the `bench` extra: "
  "pip install -e '.[bench]'",
)
class JacobianModesBenchmarkTest(tf.test.TestCase, parameterized.TestCase):
  def test_vectorized_reference_is_the_jacobian(self):
    keras.utils.set_random_seed(0)
    net = keras.Sequential(
      [
        keras.Input((3,)),
        keras.layers.Dense(8, "softplus"),
        keras.layers.Dense(4),
      ]
    )
    x = tf.random.normal([5, 3])
    y, jacobian = bench.vectorized_jacobian(net, x)
    expected_y, expected = derivatives.value_and_jacobian(net, x, "reverse")
    self.assertAllClose(y, expected_y)
    self.assertAllClose(jacobian, expected, rtol=1e-5, atol=1e-6)

  @parameterized.parameters(
    ((2, 8, 4), False, "forward"),
    ((2, 8, 4), True, "forward"),
    ((2, 3, 4), True, "reverse"),  # forward under XLA costs two VJPs.
    ((32, 8, 4), False, "reverse"),
  )
  def test_auto_choice_is_asked_in_the_right_context(self, shape, xla, mode):
    self.assertEqual(bench._auto_choice(shape, xla), mode)


if __name__ == "__main__":
  tf.test.main()
