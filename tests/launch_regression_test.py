"""End-to-end tests of the regression launcher, in subprocesses."""

import collections
import glob
import json
import os
import signal
import tempfile
import time

from tensorboard.backend.event_processing import event_accumulator
import tensorflow as tf

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
]


def _flags(workdir, *extra):
  return [f"--workdir={workdir}", *_TINY, *extra]


def _result_lines(workdir):
  path = os.path.join(workdir, "results.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class RegressionLauncherTest(tf.test.TestCase):
  def test_sweep_writes_every_output(self):
    workdir = tempfile.mkdtemp(dir=self.get_temp_dir())
    output = testing.run_launcher("launch.regression", _flags(workdir))
    records = _result_lines(workdir)
    self.assertLen(records, 8)
    for name in ("config.json", "table.md", "figure2.png", "figure3.png"):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    self.assertIn("| booth | 20 |", output)
    self.assertIn("TensorBoard: tensorboard --logdir=", output)
    run = records[0]["run_id"]
    (events,) = glob.glob(
      os.path.join(workdir, "runs", run, "tensorboard", "test", "events.out.*")
    )
    accumulator = event_accumulator.EventAccumulator(events)
    accumulator.Reload()
    self.assertIn("test/value_mse", accumulator.Tags()["tensors"])
    self.assertIn("test/fitted_surface", accumulator.Tags()["tensors"])
    train_events = glob.glob(
      os.path.join(workdir, "runs", run, "tensorboard", "train", "events.out.*")
    )
    self.assertNotEmpty(train_events)

  def test_killed_sweep_resumes_without_repeating_runs(self):
    workdir = tempfile.mkdtemp(dir=self.get_temp_dir())
    process = testing.start_launcher("launch.regression", _flags(workdir))
    deadline = time.time() + 300
    while len(_result_lines(workdir)) < 2 and time.time() < deadline:
      time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    finished_before = [r["run_id"] for r in _result_lines(workdir)]
    self.assertBetween(len(finished_before), 2, 7)

    output = testing.run_launcher("launch.regression", _flags(workdir))
    self.assertIn(f"{len(finished_before)} already finished", output)
    run_ids = [r["run_id"] for r in _result_lines(workdir)]
    self.assertLen(run_ids, 8)
    self.assertEqual(collections.Counter(run_ids).most_common(1)[0][1], 1)
    self.assertEqual(run_ids[: len(finished_before)], finished_before)

  def test_unknown_strategy_is_an_error(self):
    output = testing.run_launcher(
      "launch.regression",
      _flags(tempfile.mkdtemp(dir=self.get_temp_dir()), "--strategy=gpu"),
      timeout=300,
      expect_success=False,
    )
    self.assertIn("Received: strategy='gpu'", output)


if __name__ == "__main__":
  tf.test.main()
