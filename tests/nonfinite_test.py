"""Tests for sobolev_tf.nonfinite: one rule for tensors and NumPy arrays."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from sobolev_tf import config as config_lib
from sobolev_tf import directional
from sobolev_tf import nonfinite
from sobolev_tf import targets


def _targets():
  value = np.array([[1.0], [np.nan], [3.0]], "float32")
  d1 = np.ones((3, 1, 2), "float32")
  d1[2, 0, 1] = np.inf
  mask = np.ones((3, 1, 2), "float32")
  mask[2, 0, 1] = 0.0  # The Inf is masked out: it never counts.
  d1[0, 0, 0] = np.nan  # This one counts.
  return {
    "value": targets.FullTarget(0, tf.constant(value)),
    "d1": targets.FullTarget(1, tf.constant(d1), mask=tf.constant(mask)),
  }


class ApplyPolicyTest(tf.test.TestCase):
  def test_raise_eagerly_names_the_keys(self):
    with self.assertRaisesRegex(ValueError, r"\['value', 'd1'\] hold NaN"):
      nonfinite.apply_policy(_targets(), "raise")

  def test_raise_in_a_step_returns_the_verdict(self):
    cleaned, finite = nonfinite.apply_policy(_targets(), "raise", False)
    self.assertFalse(finite)
    for target in cleaned.values():
      self.assertTrue(np.all(np.isfinite(target.values)))

  def test_drop_keeps_the_examples_whose_counted_entries_are_finite(self):
    cleaned, finite = nonfinite.apply_policy(_targets(), "drop")
    self.assertIsNone(finite)
    for target in cleaned.values():
      self.assertAllEqual(target.keep, [0.0, 0.0, 1.0])

  def test_missing_masks_the_entries(self):
    cleaned, _ = nonfinite.apply_policy(_targets(), "missing")
    self.assertAllEqual(cleaned["value"].mask, [[1.0], [0.0], [1.0]])
    self.assertAllEqual(
      cleaned["d1"].mask, [[[0.0, 1.0]], [[1.0, 1.0]], [[1.0, 0.0]]]
    )

  def test_derivatives_along_a_nonfinite_direction_do_not_count(self):
    directions = np.ones((2, 2, 3), "float32")
    directions[1, 0, 2] = np.nan
    target = directional.DirectionalTarget.from_data(
      1,
      {
        "d1_directions": directions,
        "d1_directional": np.zeros((2, 4, 2), "float32"),
      },
    )
    counted = target.counted().numpy()
    self.assertTrue(counted[0].all() and counted[1, :, 1].all())
    self.assertFalse(counted[1, :, 0].any())
    with self.assertRaisesRegex(ValueError, r"\['d1_directions'\] hold NaN"):
      nonfinite.apply_policy({"d1": target}, "raise")


class CheckArraysTest(tf.test.TestCase, parameterized.TestCase):
  def test_the_same_rule_as_the_step_names_the_first_example(self):
    config = config_lib.SobolevConfig(order=1)
    d1 = np.ones((5, 1, 2), "float32")
    d1[3, 0, 1] = np.nan
    mask = np.ones_like(d1)
    mask[1] = 0
    d1[1] = np.inf  # Masked: fine.
    y = {"value": np.zeros((5, 1), "float32"), "d1": d1, "d1_mask": mask}
    with self.assertRaisesRegex(
      ValueError,
      r"y\['d1'\] holds NaN or Inf in 1 of 5 examples \(first at "
      r"index 3\)",
    ):
      nonfinite.check_arrays(config, y, "y")
    d1[3] = 0.0
    nonfinite.check_arrays(config, y, "y")

  @parameterized.parameters("drop", "missing")
  def test_other_policies_train_with_gaps(self, policy):
    config = config_lib.SobolevConfig(
      order=1, nonfinite_targets=policy, mode="full"
    )
    d1 = np.full((2, 1, 2), np.nan, "float32")
    nonfinite.check_arrays(config, {"value": np.zeros((2, 1)), "d1": d1}, "y")

  def test_malformed_data_is_left_to_the_step(self):
    config = config_lib.SobolevConfig(order=1)
    y = {
      "value": np.zeros((2, 1)),
      "d1": np.full((2, 1, 2), np.nan),
      "d1_mask": np.ones((2, 3)),
    }
    nonfinite.check_arrays(config, y, "y")

  def test_inputs_of_every_container(self):
    bad = np.ones((4, 2), "float32")
    bad[2, 1] = np.inf
    with self.assertRaisesRegex(ValueError, r"Inputs x hold NaN .* index 2"):
      nonfinite.check_inputs(bad)
    with self.assertRaisesRegex(ValueError, r"Inputs x\['spot'\] hold"):
      nonfinite.check_inputs({"spot": bad, "ids": np.arange(4)})
    with self.assertRaisesRegex(ValueError, r"Inputs x\[1\] hold"):
      nonfinite.check_inputs((np.ones((4, 1)), bad))
    with self.assertRaisesRegex(ValueError, r"empty inputs x\['t'\]"):
      nonfinite.check_inputs({"t": np.ones((0, 1))})
    nonfinite.check_inputs({"spot": np.ones((4, 2)), "ids": np.arange(4)})


if __name__ == "__main__":
  tf.test.main()
