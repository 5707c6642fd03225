"""Cluster behaviour of the launchers, in subprocesses.

Two workers under MultiWorkerMirroredStrategy on 127.0.0.1, and
bit-identical runs under `--deterministic`. (Each launcher's test file
kills a run with SIGKILL and resumes it.)
"""

import json
import os
import subprocess
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

from launch import local_cluster

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PROGRAM = os.path.join(_ROOT, "tests", "distributed_training_program.py")
# A script's own directory, not the working directory, starts `sys.path`: the
# program finds `launch` (which is not installed) through PYTHONPATH.
_ENV = {
  **os.environ,
  "PYTHONPATH": os.pathsep.join(
    filter(None, [_ROOT, os.environ.get("PYTHONPATH")])
  ),
}
_RUN = "booth-d2-n100-sobolev-s0"


def _one_run(method="sobolev"):
  """Launcher arguments of a sweep of one run: Booth, 100 points, seed 0."""
  return [
    "-m",
    "launch.regression",
    "--functions=booth",
    "--train_sizes=100",
    f"--methods={method}",
    "--seeds=1",
    "--batch_size=8",
    "--test_size=200",
  ]


def _run(python_args, timeout=600):
  process = subprocess.run(
    [sys.executable, *python_args],
    cwd=_ROOT,
    env=_ENV,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  return process.returncode, process.stdout + process.stderr


def _run_workers(python_args, num_workers=2, timeout=600):
  processes = local_cluster.start_workers(
    python_args,
    num_workers,
    cwd=_ROOT,
    env=_ENV,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  outputs = []
  for process in processes:
    output, _ = process.communicate(timeout=timeout)
    outputs.append((process.returncode, output))
  return outputs


def _records(workdir):
  with open(os.path.join(workdir, "results.jsonl")) as f:
    return [json.loads(line) for line in f]


def _weights(workdir, run=_RUN):
  path = os.path.join(workdir, "runs", run, "model.keras")
  return keras.saving.load_model(path).get_weights()


class LocalClusterTest(tf.test.TestCase):
  def test_tf_config_names_every_worker(self):
    ports = local_cluster.free_ports(3)
    self.assertLen(set(ports), 3)
    config = json.loads(local_cluster.tf_config(ports, 2))
    self.assertEqual(config["task"], {"type": "worker", "index": 2})
    self.assertEqual(
      config["cluster"]["worker"], [f"127.0.0.1:{p}" for p in ports]
    )
    with self.assertRaisesRegex(ValueError, "Received: index=3"):
      local_cluster.tf_config(ports, 3)
    with self.assertRaisesRegex(ValueError, "Received: num_workers=0"):
      local_cluster.start_workers(["-c", "pass"], 0)


class MultiWorkerTest(tf.test.TestCase):
  def test_two_workers_match_mirrored_on_two_cpus(self):
    workers = tempfile.mkdtemp(dir=self.get_temp_dir())
    mirrored = tempfile.mkdtemp(dir=self.get_temp_dir())
    for code, output in _run_workers(
      [_PROGRAM, f"--workdir={workers}", "--strategy=multi_worker_mirrored"]
    ):
      self.assertEqual(code, 0, output)
    code, output = _run(
      [_PROGRAM, f"--workdir={mirrored}", "--strategy=mirrored"]
      + ["--cpu_devices=2"]
    )
    self.assertEqual(code, 0, output)

    chief, other, single = (
      np.load(os.path.join(directory, name))
      for directory, name in (
        (workers, "worker_0.npz"),
        (workers, "worker_1.npz"),
        (mirrored, "worker_0.npz"),
      )
    )
    self.assertEqual(int(chief["replicas"]), 2)
    self.assertEqual(int(single["replicas"]), 2)
    weights = [key for key in chief.files if key.startswith("w")]
    self.assertNotEmpty(weights)
    for key in weights:
      self.assertAllEqual(chief[key], other[key])
      self.assertAllClose(chief[key], single[key], rtol=1e-5, atol=1e-6)
    # Only the chief's checkpoints remain; the other worker's scratch copy
    # was deleted.
    checkpoints = os.path.join(workers, "run", "checkpoints")
    self.assertNotIn("worker_1_scratch", os.listdir(checkpoints))
    self.assertEqual(
      tf.train.latest_checkpoint(checkpoints),
      os.path.join(checkpoints, "ckpt-60"),
    )

  def test_launcher_on_two_workers_matches_default_strategy(self):
    sweep = [
      "-m",
      "launch.regression",
      "--functions=booth",
      "--train_sizes=20,100",
      "--methods=regular,sobolev",
      "--seeds=1",
      "--steps=60",
      "--batch_size=8",
      "--test_size=200",
    ]
    workers = tempfile.mkdtemp(dir=self.get_temp_dir())
    default = tempfile.mkdtemp(dir=self.get_temp_dir())
    outputs = _run_workers(
      sweep + [f"--workdir={workers}", "--strategy=multi_worker_mirrored"]
    )
    for code, output in outputs:
      self.assertEqual(code, 0, output)
    self.assertIn("| booth | 20 |", outputs[0][1])
    self.assertNotIn("| booth | 20 |", outputs[1][1])
    code, output = _run(sweep + [f"--workdir={default}"])
    self.assertEqual(code, 0, output)

    on_workers = {r["run_id"]: r for r in _records(workers)}
    on_one = {r["run_id"]: r for r in _records(default)}
    self.assertLen(_records(workers), 4)  # the chief's records only
    self.assertEqual(set(on_workers), set(on_one))
    for run, record in on_one.items():
      for key in ("test_mse", "test_gradient_mse"):
        self.assertAllClose(on_workers[run][key], record[key], rtol=1e-3)


class DeterminismTest(tf.test.TestCase):
  def test_deterministic_runs_are_bit_identical(self):
    flags = _one_run("stochastic") + ["--steps=200", "--deterministic"]
    run = "booth-d2-n100-stochastic-s0"
    workdirs = [tempfile.mkdtemp(dir=self.get_temp_dir()) for _ in range(2)]
    for workdir in workdirs:
      code, output = _run(flags + [f"--workdir={workdir}"])
      self.assertEqual(code, 0, output)
    first, second = (_records(workdir)[0] for workdir in workdirs)
    self.assertEqual(first["test_mse"], second["test_mse"])
    self.assertEqual(first["test_gradient_mse"], second["test_gradient_mse"])
    for a, b in zip(
      _weights(workdirs[0], run), _weights(workdirs[1], run), strict=True
    ):
      self.assertAllEqual(a, b)
    with open(os.path.join(workdirs[0], "config.json")) as f:
      self.assertTrue(json.load(f)["flags"]["deterministic"])


if __name__ == "__main__":
  tf.test.main()
