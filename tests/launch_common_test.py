"""Tests for launch.common."""

from unittest import mock

from absl import flags
from absl.testing import parameterized
import tensorflow as tf

from launch import common
from sobolev_tf import execution
from sobolev_tf import testing


class SharedFlagsTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    self.flag_values = flags.FlagValues()
    self.holders = {
      **common.define_common_flags(self.flag_values, checkpoints_per_run=6),
      **common.define_sweep_flags(
        self.flag_values, steps=7, batch_size=5, learning_rate_help="Step."
      ),
      **common.define_balance_flags(
        self.flag_values,
        "gradient_weight",
        "Weight.",
        terms="a and b",
        balance_note="none was the old setting",
      ),
      "methods": common.define_choices_flag(
        self.flag_values, "methods", ["x"], ("x", "y"), "Methods"
      ),
      "eval_every": common.define_eval_every_flag(self.flag_values, 9),
    }

  def test_defaults_are_the_launchers(self):
    testing.parse_flags(self.flag_values, ["--workdir=ram://never"])
    self.assertEqual(
      {name: holder.value for name, holder in self.holders.items()},
      {
        "workdir": "ram://never",
        "strategy": "default",
        "num_gpus": 0,
        "tpu": "",
        "cpu_devices": 0,
        "deterministic": False,
        "steps_per_execution": 50,
        "checkpoints_per_run": 6,
        "checkpoint_secs": 30.0,
        "seeds": 3,
        "steps": 7,
        "batch_size": 5,
        "learning_rate": 1e-3,
        "gradient_weight": 1.0,
        "balance": "target_scale",
        "balance_floor": 0.1,
        "methods": ["x"],
        "eval_every": 9,
      },
    )
    self.assertEqual(set(self.flag_values), set(self.holders))

  def test_help_holds_the_launchers_words(self):
    self.assertEqual(self.flag_values["learning_rate"].help, "Step.")
    self.assertEqual(self.flag_values["gradient_weight"].help, "Weight.")
    self.assertEndsWith(
      self.flag_values["balance"].help,
      "Balance between a and b (SobolevConfig.balance); none was the old "
      "setting.",
    )
    self.assertEqual(
      self.flag_values["methods"].help, "Methods, among ['x', 'y']."
    )

  @parameterized.parameters(
    ("--num_gpus=-1", "flag --num_gpus=-1"),
    ("--cpu_devices=-1", "flag --cpu_devices=-1"),
    ("--steps_per_execution=0", "flag --steps_per_execution=0"),
    ("--checkpoints_per_run=0", "flag --checkpoints_per_run=0"),
    ("--checkpoint_secs=-1", "flag --checkpoint_secs=-1"),
    ("--seeds=0", "flag --seeds=0: 0 is not a positive integer"),
    ("--steps=0", "flag --steps=0"),
    ("--batch_size=0", "flag --batch_size=0"),
    ("--learning_rate=0", "flag --learning_rate=0.0: expected a positive"),
    ("--gradient_weight=-1", "flag --gradient_weight=-1: -1.0 is not"),
    ("--balance=other", "flag --balance=other"),
    ("--methods=x,z", "flag --methods=.*got 'z'"),
    ("--methods=", "expected at least one value"),
    ("--eval_every=-1", "flag --eval_every=-1"),
  )
  def test_bad_values_name_the_flag(self, argument, message):
    with self.assertRaisesRegex(flags.IllegalFlagValueError, message):
      testing.parse_flags(self.flag_values, ["--workdir=ram://never", argument])


class ConcurrentRunsTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.parameters(
    dict(cpu_only=True, cores=2, expected=3),
    dict(cpu_only=True, cores=1, expected=2),
    dict(cpu_only=True, cores=64, expected=common.MOST_CONCURRENT_RUNS),
    dict(cpu_only=False, cores=64, expected=1),
    dict(cpu_only=True, cores=8, deterministic=True, expected=1),
  )
  def test_auto(self, cpu_only, cores, expected, deterministic=False):
    with (
      mock.patch.object(execution, "on_cpu_only", return_value=cpu_only),
      mock.patch.object(
        common.os, "sched_getaffinity", return_value=set(range(cores))
      ),
    ):
      self.assertEqual(
        common.resolve_concurrent_runs(
          "auto", tf.distribute.get_strategy(), deterministic
        ),
        expected,
      )

  def test_auto_is_one_run_under_several_replicas(self):
    strategy = mock.Mock(num_replicas_in_sync=2, cluster_resolver=None)
    with mock.patch.object(execution, "on_cpu_only", return_value=True):
      self.assertEqual(
        common.resolve_concurrent_runs("auto", strategy, False), 1
      )

  def test_a_number(self):
    strategy = tf.distribute.get_strategy()
    self.assertEqual(common.resolve_concurrent_runs("3", strategy, False), 3)
    with self.assertRaisesRegex(ValueError, "expected positive integers"):
      common.resolve_concurrent_runs("0", strategy, False)


if __name__ == "__main__":
  tf.test.main()
