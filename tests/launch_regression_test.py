"""End-to-end tests of the regression launcher."""

import json
import os
import tempfile

from absl import flags
from absl.testing import parameterized
import keras
from tensorboard.backend.event_processing import event_accumulator
import tensorflow as tf

from launch import common
from launch import files
from launch import regression
from sobolev_tf import testing

_TINY = [
  "--functions=booth,styblinski_tang",
  "--train_sizes=20,100",
  "--methods=regular,sobolev",
  "--seeds=1",
  "--steps=40",
  "--batch_size=8",
  "--test_size=200",
  "--checkpoints_per_run=2",
  "--checkpoint_secs=0",
  "--steps_per_execution=10",
]

# The sweeps the kill-and-resume tests kill, without seeds and steps.
_KILLED = [
  "--functions=booth",
  "--train_sizes=20,100",
  "--methods=sobolev",
  "--batch_size=8",
  "--test_size=200",
  "--checkpoints_per_run=4",
  "--checkpoint_secs=0",
]


def _records(workdir):
  return files.ResultStore(os.path.join(workdir, "results.jsonl")).records()


def _without_time(records):
  return [testing.without_timings(r) for r in records]


class InProcessTest(tf.test.TestCase, parameterized.TestCase):
  def test_sweep_writes_every_output_to_a_ram_workdir(self):
    workdir = "ram://launch_regression_test/workdir"
    testing.parse_flags(regression.FLAGS, [f"--workdir={workdir}", *_TINY])
    regression.main([])
    self.assertLen(_records(workdir), 8)
    self.assertCountEqual(
      tf.io.gfile.listdir(workdir),
      [
        "config.json",
        "results.jsonl",
        "table.md",
        "figure2.png",
        "figure3.png",
        "runs",
      ],
    )
    config = json.loads(files.read_file(f"{workdir}/config.json"))
    self.assertEqual(set(config["flags"]), set(regression.FLAGS))
    self.assertEqual(config["flags"]["steps_per_execution"], 10)
    self.assertEqual(
      config["effective"]["concurrent_runs"],
      common.resolve_concurrent_runs(
        "auto", tf.distribute.get_strategy(), False
      ),
    )
    table = files.read_file(f"{workdir}/table.md").decode()
    self.assertIn("| booth | 20 |", table)
    run = f"{workdir}/runs/styblinski_tang-d2-n100-sobolev-s0"
    self.assertCountEqual(
      tf.io.gfile.listdir(run), ["model.keras", "tensorboard"]
    )
    network = keras.saving.load_model(f"{run}/model.keras")
    self.assertEqual(network(tf.zeros([3, 2])).shape, [3, 1])

  def test_cycles_are_evaluated_at_their_ends_and_flags_reach_the_runs(self):
    workdir = "ram://launch_regression_test/cycles"
    testing.parse_flags(
      regression.FLAGS,
      [
        f"--workdir={workdir}",
        *_TINY,
        "--functions=booth",
        "--train_sizes=20",
        "--cycle_steps=10",
        "--validation_fraction=0.25",
        "--balance_floor=0.2",
      ],
    )
    regression.main([])
    records = _records(workdir)
    self.assertLen(records, 2)
    for record in records:
      self.assertEndsWith(record["run_id"], "-f0.2-v0.25-c10-s0")
      self.assertEqual(record["cycle_steps"], 10)
      self.assertEqual(record["balance_floor"], 0.2)
      self.assertEqual([p["step"] for p in record["curve"]], [10, 20, 30, 40])
      self.assertIn(record["best_step"], [10, 20, 30, 40])

  def test_runs_log_train_and_eval_scalars_and_hyperparameters(self):
    workdir = tempfile.mkdtemp(dir=self.get_temp_dir())
    testing.parse_flags(
      regression.FLAGS,
      [
        f"--workdir={workdir}",
        *_TINY,
        "--functions=booth",
        "--train_sizes=20",
        "--methods=sobolev",
      ],
    )
    regression.main([])
    (events,) = tf.io.gfile.glob(
      os.path.join(workdir, "runs", "*", "tensorboard", "events.*")
    )
    accumulator = event_accumulator.EventAccumulator(events)
    accumulator.Reload()
    tags = set(accumulator.Tags()["tensors"])
    self.assertContainsSubset(
      {
        "train/loss",
        "train/value_loss",
        "train/d1_loss",
        "train/steps_per_second",
        "eval/test_mse",
        "eval/test_gradient_mse",
        "eval/fitted_surface",
        "_hparams_/session_start_info",
      },
      tags,
    )

  @parameterized.parameters(
    ("--functions=booth,nosuch", "flag --functions=.*Received: name='nosuch'"),
    ("--functions=booth:0", "flag --functions=.*got '0'"),
    ("--seeds=0", "flag --seeds=0: 0 is not a positive integer"),
    ("--test_size=0", "flag --test_size=0: 0 is not a positive integer"),
    ("--steps=-5", "flag --steps=-5"),
    ("--batch_size=0", "flag --batch_size=0"),
    ("--train_sizes=20,0", "flag --train_sizes=.*got '0'"),
    ("--methods=regular,exact", "flag --methods=.*got 'exact'"),
    ("--learning_rate=0", "flag --learning_rate=0.0"),
    ("--derivative_weight=-1", "flag --derivative_weight=-1: -1.0 is not"),
    ("--activation=nosuch", "flag --activation=nosuch"),
    ("--strategy=gpu", "flag --strategy=gpu"),
    ("--checkpoints_per_run=0", "flag --checkpoints_per_run=0"),
    ("--checkpoint_secs=-1", "flag --checkpoint_secs=-1"),
    ("--steps_per_execution=0", "flag --steps_per_execution=0"),
  )
  def test_every_flag_is_checked_before_training(self, argument, message):
    workdir = os.path.join(self.get_temp_dir(), "never")
    with self.assertRaisesRegex(flags.IllegalFlagValueError, message):
      testing.parse_flags(
        regression.FLAGS, [f"--workdir={workdir}", *_TINY, argument]
      )
    self.assertFalse(os.path.exists(workdir))


class KilledTest(tf.test.TestCase):
  def test_killed_sweep_ends_as_an_uninterrupted_one(self):
    flags_ = [*_KILLED, "--seeds=1", "--steps=600", "--deterministic"]
    straight = tempfile.mkdtemp(dir=self.get_temp_dir())
    killed = tempfile.mkdtemp(dir=self.get_temp_dir())
    second = "booth-d2-n100-sobolev-s0"
    output = testing.kill_and_resume(
      "launch.regression",
      flags_,
      straight,
      killed,
      f"runs/{second}/checkpoints/ckpt-*.index",
    )
    self.assertIn("2 runs, 1 already finished, 1 to go.", output)
    self.assertRegex(output, f"Restored .*{second}/checkpoints/ckpt-")
    self.assertEqual(
      _without_time(_records(killed)), _without_time(_records(straight))
    )
    for run in ("booth-d2-n20-sobolev-s0", second):
      path = os.path.join("runs", run, "model.keras")
      for a, b in zip(
        keras.saving.load_model(os.path.join(straight, path)).weights,
        keras.saving.load_model(os.path.join(killed, path)).weights,
        strict=True,
      ):
        self.assertAllEqual(a, b)

  def test_killed_sweep_of_runs_at_once_ends_as_an_uninterrupted_one(self):
    flags_ = [*_KILLED, "--seeds=2", "--steps=1200", "--concurrent_runs=2"]
    straight = tempfile.mkdtemp(dir=self.get_temp_dir())
    killed = tempfile.mkdtemp(dir=self.get_temp_dir())
    third = "booth-d2-n100-sobolev-s0"
    output = testing.kill_and_resume(
      "launch.regression",
      flags_,
      straight,
      killed,
      f"runs/{third}/checkpoints/ckpt-*.index",
    )
    self.assertRegex(
      output, r"4 runs, [0-2] already finished, [2-4] to go, 2 at"
    )
    self.assertRegex(output, f"Restored .*{third}/checkpoints/ckpt-")
    records = [_without_time(_records(d)) for d in (killed, straight)]
    self.assertEqual(*([r["run_id"] for r in rs] for rs in records))
    for resumed, uninterrupted in zip(*records, strict=True):
      for key in ("test_mse", "test_gradient_mse"):
        self.assertAllClose(resumed[key], uninterrupted[key], rtol=1e-4)


if __name__ == "__main__":
  tf.test.main()
