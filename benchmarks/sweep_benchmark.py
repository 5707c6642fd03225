r"""Sweep benchmark: a regression sweep's wall time against its steps' floor.

The paper's experiments are sweeps of many small runs, where a run's cost is
more than its steps: building, compiling, evaluating, writing. This times a
whole sweep as a user runs it (`python -m launch.regression ...` in a fresh
workdir, one process) and sets it against its floor: the sum over its runs
of steps times the seconds per step of that run's compiled step, measured
as `make bench` measures steps (after a warm-up, the median of repeated
executions), in the same process. It writes the runs per minute, the wall
time over the floor and where the time went (each run's phases, from its
record).

    python -m benchmarks.sweep_benchmark --sweep=quick \
        --output=docs/benchmarks/sweep.md
    python -m benchmarks.sweep_benchmark --sweep=grid_small \
        --output=docs/benchmarks/sweep.md --append
"""

import collections
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict
from typing import List

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from benchmarks import machine
from launch import common
from launch import loop
from sobolev_tf.tasks import regression
from sobolev_tf.tasks import regression_task

# Each sweep: the launcher's flags, and a name.
SWEEPS = {
  "quick": ("make demo's sweep", ["--quick"]),
  "grid_small": (
    "the full grid's 20- and 100-point part",
    ["--train_sizes=20,100", "--seeds=5", "--steps=2000"],
  ),
}

_SWEEP = flags.DEFINE_enum("sweep", "quick", list(SWEEPS), "Which sweep.")
_EXTRA = flags.DEFINE_list(
  "launcher_flags", [], "Further flags of the launcher, e.g. --activation=relu."
)
_REPEATS = flags.DEFINE_integer(
  "repeats", 7, "Timed executions per distinct step, for the floor."
)
_OUTPUT = flags.DEFINE_string("output", None, "Markdown file to write.")
_APPEND = flags.DEFINE_bool("append", False, "Append to --output.")


def run_sweep(workdir: str, launcher_flags: List[str]) -> float:
  """Wall seconds of the launcher's sweep in `workdir`, a process of its own."""
  command = [
    sys.executable,
    "-m",
    "launch.regression",
    f"--workdir={workdir}",
    *launcher_flags,
  ]
  start = time.perf_counter()
  subprocess.run(command, check=True, capture_output=True)
  return time.perf_counter() - start


def step_seconds(record: Dict, settings: loop.Settings, repeats: int) -> float:
  """Median seconds per step of a run's compiled step, as `make bench` times.

  The run's task is built afresh and one execution of
  `settings.steps_per_execution` steps warms up (compiles); then `repeats`
  executions are timed.
  """
  names = {f.name for f in regression.RunConfig.__dataclass_fields__.values()}
  config = regression.RunConfig(
    **{
      k: tuple(v) if k == "hidden_sizes" else v
      for k, v in record.items()
      if k in names
    }
  )
  task = regression_task.RegressionTask(config)
  task.build()
  strategy = tf.distribute.get_strategy()
  train = loop.trainer(task, strategy, 0, settings)
  count = settings.steps_per_execution
  train(count)
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    train(count)
    seconds.append(time.perf_counter() - start)
  return statistics.median(seconds) / count


def program(record: Dict) -> tuple:
  """What sets a run's step time: its method, batch and network."""
  batch = min(record["batch_size"], record["train_size"])
  return (record["method"], batch, record["activation"], record["dim"])


def main(argv):
  """Runs the sweep, measures its floor, writes the report."""
  del argv
  description, launcher_flags = SWEEPS[_SWEEP.value]
  launcher_flags = launcher_flags + list(_EXTRA.value)
  with tempfile.TemporaryDirectory() as workdir:
    wall = run_sweep(workdir, launcher_flags)
    with open(os.path.join(workdir, "results.jsonl")) as f:
      records = [json.loads(line) for line in f]
    with open(os.path.join(workdir, "config.json")) as f:
      config = json.load(f)
  launched = config["flags"]
  strategy = tf.distribute.get_strategy()
  concurrent_runs = config["effective"]["concurrent_runs"]
  settings = loop.Settings(
    steps_per_execution=launched["steps_per_execution"],
    jit_compile=common.resolve_jit_compile(launched["jit_compile"], strategy),
    fuse_steps=common.resolve_fuse_steps(launched["fuse_steps"]),
  )
  per_step = {}
  for record in records:
    if program(record) not in per_step:
      per_step[program(record)] = step_seconds(record, settings, _REPEATS.value)
      logging.info(
        "%s: %.3f ms per step", program(record), per_step[program(record)] * 1e3
      )
  floor = sum(r["steps"] * per_step[program(r)] for r in records)
  phases = collections.Counter()
  for record in records:
    phases.update(record["seconds"])
  lines = [
    f"## {description}: {len(records)} runs",
    "",
    f"- Command: `{machine.command_line()}`",
    f"- Launcher: `python -m launch.regression {' '.join(launcher_flags)}`",
    f"- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; git "
    f"{machine.git_revision()}; TensorFlow {tf.__version__}; "
    f"{len(os.sched_getaffinity(0))} CPUs ({machine.cpu_model()}); load "
    f"average {machine.load_average()} after",
    "",
    "| wall s | runs per minute | runs at once | floor s | wall / floor |",
    "|--:|--:|--:|--:|--:|",
    f"| {wall:.1f} | {60 * len(records) / wall:.1f} | {concurrent_runs} | "
    f"{floor:.1f} | {wall / floor:.2f} |",
    "",
    "Where the runs' time went (seconds, summed over runs, so runs at once "
    "count their shared time once each; the rest of the wall time is the "
    "launcher's own: imports, data, the table, figures):",
    "",
    "| " + " | ".join(phases) + " |",
    "|" + "--:|" * len(phases),
    "| " + " | ".join(f"{v:.1f}" for v in phases.values()) + " |",
    "",
    "Seconds per step of each distinct step (the floor's): "
    + "; ".join(
      f"{m} at batch {b} ({a}): {s * 1e3:.3f} ms"
      for (m, b, a, _), s in per_step.items()
    ),
    "",
  ]
  text = "\n".join(lines)
  print(text)
  if _OUTPUT.value:
    mode = "a" if _APPEND.value else "w"
    with open(_OUTPUT.value, mode) as f:
      f.write(text + "\n")


if __name__ == "__main__":
  app.run(main)
