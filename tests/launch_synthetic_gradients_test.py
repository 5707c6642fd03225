"""End-to-end tests of the synthetic-gradient launcher."""

import json
import os
import tempfile

from absl import flags
from absl.testing import parameterized
from tensorboard.backend.event_processing import event_accumulator
import tensorflow as tf

from launch import files
from launch import synthetic_gradients
from sobolev_tf import testing
from sobolev_tf.tasks import synthetic_gradients as sg

_TINY = ["--dataset=digits", "--seeds=1", "--steps=20", "--channels=4,4,6"]


def _records(workdir):
  return files.ResultStore(os.path.join(workdir, "results.jsonl")).records()


class InProcessTest(tf.test.TestCase, parameterized.TestCase):
  def test_every_variant_end_to_end_on_a_ram_workdir(self):
    workdir = "ram://launch_synthetic_gradients_test/workdir"
    testing.parse_flags(
      synthetic_gradients.FLAGS,
      [f"--workdir={workdir}", *_TINY, "--steps_per_execution=10"],
    )
    synthetic_gradients.main([])
    records = _records(workdir)
    self.assertEqual([r["variant"] for r in records], list(sg.VARIANTS))
    table = files.read_file(f"{workdir}/table.md").decode()
    for variant in sg.VARIANTS:
      self.assertIn(f"| {variant} |", table)
    config = json.loads(files.read_file(f"{workdir}/config.json"))
    self.assertEqual(set(config["flags"]), set(synthetic_gradients.FLAGS))
    (events,) = tf.io.gfile.glob(
      f"{workdir}/runs/digits-m3-sobolev-s0/tensorboard/events.*"
    )
    local = os.path.join(self.get_temp_dir(), "events.out.tfevents.copy")
    tf.io.gfile.copy(events, local)
    accumulator = event_accumulator.EventAccumulator(local)
    accumulator.Reload()
    self.assertContainsSubset(
      {"train/sg_loss_0", "train/cosine_2", "eval/test_accuracy"},
      set(accumulator.Tags()["tensors"]),
    )

  @parameterized.parameters(
    ("--variants=sobolev,dni", "flag --variants=.*got 'dni'"),
    ("--channels=4,0,6", "flag --channels=.*got '0'"),
    ("--strides=1,x,1", "flag --strides=.*got 'x'"),
    ("--num_modules=0", "flag --num_modules=0"),
    ("--seeds=0", "flag --seeds=0"),
    ("--dataset=mnist", "flag --dataset=mnist"),
    ("--sg_learning_rate=0", "flag --sg_learning_rate=0.0"),
    ("--warmup_steps=-1", "flag --warmup_steps=-1"),
  )
  def test_every_flag_is_checked_before_training(self, argument, message):
    with self.assertRaisesRegex(flags.IllegalFlagValueError, message):
      testing.parse_flags(
        synthetic_gradients.FLAGS, ["--workdir=ram://never", *_TINY, argument]
      )

  def test_settings_that_do_not_fit_fail_before_training(self):
    workdir = os.path.join(self.get_temp_dir(), "never")
    testing.parse_flags(
      synthetic_gradients.FLAGS,
      [f"--workdir={workdir}", *_TINY, "--num_modules=4"],
    )
    with self.assertRaisesRegex(ValueError, "Received: num_modules=4"):
      synthetic_gradients.main([])
    self.assertFalse(os.path.exists(workdir))


class KilledTest(tf.test.TestCase):
  def test_killed_run_ends_as_an_uninterrupted_one(self):
    straight = tempfile.mkdtemp(dir=self.get_temp_dir())
    killed = tempfile.mkdtemp(dir=self.get_temp_dir())
    output = testing.kill_and_resume(
      "launch.synthetic_gradients",
      [
        "--dataset=digits",
        "--variants=sobolev",
        "--seeds=1",
        "--steps=200",
        "--channels=4,4,6",
        "--checkpoints_per_run=4",
        "--checkpoint_secs=0",
        "--steps_per_execution=10",
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
    self.assertEqual(resumed, uninterrupted)


if __name__ == "__main__":
  tf.test.main()
