"""Tests for sobolev_tf.targets: the kinds of target and how a kind is added."""

import dataclasses
from typing import ClassVar

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import sobolev_tf
from sobolev_tf import derivatives
from sobolev_tf import estimators
from sobolev_tf import objective as objective_lib
from sobolev_tf import target_data
from sobolev_tf import targets


@dataclasses.dataclass(frozen=True, eq=False)
class GradientNormTarget(targets.Target):
  """A toy kind: the norm of each output's input gradient, `d1_norm`.

  What an eikonal equation (`|grad u| = 1`, signed distance functions)
  prescribes. Written here, in the test, against the public extension
  points only: no other module knows it.
  """

  scaled_per_input: ClassVar[bool] = False

  @property
  def data_key(self):
    return "d1_norm"

  @classmethod
  def data_keys(cls, order):
    return ("d1_norm",) if order == 1 else ()

  @classmethod
  def from_data(cls, order, y):
    if order != 1 or y.get("d1_norm") is None:
      return None
    return cls(order, values=targets.float_tensor(y["d1_norm"], "d1_norm"))

  def layout(self):
    return "[B, out...]"

  def expected_shape(self, output_shape, input_shape):
    return output_shape

  @property
  def shared_order(self):
    return 0  # It computes its own side.

  def match(self, model_pass, teacher_pass, fn, x):
    jacobian = derivatives.jacobian(fn, x)  # [B, out..., in...]
    axes = list(
      range(jacobian.shape.rank - x.shape.rank + 1, jacobian.shape.rank)
    )
    norms = tf.sqrt(tf.reduce_sum(tf.square(jacobian), axis=axes))
    return self, norms  # [B, out...]


def _net():
  keras.utils.set_random_seed(0)
  return keras.Sequential(
    [keras.Input((2,)), keras.layers.Dense(8, "tanh"), keras.layers.Dense(1)]
  )


class AddedKindTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    target_data.register(GradientNormTarget)
    self.addCleanup(target_data.KINDS.remove, GradientNormTarget)
    rng = np.random.default_rng(0)
    self.x = rng.uniform(-1, 1, (16, 2)).astype("float32")
    self.y = {
      "value": np.linalg.norm(self.x, axis=1, keepdims=True),  # |x|
      "d1_norm": np.ones((16, 1), "float32"),
    }

  @parameterized.parameters("full", "stochastic")
  def test_objective_uses_it_in_every_mode(self, mode):
    net = _net()
    objective = objective_lib.SobolevObjective(
      order=1, mode=mode, balance="none"
    )
    losses = objective(net, self.x, self.y, seed=[1, 2])
    norms = np.linalg.norm(derivatives.jacobian(net, self.x)[:, 0], axis=-1)
    self.assertAllClose(
      losses.terms["d1"], np.mean((norms - 1.0) ** 2), rtol=1e-5
    )

  def test_shapes_batches_and_nonfinite_entries_are_checked(self):
    objective = objective_lib.SobolevObjective(order=1)
    with self.assertRaisesRegex(ValueError, r"y\['d1_norm'\].*\[B, 1\]"):
      objective(_net(), self.x, {**self.y, "d1_norm": np.ones((16, 3))})
    with self.assertRaisesRegex(ValueError, r"y\['d1_norm'\] must have the"):
      objective(_net(), self.x, {**self.y, "d1_norm": np.ones((4, 1))})
    self.y["d1_norm"][3] = np.nan
    with self.assertRaisesRegex(ValueError, r"\['d1_norm'\] hold NaN"):
      objective(_net(), self.x, self.y)
    missing = objective_lib.SobolevObjective(
      order=1, nonfinite_targets="missing"
    )(_net(), self.x, self.y)
    self.assertEqual(int(missing.entries["d1"]), 15)

  def test_conflicts_with_other_kinds_are_named(self):
    objective = objective_lib.SobolevObjective(order=1)
    with self.assertRaisesRegex(
      ValueError, r"full targets \['d1'\] and gradientnorm targets"
    ):
      objective(_net(), self.x, {**self.y, "d1": np.ones((16, 1, 2))})

  def test_sobolev_model_fits_and_evaluates_it(self):
    model = sobolev_tf.SobolevModel(_net(), order=1)
    model.compile(optimizer=keras.optimizers.Adam(0.02))
    before = model.evaluate(self.x, self.y, verbose=0, return_dict=True)
    model.fit(self.x, self.y, batch_size=8, epochs=30, verbose=0)
    after = model.evaluate(self.x, self.y, verbose=0, return_dict=True)
    self.assertLess(after["d1_loss"], 0.5 * before["d1_loss"])


class FullTargetTest(tf.test.TestCase):
  def test_expected_shapes_by_order(self):
    out, inputs = tf.TensorShape([3]), tf.TensorShape([2, 4])
    shapes = [
      targets.FullTarget(k).expected_shape(out, inputs).as_list()
      for k in range(3)
    ]
    self.assertEqual(shapes, [[3], [3, 2, 4], [3, 2, 4, 2, 4]])

  def test_projected_pass_makes_a_projected_target(self):
    x = tf.random.stateless_normal([5, 3], [1, 2])
    jacobian = tf.random.stateless_normal([5, 2, 3], [3, 4])
    v1 = tf.random.stateless_normal([5, 2], [5, 6])
    model_pass = estimators.ProjectedPass(
      [x[:, :2], tf.zeros([5, 1, 3])], ([v1], None)
    )
    weight = tf.ones([5])
    target = targets.FullTarget(1, jacobian, weight=weight)
    matched, prediction = target.match(model_pass, None, None, x)
    self.assertIsInstance(matched, targets.ProjectedTarget)
    self.assertIs(matched.weight, weight)
    self.assertAllClose(
      matched.values[:, 0], np.einsum("bo,boi->bi", v1, jacobian)
    )
    self.assertEqual(prediction.shape, [5, 1, 3])

  def test_teacher_target_takes_the_teachers_pass_detached(self):
    teacher_values = tf.Variable(tf.ones([4, 2, 3]))
    model_pass = estimators.FullPass([tf.zeros([4, 2]), tf.zeros([4, 2, 3])])
    teacher_pass = estimators.FullPass([tf.zeros([4, 2]), teacher_values * 2])
    matched, _ = targets.TeacherTarget(1).match(
      model_pass, teacher_pass, None, None
    )
    self.assertIsInstance(matched, targets.FullTarget)
    self.assertAllEqual(matched.values, 2 * np.ones([4, 2, 3]))

  def test_counted_entries_are_finite_or_masked(self):
    values = tf.constant([[1.0, np.nan], [np.inf, 2.0]])
    mask = tf.constant([[1.0, 0.0], [1.0, 1.0]])
    counted = targets.FullTarget(0, values, mask=mask).counted()
    self.assertAllEqual(counted, [[True, True], [False, True]])

  def test_targets_are_immutable(self):
    target = targets.FullTarget(0, tf.zeros([2, 1]))
    with self.assertRaises(dataclasses.FrozenInstanceError):
      target.values = None
    self.assertIsNone(target.replace(values=None).values)
    self.assertIsNotNone(target.values)


if __name__ == "__main__":
  tf.test.main()
