"""End-to-end tests of the A2C teacher launcher."""

import json
import os
import tempfile

from absl import flags
from absl.testing import parameterized
import tensorflow as tf

from launch import files
from launch import train_teacher
from sobolev_tf import testing
from sobolev_tf.layers import atari

_TINY = ["--game=breakout", "--num_envs=2", "--eval_episodes=1"]


def _records(workdir):
  return files.ResultStore(os.path.join(workdir, "results.jsonl")).records()


class InProcessTest(tf.test.TestCase, parameterized.TestCase):
  def test_trains_exports_and_evaluates_on_a_ram_workdir(self):
    workdir = "ram://launch_train_teacher_test/workdir"
    # 4 updates of 2 environments × 5 steps × 4 frames.
    testing.parse_flags(
      train_teacher.FLAGS,
      [
        f"--workdir={workdir}",
        *_TINY,
        "--frames=160",
        "--steps_per_execution=2",
      ],
    )
    train_teacher.main([])
    (record,) = _records(workdir)
    self.assertEqual(record["frames"], 160)
    self.assertLen(record["scores"]["teacher"], 1)
    self.assertEqual(record["teacher_mean"], record["scores"]["teacher"][0])
    self.assertEqual(
      record["weights"], f"{workdir}/runs/breakout-s0/teacher_breakout.npz"
    )
    atari.load_teacher(record["weights"], 4)
    self.assertCountEqual(
      tf.io.gfile.listdir(workdir),
      ["config.json", "results.jsonl", "table.md", "runs"],
    )
    config = json.loads(files.read_file(f"{workdir}/config.json"))
    self.assertEqual(set(config["flags"]), set(train_teacher.FLAGS))
    self.assertIn(
      "| breakout | 160 |", files.read_file(f"{workdir}/table.md").decode()
    )

  def test_refuses_several_replicas_before_training(self):
    workdir = os.path.join(self.get_temp_dir(), "never")
    testing.parse_flags(
      train_teacher.FLAGS,
      [f"--workdir={workdir}", *_TINY, "--frames=160", "--strategy=mirrored"],
    )
    with self.assertRaisesRegex(
      ValueError, "Received: MirroredStrategy with 2 replicas"
    ):
      train_teacher.main([])
    self.assertFalse(os.path.exists(workdir))

  @parameterized.parameters(
    ("--game=nosuch", "flag --game=nosuch"),
    ("--frames=0", "flag --frames=0"),
    ("--num_envs=0", "flag --num_envs=0"),
    ("--seed=-1", "flag --seed=-1"),
    ("--eval_episodes=0", "flag --eval_episodes=0"),
  )
  def test_every_flag_is_checked_before_training(self, argument, message):
    with self.assertRaisesRegex(flags.IllegalFlagValueError, message):
      testing.parse_flags(
        train_teacher.FLAGS, ["--workdir=ram://never", *_TINY, argument]
      )


class KilledTest(tf.test.TestCase):
  def test_killed_run_ends_as_an_uninterrupted_one(self):
    straight = tempfile.mkdtemp(dir=self.get_temp_dir())
    killed = tempfile.mkdtemp(dir=self.get_temp_dir())
    output = testing.kill_and_resume(
      "launch.train_teacher",
      [
        *_TINY,
        "--frames=4000",  # 100 updates
        "--checkpoints_per_run=4",
        "--checkpoint_secs=0",
        "--steps_per_execution=5",
        "--deterministic",
      ],
      straight,
      killed,
      "runs/*/checkpoints/ckpt-*.index",
    )
    self.assertRegex(output, "Restored .*/checkpoints/ckpt-")
    self.assertRegex(output, "Replayed [1-9][0-9]* environment steps")
    (resumed,), (uninterrupted,) = (
      [testing.without_timings(r) for r in _records(workdir)]
      for workdir in (killed, straight)
    )
    for record in (resumed, uninterrupted):
      record.pop("weights")
    self.assertEqual(resumed, uninterrupted)
    weights = [
      atari.load_teacher(
        os.path.join(workdir, "runs", "breakout-s0", "teacher_breakout.npz"), 4
      ).variables
      for workdir in (straight, killed)
    ]
    for a, b in zip(*weights, strict=True):
      self.assertAllEqual(a, b)


if __name__ == "__main__":
  tf.test.main()
