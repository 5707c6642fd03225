"""Tests for benchmarks.narrow_gradients_benchmark: both loops agree."""

import unittest

from absl.testing import parameterized
import tensorflow as tf

try:
  from benchmarks import narrow_gradients_benchmark as bench
except ModuleNotFoundError as error:
  if error.name not in ("jax", "jaxlib"):
    raise
  bench = None


def _barriers(function) -> int:
  graph_def = function.get_concrete_function().graph.as_graph_def()
  nodes = list(graph_def.node) + [
    node for library in graph_def.library.function for node in library.node_def
  ]
  return sum(node.op == "XlaOptimizationBarrier" for node in nodes)


@unittest.skipIf(
  bench is None,
  "JAX is not installed; the benchmarks need the `bench` extra: "
  "pip install -e '.[bench]'",
)
class NarrowGradientsBenchmarkTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    bench.FLAGS.mark_as_parsed()
    self.addCleanup(setattr, bench.FLAGS, "steps", bench.FLAGS.steps)
    bench.FLAGS.steps = 3

  @parameterized.parameters(((64, 32, 8), 1), ((64, 8, 32), 0))
  def test_the_library_loop_is_tensorflows_gradient(self, shape, barriers):
    tensorflow, library = (bench._loop(*shape, flag) for flag in (False, True))
    self.assertAllClose(tensorflow(), library(), rtol=1e-5, atol=1e-5)
    self.assertEqual(_barriers(tensorflow), 0)
    # The rewrite takes effect inside the compiled loop's body.
    self.assertEqual(_barriers(library), barriers)


if __name__ == "__main__":
  tf.test.main()
