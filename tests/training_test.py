"""Tests for sobolev_tf.training: steps applied only when finite."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

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
