"""End-to-end tests of the distillation launcher."""

import json
import os
import tempfile

from absl import flags
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from launch import distill
from launch import files
from sobolev_tf import testing
from sobolev_tf.layers import atari


def _teacher_file(path):
  teacher = atari.AtariTeacher(4, seed=7)  # Breakout has 4 actions.
  teacher(tf.zeros([1, *atari.FRAME_SHAPE], tf.uint8))
  atari.save_weights(teacher, path)
  return path


def _records(workdir):
  return files.ResultStore(os.path.join(workdir, "results.jsonl")).records()


_TINY = [
  "--game=breakout",
  "--num_states=64",
  "--num_envs=4",
  "--test_fraction=0.3",
  "--seeds=1",
  "--batch_size=8",
]


class InProcessTest(tf.test.TestCase, parameterized.TestCase):
  def test_record_and_distil_end_to_end_on_a_ram_workdir(self):
    workdir = "ram://launch_distill_test/workdir"
    teacher = _teacher_file("ram://launch_distill_test/teacher.npz")
    testing.parse_flags(
      distill.FLAGS,
      [
        f"--workdir={workdir}",
        f"--teacher={teacher}",
        *_TINY,
        "--fractions=0.5,1.0",
        "--steps=6",
        "--eval_every=3",
        "--play_episodes=2",
      ],
    )
    distill.main([])
    self.assertCountEqual(
      tf.io.gfile.listdir(workdir),
      [
        "config.json",
        "recording.npz",
        "play_reference.json",
        "results.jsonl",
        "table.md",
        "figure4.png",
        "runs",
      ],
    )
    records = _records(workdir)
    self.assertLen(records, 4)
    for record in records:
      self.assertEqual([p["step"] for p in record["curve"]], [3, 6])
      self.assertEqual(record["kl"], record["curve"][-1]["kl"])
      self.assertLen(record["scores"], 2)
    reference = json.loads(files.read_file(f"{workdir}/play_reference.json"))
    self.assertEqual(set(reference), {"teacher", "random"})
    self.assertLen(reference["random"], 2)
    table = files.read_file(f"{workdir}/table.md").decode()
    self.assertIn("| 0.5 |", table)
    self.assertIn("|  |  | teacher |  |  |", table)
    config = json.loads(files.read_file(f"{workdir}/config.json"))
    self.assertEqual(set(config["flags"]), set(distill.FLAGS))
    with np.load(
      tf.io.gfile.GFile(f"{workdir}/recording.npz", "rb")
    ) as recording:
      self.assertEqual(recording["frames"].shape, (64, *atari.FRAME_SHAPE))

  @parameterized.parameters(
    ("--game=nosuch", "flag --game=nosuch: .*Received: game='nosuch'"),
    ("--teacher=ram://missing.npz", "flag --teacher=.*no such file"),
    ("--fractions=0.5,0", "flag --fractions=.*got '0'"),
    ("--fractions=1.5", "flag --fractions=.*got '1.5'"),
    ("--methods=regular,exact", "flag --methods=.*got 'exact'"),
    ("--test_fraction=1", r"flag --test_fraction=1.0: .*\(0, 1\)"),
    ("--seeds=0", "flag --seeds=0"),
    ("--num_states=0", "flag --num_states=0"),
    ("--eval_every=-1", "flag --eval_every=-1"),
    ("--play_episodes=-1", "flag --play_episodes=-1"),
    ("--strategy=gpu", "flag --strategy=gpu"),
  )
  def test_every_flag_is_checked_before_recording(self, argument, message):
    teacher = _teacher_file("ram://launch_distill_test/checks/teacher.npz")
    with self.assertRaisesRegex(flags.IllegalFlagValueError, message):
      testing.parse_flags(
        distill.FLAGS,
        ["--workdir=ram://never", f"--teacher={teacher}", *_TINY, argument],
      )


class KilledTest(tf.test.TestCase):
  def test_killed_run_ends_as_an_uninterrupted_one(self):
    teacher = _teacher_file(os.path.join(self.get_temp_dir(), "teacher.npz"))
    straight = tempfile.mkdtemp(dir=self.get_temp_dir())
    killed = tempfile.mkdtemp(dir=self.get_temp_dir())
    output = testing.kill_and_resume(
      "launch.distill",
      [
        f"--teacher={teacher}",
        *_TINY,
        "--fractions=1.0",
        "--methods=sobolev",
        "--steps=60",
        "--eval_every=15",
        "--play_episodes=1",
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
    (resumed,), (uninterrupted,) = (
      [testing.without_timings(r) for r in _records(workdir)]
      for workdir in (killed, straight)
    )
    self.assertEqual([p["step"] for p in resumed["curve"]], [15, 30, 45, 60])
    self.assertEqual(resumed, uninterrupted)


if __name__ == "__main__":
  tf.test.main()
