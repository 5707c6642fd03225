"""Tests for sobolev_tf.training: the one Sobolev step of every trainer."""

from unittest import mock

from absl.testing import parameterized
import keras
import numpy as np
import sonnet as snt
import tensorflow as tf

import sobolev_tf
from sobolev_tf import finite_updates
from sobolev_tf import objective as objective_lib
from sobolev_tf import testing
from sobolev_tf import training
from sobolev_tf.layers import atari
from sobolev_tf.tasks import decoupled
from sobolev_tf.tasks import distillation
from sobolev_tf.tasks import synthetic_gradients as sg

testing.configure_logical_cpus(2)

MODES = ("eager", "graph", "xla")


def _run(mode, fn, *args):
  if mode == "eager":
    return fn(*args)
  return tf.function(fn, jit_compile=mode == "xla")(*args)


def _net(seed=0):
  keras.utils.set_random_seed(seed)
  return keras.Sequential(
    [keras.Input((2,)), keras.layers.Dense(8, "tanh"), keras.layers.Dense(1)]
  )


def _data(batch=8):
  x = np.random.default_rng(0).uniform(-1, 1, (batch, 2)).astype("float32")
  targets = {
    "value": np.sin(x[:, :1]),
    "d1": np.cos(x)[:, None, :].astype("float32"),
  }
  return x, targets


def _train_step(objective, net, x, targets, optimizer, guard):
  return training.sobolev_train_step(
    objective,
    net,
    tf.constant(x),
    targets,
    optimizer=optimizer,
    variables=net.trainable_variables,
    guard=guard,
  )


def _state(variables):
  return [np.array(v.numpy(), copy=True) for v in variables]


class SobolevStepTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.parameters(*MODES)
  def test_train_step_is_the_objective_and_the_optimisers_update(self, mode):
    x, targets = _data()
    net, reference = _net(), _net()
    objective = objective_lib.SobolevObjective(order=1, balance="none")
    with tf.GradientTape() as tape:
      losses = objective(reference, x, targets, training=True)
    expected_optimizer = keras.optimizers.SGD(0.1)
    expected_optimizer.apply(
      tape.gradient(losses.total, reference.trainable_variables),
      reference.trainable_variables,
    )
    optimizer, guard = keras.optimizers.SGD(0.1), finite_updates.StepGuard()

    def step():
      result = _train_step(objective, net, x, targets, optimizer, guard)
      return result.finite, training.step_logs(result.losses, balanced=False)

    applied, logs = _run(mode, step)
    self.assertTrue(applied)
    self.assertAllClose(logs["loss"], losses.total, rtol=1e-6)
    self.assertAllClose(logs["d1_loss"], losses.terms["d1"], rtol=1e-6)
    self.assertNotIn("d1_normalized_loss", logs)
    for a, b in zip(net.get_weights(), reference.get_weights(), strict=True):
      self.assertAllClose(a, b, rtol=1e-6, atol=1e-7)
    guard.raise_if_skipped()

  @parameterized.product(
    mode=MODES, bad=("x", "value", "d1"), policy=("raise", "drop")
  )
  def test_nonfinite_data_skips_the_step_and_names_the_cause(
    self, mode, bad, policy
  ):
    x, targets = _data()
    if bad == "x":
      x[3, 1] = np.nan
    else:
      targets[bad][3] = np.inf
    net = _net()
    optimizer, guard = keras.optimizers.Adam(0.1), finite_updates.StepGuard()
    optimizer.build(net.trainable_variables)
    before = _state(net.trainable_variables + optimizer.variables)
    objective = objective_lib.SobolevObjective(
      order=1, nonfinite_targets=policy
    )

    def step():
      return _train_step(objective, net, x, targets, optimizer, guard).finite

    applied = _run(mode, step)
    skipped = bad == "x" or policy == "raise"
    self.assertEqual(bool(applied), not skipped)
    after = _state(net.trainable_variables + optimizer.variables)
    if not skipped:  # "drop": the example does not count; the step applies.
      self.assertNotAllClose(after[0], before[0])
      return
    for a, b in zip(after, before, strict=True):
      self.assertAllEqual(a, b)
    cause = "input x" if bad == "x" else "targets"
    with self.assertRaisesRegex(ValueError, f"because the {cause} hold"):
      guard.raise_if_skipped("in a test ")

  @parameterized.parameters(*MODES)
  def test_test_step_checks_without_updating(self, mode):
    x, targets = _data()
    targets["d1"][0] = np.nan
    net, guard = _net(), finite_updates.StepGuard()
    objective = objective_lib.SobolevObjective(order=1)
    before = _state(net.trainable_variables)
    finite = _run(
      mode,
      lambda: (
        training.sobolev_test_step(
          objective, net, tf.constant(x), targets, guard=guard
        ).finite
      ),
    )
    self.assertFalse(finite)
    for a, b in zip(_state(net.trainable_variables), before, strict=True):
      self.assertAllEqual(a, b)
    with self.assertRaisesRegex(ValueError, "targets hold NaN or Inf"):
      guard.raise_if_skipped()

  def test_inputs_beyond_the_differentiated_one_are_checked(self):
    x, targets = _data()
    other = np.ones((8, 3), "float32")
    other[2, 0] = np.nan
    net, guard = _net(), finite_updates.StepGuard()
    result = training.sobolev_gradients(
      objective_lib.SobolevObjective(order=1),
      net,
      tf.constant(x),
      targets,
      variables=net.trainable_variables,
      inputs={"x": x, "other": other, "ids": np.arange(8)},
    )
    self.assertFalse(result.checks.x)
    self.assertTrue(result.checks.targets)
    del guard

  def test_unconnected_variables_are_left_with_a_warning(self):
    x, targets = _data()
    net = _net()
    with self.assertWarnsRegex(UserWarning, "Gradients do not exist"):
      result = training.sobolev_gradients(
        objective_lib.SobolevObjective(order=1, loss_weights=[0.0, 1.0]),
        net,
        tf.constant(x),
        {"d1": targets["d1"]},
        variables=net.trainable_variables,
      )
    # The last bias does not move an input derivative.
    self.assertLen(result.variables, len(net.trainable_variables) - 1)


class _Teacher(snt.Module):
  """A tiny policy over frames: logits linear in the pixels."""

  def __init__(self):
    super().__init__()
    self.w = tf.Variable(
      tf.random.stateless_normal([int(np.prod(atari.FRAME_SHAPE)), 4], [1, 2])
      * 1e-3
    )

  def policy_logits(self, frames):
    flat = tf.reshape(tf.cast(frames, tf.float32), [tf.shape(frames)[0], -1])
    return flat @ self.w


class EveryTrainerTest(tf.test.TestCase, parameterized.TestCase):
  """`SobolevModel`, the distiller and the SG modules all take the one step."""

  def _calls(self, train):
    with mock.patch.object(
      training, "sobolev_gradients", wraps=training.sobolev_gradients
    ) as step:
      train()
    return step.call_count

  def test_sobolev_model(self):
    x, targets = _data()
    model = sobolev_tf.SobolevModel(_net(), order=1)
    model.compile(optimizer="sgd", run_eagerly=True)
    calls = self._calls(
      lambda: model.fit(x, targets, batch_size=4, epochs=1, verbose=0)
    )
    self.assertEqual(calls, 2)

  def test_distiller(self):
    distiller = distillation.Distiller(distillation.Config(4), _Teacher())
    frames = tf.zeros([2, *atari.FRAME_SHAPE], tf.uint8)
    self.assertEqual(self._calls(lambda: distiller.train_step(frames)), 1)

  @parameterized.parameters(
    ("direct", 3), ("vfbn", 3), ("critic", 3), ("sobolev", 3), ("noprop", 0)
  )
  def test_sg_modules(self, variant, calls):
    keras.utils.set_random_seed(0)
    classifier = decoupled.DecoupledClassifier(
      sg.Config(variant, channels=(4, 4, 6)), (8, 8, 1)
    )
    batch = (tf.zeros([2, 8, 8, 1]), tf.constant([1, 2], tf.int64))
    self.assertEqual(self._calls(lambda: classifier.train_step(batch)), calls)


class DecoupledGuardTest(tf.test.TestCase, parameterized.TestCase):
  """A NaN batch leaves every stage, SG module and optimiser slot alone."""

  @parameterized.product(
    mode=MODES, variant=("backprop", "direct", "vfbn", "critic", "sobolev")
  )
  def test_nan_pixel_skips_the_whole_step(self, mode, variant):
    keras.utils.set_random_seed(0)
    classifier = decoupled.DecoupledClassifier(
      sg.Config(variant, channels=(4, 4, 6)), (8, 8, 1)
    )
    rng = np.random.default_rng(0)
    images = rng.normal(size=(6, 8, 8, 1)).astype("float32")
    labels = tf.constant(rng.integers(0, 10, 6))
    step = (
      classifier.train_step
      if mode == "eager"
      else tf.function(classifier.train_step, jit_compile=mode == "xla")
    )
    step((tf.constant(images), labels))  # Slots that hold something.
    state = (
      list(classifier.trainable_variables)
      + classifier.optimizer.variables
      + classifier.sg_optimizer.variables
    )
    before = _state(state)
    images[2, 4, 4, 0] = np.nan
    step((tf.constant(images), labels))
    for a, b in zip(_state(state), before, strict=True):
      self.assertAllEqual(a, b)
    with self.assertRaisesRegex(
      ValueError, "not applied in run r because the input x holds NaN"
    ):
      classifier.guard.raise_if_skipped("in run r ")


if __name__ == "__main__":
  tf.test.main()
