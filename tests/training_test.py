"""Tests for sobolev_tf.training: steps applied only when finite."""

import contextlib
from unittest import mock

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops

from sobolev_tf import testing
from sobolev_tf import training

testing.configure_logical_cpus(2)

# How a step is traced: eagerly, as a graph, or compiled by XLA (where the
# update always runs and a select undoes it).
MODE_NAMES = ("eager", "graph", "xla")
MODES = tuple((mode,) for mode in MODE_NAMES)

OPTIMIZERS = {
  "adam": lambda: keras.optimizers.Adam(0.1),
  "sgd_momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
  "rmsprop": lambda: keras.optimizers.RMSprop(0.1),
  "lion": lambda: keras.optimizers.Lion(0.1),
}


def _run(mode, fn, *args):
  if mode == "eager":
    return fn(*args)
  return tf.function(fn, jit_compile=mode == "xla")(*args)


_no_context = contextlib.nullcontext


def _state(optimizer, variables):
  return [v.numpy().copy() for v in list(variables) + optimizer.variables]


class ApplyIfFiniteTest(tf.test.TestCase, parameterized.TestCase):
  def _variables(self):
    return [
      tf.Variable([[1.0, -2.0], [0.5, 3.0]]),
      tf.Variable([0.25, -0.75]),
    ]

  def _warm(self, optimizer, variables):
    # One finite step first, so that the slots hold something to keep.
    optimizer.apply([tf.ones_like(v) for v in variables], variables)

  def _assert_state_is(self, optimizer, variables, before):
    for a, b in zip(_state(optimizer, variables), before, strict=True):
      self.assertAllEqual(a, b)

  @parameterized.product(
    mode=MODE_NAMES,
    optimizer=tuple(OPTIMIZERS),
    bad=(np.nan, np.inf, -np.inf),
  )
  def test_nonfinite_gradient_leaves_the_state(self, mode, optimizer, bad):
    optimizer = OPTIMIZERS[optimizer]()
    variables = self._variables()
    self._warm(optimizer, variables)
    before = _state(optimizer, variables)

    def step():
      gradients = [
        tf.constant([[0.1, 0.2], [bad, 0.3]]),
        tf.constant([0.5, -0.5]),
      ]
      return training.apply_if_finite(
        optimizer, gradients, variables, tf.constant(True)
      )

    applied, gradients_finite = _run(mode, step)
    self.assertFalse(applied)
    self.assertFalse(gradients_finite)
    self._assert_state_is(optimizer, variables, before)
    self.assertEqual(int(optimizer.iterations.numpy()), 1)

  @parameterized.product(mode=MODE_NAMES, optimizer=tuple(OPTIMIZERS))
  def test_finite_step_is_the_optimisers(self, mode, optimizer):
    gradients = [
      tf.constant([[0.1, 0.2], [-0.4, 0.3]]),
      tf.constant([0.5, -0.5]),
    ]
    expected_optimizer = OPTIMIZERS[optimizer]()
    expected = self._variables()
    self._warm(expected_optimizer, expected)
    expected_optimizer.apply(gradients, expected)
    optimizer = OPTIMIZERS[optimizer]()
    variables = self._variables()
    self._warm(optimizer, variables)

    def step():
      return training.apply_if_finite(
        optimizer, gradients, variables, tf.constant(True)
      )

    applied, gradients_finite = _run(mode, step)
    self.assertTrue(applied)
    self.assertTrue(gradients_finite)
    for a, b in zip(
      _state(optimizer, variables),
      _state(expected_optimizer, expected),
      strict=True,
    ):
      self.assertAllClose(a, b, rtol=1e-6)

  @parameterized.parameters(*MODES)
  def test_false_condition_skips_a_finite_step(self, mode):
    optimizer = keras.optimizers.Adam(0.1)
    variables = self._variables()
    self._warm(optimizer, variables)
    before = _state(optimizer, variables)

    def step():
      gradients = [tf.ones_like(v) for v in variables]
      return training.apply_if_finite(
        optimizer, gradients, variables, tf.constant(False)
      )

    applied, gradients_finite = _run(mode, step)
    self.assertFalse(applied)
    self.assertTrue(gradients_finite)
    self._assert_state_is(optimizer, variables, before)

  @parameterized.parameters(*MODES)
  def test_unchecked_gradients_are_applied(self, mode):
    # check_gradients=False is for optimisers that handle overflows themselves.
    optimizer = keras.optimizers.SGD(1.0)
    variable = tf.Variable([1.0, 2.0])

    def step():
      return training.apply_if_finite(
        optimizer,
        [tf.constant([np.inf, 1.0])],
        [variable],
        tf.constant(True),
        check_gradients=False,
      )

    applied, _ = _run(mode, step)
    self.assertTrue(applied)
    self.assertAllEqual(variable.numpy(), [-np.inf, 1.0])

  @parameterized.parameters(*MODES)
  def test_gradients_are_checked_before_clipping(self, mode):
    # clipvalue would make the infinite entry finite; the step is skipped.
    optimizer = keras.optimizers.SGD(0.5, clipvalue=1.0)
    variable = tf.Variable([1.0, 2.0])

    def step():
      return training.apply_if_finite(
        optimizer, [tf.constant([np.inf, 0.5])], [variable], tf.constant(True)
      )

    applied, gradients_finite = _run(mode, step)
    self.assertFalse(applied)
    self.assertFalse(gradients_finite)
    self.assertAllEqual(variable.numpy(), [1.0, 2.0])

  def test_one_replicas_nan_skips_every_replica(self):
    strategy = testing.mirrored_strategy()
    with strategy.scope():
      variable = tf.Variable([1.0, 2.0])
      optimizer = keras.optimizers.Adam(0.1)
      optimizer.build([variable])

    def replica_step():
      replica = tf.distribute.get_replica_context().replica_id_in_sync_group
      # NaN on replica 0 only.
      gradient = tf.stack([tf.where(replica == 0, np.nan, 0.5), 1.0])
      applied, _ = training.apply_if_finite(
        optimizer, [gradient], [variable], tf.constant(True)
      )
      return applied

    @tf.function
    def step():
      return strategy.run(replica_step)

    applied = strategy.experimental_local_results(step())
    self.assertEqual([bool(a) for a in applied], [False, False])
    self.assertAllEqual(variable.numpy(), [1.0, 2.0])
    self.assertEqual(int(optimizer.iterations.numpy()), 0)


class StepGuardTest(tf.test.TestCase):
  def test_names_the_first_failed_check(self):
    guard = training.StepGuard()
    guard.record(
      tf.constant(False),
      tf.constant(True),
      tf.constant(True),
      tf.constant(True),
      tf.constant(False),
    )
    with self.assertRaisesRegex(
      ValueError, "because the gradients hold NaN or Inf"
    ):
      guard.raise_if_skipped()
    guard.raise_if_skipped()  # The record was cleared.


if __name__ == "__main__":
  tf.test.main()


def _barriers(concrete) -> int:
  """How many XLA optimisation barriers a traced function holds."""
  graph_def = concrete.graph.as_graph_def()
  nodes = list(graph_def.node) + [
    node
    for function in graph_def.library.function
    for node in function.node_def
  ]
  return sum(node.op == "XlaOptimizationBarrier" for node in nodes)


class XlaCpuMatmulGradientsTest(tf.test.TestCase, parameterized.TestCase):
  def _gradients(self, a, b, transpose_a, transpose_b, mode, fast, sources):
    def gradients(a, b):
      context = training.xla_cpu_matmul_gradients() if fast else _no_context()
      with context:
        with tf.GradientTape() as tape:
          tape.watch([a, b])
          product = tf.matmul(
            a, b, transpose_a=transpose_a, transpose_b=transpose_b
          )
          loss = tf.reduce_sum(tf.sin(product))
        return tape.gradient(loss, [a, b][:sources])

    if mode == "eager":
      return gradients(a, b), None
    function = tf.function(gradients, jit_compile=mode == "xla")
    return function(a, b), function.get_concrete_function(a, b)

  @parameterized.product(
    # (rows of a, inner, columns of b): narrow gradients [64, 8] and [8, 3]
    # ... and wide ones, which stay as TensorFlow computes them.
    shape=((64, 24, 8), (8, 64, 3), (4, 32, 64), (16, 16, 16)),
    transpose_a=(False, True),
    transpose_b=(False, True),
    mode=MODE_NAMES,
    sources=(1, 2),
  )
  def test_gradients_are_tensorflows(
    self, shape, transpose_a, transpose_b, mode, sources
  ):
    rows, inner, columns = shape
    rng = np.random.default_rng(0)
    a = rng.normal(size=(inner, rows) if transpose_a else (rows, inner))
    b = rng.normal(size=(columns, inner) if transpose_b else (inner, columns))
    a, b = tf.constant(a, tf.float32), tf.constant(b, tf.float32)
    args = (a, b, transpose_a, transpose_b, mode)
    expected, _ = self._gradients(*args, fast=False, sources=2)
    actual, _ = self._gradients(*args, fast=True, sources=sources)
    self.assertLen(actual, sources)
    for e, g in zip(expected[:sources], actual, strict=True):
      self.assertAllClose(e, g, rtol=1e-5, atol=1e-5)

  @parameterized.named_parameters(
    # The kernel gradient of y = x @ w with w [32, 8] is x^T @ g: narrow.
    ("narrow_kernel", (64, 32), (32, 8), "xla", 1),
    # [32, 64]: as wide as its rows.
    ("wide_kernel", (64, 32), (32, 64), "xla", 0),
    # One column: XLA already makes it a reduction.
    ("one_column", (64, 32), (32, 1), "xla", 0),
    ("graph_without_xla", (64, 32), (32, 8), "graph", 0),
  )
  def test_rewrites_only_narrow_products_under_xla(
    self, x_shape, w_shape, mode, barriers
  ):
    x = tf.ones(x_shape)
    w = tf.ones(w_shape)
    _, concrete = self._gradients(x, w, False, False, mode, True, sources=2)
    self.assertEqual(_barriers(concrete), barriers)

  def test_accelerator_hosts_keep_tensorflows_gradients(self):
    x, w = tf.ones([64, 32]), tf.ones([32, 8])
    with mock.patch.object(
      training.execution, "on_cpu_only", return_value=False
    ):
      _, concrete = self._gradients(x, w, False, False, "xla", True, 2)
    self.assertEqual(_barriers(concrete), 0)

  def test_restores_the_registry(self):
    registry = tf_ops._gradient_registry  # pylint: disable=protected-access
    before = registry.lookup("MatMul")
    with self.assertRaisesRegex(RuntimeError, "inside"):
      with training.xla_cpu_matmul_gradients():
        self.assertIsNot(registry.lookup("MatMul"), before)
        raise RuntimeError("inside")
    self.assertIs(registry.lookup("MatMul"), before)

  def test_restores_the_registry_when_the_first_in_leaves_first(self):
    # As the replica threads of a MirroredStrategy may.
    registry = tf_ops._gradient_registry  # pylint: disable=protected-access
    before = registry.lookup("MatMul")
    first = training.xla_cpu_matmul_gradients()
    second = training.xla_cpu_matmul_gradients()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    self.assertIsNot(registry.lookup("MatMul"), before)
    second.__exit__(None, None, None)
    self.assertIs(registry.lookup("MatMul"), before)

  def test_restores_the_registry_after_replica_threads(self):
    registry = tf_ops._gradient_registry  # pylint: disable=protected-access
    before = registry.lookup("MatMul")
    strategy = testing.mirrored_strategy()
    with strategy.scope():
      w = tf.Variable(tf.ones([32, 8]))

    @training.xla_cpu_matmul_gradients()
    def replica_step(x):
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.matmul(x, w) ** 2)
      return tape.gradient(loss, w)

    @tf.function
    def step(x):
      return strategy.run(replica_step, args=(x,))

    gradients = strategy.experimental_local_results(step(tf.ones([4, 32])))
    self.assertLen(gradients, 2)
    self.assertAllClose(gradients[0], tf.fill([32, 8], 2.0 * 4 * 32))
    self.assertIs(registry.lookup("MatMul"), before)
