"""Tests for sobolev_tf.finite_updates: steps applied only when finite."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import finite_updates
from sobolev_tf import testing

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
      return finite_updates.apply_if_finite(
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
      return finite_updates.apply_if_finite(
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
      return finite_updates.apply_if_finite(
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
      return finite_updates.apply_if_finite(
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
      return finite_updates.apply_if_finite(
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
      applied, _ = finite_updates.apply_if_finite(
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


class ApplyUpdatesTest(tf.test.TestCase, parameterized.TestCase):
  """Several optimisers' updates under one verdict, and the guard's record."""

  def _two_updates(self, bad):
    stage = tf.Variable([1.0, 2.0])
    module = tf.Variable([[0.5], [-0.5]])
    optimizers = [keras.optimizers.Adam(0.1), keras.optimizers.SGD(0.1, 0.9)]
    for optimizer, variable in zip(optimizers, (stage, module), strict=True):
      optimizer.apply([tf.ones_like(variable)], [variable])

    def updates():
      return [
        finite_updates.Update(
          optimizers[0], [tf.constant([0.1, 0.2])], [stage]
        ),
        finite_updates.Update(
          optimizers[1], [tf.constant([[bad], [0.3]])], [module]
        ),
      ]

    return optimizers, [stage, module], updates

  @parameterized.product(mode=MODE_NAMES, bad=(np.nan, 0.5))
  def test_one_nonfinite_update_skips_every_optimiser(self, mode, bad):
    optimizers, variables, updates = self._two_updates(bad)
    pairs = list(zip(optimizers, variables, strict=True))
    before = [_state(o, [v]) for o, v in pairs]
    guard = finite_updates.StepGuard()
    checks = finite_updates.StepChecks(*[tf.constant(True)] * 3)

    applied = _run(
      mode, lambda: finite_updates.apply_updates(updates(), checks, guard)
    )
    after = [_state(o, [v]) for o, v in pairs]
    finite = not np.isnan(bad)
    self.assertEqual(bool(applied), finite)
    for old, new in zip(before, after, strict=True):
      if finite:  # Both weights moved.
        self.assertNotAllClose(old[0], new[0])
      else:  # Weights and slots as they were.
        for a, b in zip(old, new, strict=True):
          self.assertAllEqual(a, b)
    self.assertEqual(
      [int(o.iterations.numpy()) for o in optimizers], [2 if finite else 1] * 2
    )
    if finite:
      guard.raise_if_skipped()
    else:
      with self.assertRaisesRegex(ValueError, "gradients hold NaN or Inf"):
        guard.raise_if_skipped()

  @parameterized.parameters(*MODES)
  def test_failed_check_is_recorded_as_the_first_cause(self, mode):
    optimizers, variables, updates = self._two_updates(0.5)
    guard = finite_updates.StepGuard()
    checks = finite_updates.StepChecks(
      tf.constant(True), tf.constant(False), tf.constant(False)
    )
    applied = _run(
      mode, lambda: finite_updates.apply_updates(updates(), checks, guard)
    )
    self.assertFalse(applied)
    with self.assertRaisesRegex(ValueError, "because the targets hold NaN"):
      guard.raise_if_skipped()

  def test_checks_combine_check_by_check(self):
    true, false = tf.constant(True), tf.constant(False)
    combined = finite_updates.StepChecks(true, false, true) & (
      finite_updates.StepChecks(false, true, true)
    )
    self.assertEqual([bool(c) for c in combined], [False, False, True])
    self.assertFalse(combined.all())


class StepGuardTest(tf.test.TestCase):
  def test_names_the_first_failed_check(self):
    guard = finite_updates.StepGuard()
    checks = finite_updates.StepChecks(*[tf.constant(True)] * 3)
    guard.record(tf.constant(False), checks, tf.constant(False))
    with self.assertRaisesRegex(
      ValueError, "because the gradients hold NaN or Inf"
    ):
      guard.raise_if_skipped()
    guard.raise_if_skipped()  # The record was cleared.

  def test_applied_step_records_nothing(self):
    guard = finite_updates.StepGuard()
    checks = finite_updates.StepChecks(*[tf.constant(False)] * 3)
    guard.record(tf.constant(True), checks, tf.constant(False))
    guard.raise_if_skipped()

  def test_callback_raises_after_the_batch(self):
    guard = finite_updates.StepGuard()
    callbacks = finite_updates.with_guard_callback([], guard)
    self.assertLen(callbacks, 1)
    self.assertIs(
      finite_updates.with_guard_callback(callbacks, guard)[0], callbacks[0]
    )
    checks = finite_updates.StepChecks(
      tf.constant(False), tf.constant(True), tf.constant(True)
    )
    guard.record(tf.constant(False), checks, tf.constant(True))
    with self.assertRaisesRegex(
      ValueError, "in training batch 3 because the input x holds NaN"
    ):
      callbacks[0].on_train_batch_end(3)


if __name__ == "__main__":
  tf.test.main()
