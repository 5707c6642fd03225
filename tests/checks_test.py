"""Tests for sobolev_tf.checks."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from sobolev_tf import checks


class ChecksTest(tf.test.TestCase, parameterized.TestCase):
  def test_valid_values_pass(self):
    checks.positive_ints(a=1, b=np.int64(5))
    checks.non_negative_ints(a=0, b=3)
    checks.fraction("f", 0.5)
    checks.fraction("f", 1, include_one=True)

  @parameterized.parameters(0, -2, 1.0, True, "3", None)
  def test_positive_ints(self, value):
    with self.assertRaisesWithLiteralMatch(
      ValueError,
      "Received an invalid value for `units`, expected a positive integer. "
      f"Received: units={value!r}",
    ):
      checks.positive_ints(seeds=1, units=value)

  @parameterized.parameters(-1, 0.0, False)
  def test_non_negative_ints(self, value):
    with self.assertRaisesRegex(
      ValueError, f"non-negative integer. Received: seed={value!r}"
    ):
      checks.non_negative_ints(seed=value)

  @parameterized.parameters(0, -1e-9, float("nan"), "1", True)
  def test_positive_numbers(self, value):
    with self.assertRaisesRegex(
      ValueError, f"positive number. Received: rate={value!r}"
    ):
      checks.positive_numbers(other=1e-9, rate=value)

  @parameterized.parameters(-1, float("nan"), None)
  def test_non_negative_numbers(self, value):
    with self.assertRaisesRegex(
      ValueError, f"non-negative number. Received: weight={value!r}"
    ):
      checks.non_negative_numbers(weight=value)
    checks.non_negative_numbers(weight=0.0)

  @parameterized.parameters(
    (0.0, False), (1.0, False), (1.5, True), (-0.1, True), ("0.5", True)
  )
  def test_fraction(self, value, include_one):
    interval = r"\(0, 1\]" if include_one else r"\(0, 1\)"
    with self.assertRaisesRegex(
      ValueError, f"number in {interval}. Received: share={value!r}"
    ):
      checks.fraction("share", value, include_one=include_one)

  def test_dataset_split(self):
    checks.dataset_split("test", ("train", "test"))
    checks.dataset_split("train[:90%]+test", ("train", "test"), slices=True)
    names = "one of ['train', 'test']"
    for value, slices, expected in (
      ("train[:10]", False, names),
      ("validation", True, f"{names} or tfds slices of them"),
      ("train+valid[:5]", True, f"{names} or tfds slices of them"),
      (3, True, f"{names} or tfds slices of them"),
    ):
      with self.assertRaisesWithLiteralMatch(
        ValueError,
        f"Received an invalid value for `split`, expected {expected}. "
        f"Received: split={value!r}",
      ):
        checks.dataset_split(value, ("train", "test"), slices=slices)


if __name__ == "__main__":
  tf.test.main()
