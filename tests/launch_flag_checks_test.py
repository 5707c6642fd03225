"""Tests for launch.flag_checks."""

from absl import flags
from absl.testing import parameterized
import tensorflow as tf

from launch import flag_checks
from sobolev_tf import testing


class FlagChecksTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    self.flag_values = flags.FlagValues()
    flags.DEFINE_list("sizes", ["1"], "Sizes.", flag_values=self.flag_values)
    flags.DEFINE_string("name", "a", "Name.", flag_values=self.flag_values)
    flags.DEFINE_float("rate", 0.1, "Rate.", flag_values=self.flag_values)
    flag_checks.check_list_flag(
      self.flag_values, "sizes", flag_checks.positive_int
    )
    flag_checks.check_flag(
      self.flag_values, "name", lambda v: flag_checks.one_of(v, ("a", "b"))
    )
    flag_checks.check_flag(
      self.flag_values, "rate", flag_checks.positive_number
    )

  def test_good_values_parse(self):
    testing.parse_flags(
      self.flag_values, ["--sizes=1,20", "--name=b", "--rate=3"]
    )
    self.assertEqual(self.flag_values.sizes, ["1", "20"])

  @parameterized.parameters(
    (
      "--sizes=1,0",
      r"flag --sizes=\['1', '0'\]: expected positive integers, got '0'",
    ),
    ("--sizes=x", "got 'x'"),
    ("--sizes=", "expected at least one value"),
    ("--name=c", r"expected values among \['a', 'b'\], got 'c'"),
    ("--rate=0", "flag --rate=0.0: expected a positive number, got 0.0"),
  )
  def test_bad_values_name_the_flag(self, argument, message):
    with self.assertRaisesRegex(flags.IllegalFlagValueError, message):
      testing.parse_flags(self.flag_values, [argument])


if __name__ == "__main__":
  tf.test.main()
