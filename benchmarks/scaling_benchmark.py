r"""Cost per step and peak memory as the input and output sizes grow.

    JAX_PLATFORMS=cpu python -m benchmarks.scaling_benchmark \
        --output=docs/scaling.md --figure=docs/scaling.png
    python -m benchmarks.scaling_benchmark --quick --output=workdir/scaling.md \
        --figure=workdir/scaling.png

Sweeps an MLP d-256-256-outputs (softplus, batch 64) over input sizes d
(`--dims`, 2 to 1,024) and output sizes (`--outputs`, 1 to 64, so both sides
of d = outputs), full against stochastic Sobolev steps at order 1 and 2
(`--kinds`), in TensorFlow with XLA (`tf_xla`), without (`tf_graph`), and in
the JAX reference (`jax`). What it should show (Czarnecki et al., 2017,
Sec. 3): a stochastic step costs about as much whatever d, a full step grows
with d (order 1 with several outputs, since the Jacobian has min(d, outputs)
products, and order 2, with d of them), and full mode stops fitting first.

Each point runs in a fresh process (`scaling_point`), which reads its own
peak resident set size, so memory is measured per point. A point whose
process grows past `--memory_budget_gb` or runs longer than
`--time_budget_s` is killed and recorded as `memory` or `time`, and the
larger d of the same series are not run where the cost grows with d (see
`stops_series`); a point whose full array targets alone exceed the memory
budget is not started. Nothing
stops the sweep. The report gives, per series, the milliseconds per step,
the warm-up (compilation) seconds, the memory over the process's post-import
baseline, and the slope of log(time) against log(d): about 0 when flat,
about 1 when linear. `--quick` runs 8 small points in well under a minute.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

from absl import app
from absl import flags
from absl import logging

from benchmarks import machine
from benchmarks import report
from benchmarks import scaling_point
from benchmarks import scaling_report
from benchmarks import workloads

_OUTPUT = flags.DEFINE_string("output", None, "Markdown report to write.")
_FIGURE = flags.DEFINE_string("figure", None, "Log-log PNG figure to write.")
_DIMS = flags.DEFINE_list(
  "dims", ["2", "8", "32", "128", "512", "1024"], "Input sizes d."
)
_OUTPUTS = flags.DEFINE_list("outputs", ["1", "8", "64"], "Output sizes.")
_KINDS = flags.DEFINE_list(
  "kinds",
  ["full_o1", "stochastic_o1", "full_o2", "stochastic_o2"],
  "Step kinds.",
)
_FRAMEWORKS = flags.DEFINE_list(
  "frameworks", list(scaling_point.FRAMEWORKS), "Frameworks and settings."
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Examples per step.")
_STEPS = flags.DEFINE_integer("steps", 10, "Steps per timed call.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per point.")
_MEMORY_BUDGET_GB = flags.DEFINE_float(
  "memory_budget_gb", 6.0, "Resident memory (GiB) above which a point stops."
)
_TIME_BUDGET_S = flags.DEFINE_float(
  "time_budget_s", 300.0, "Seconds after which a point stops."
)
_JACOBIAN_MODE = flags.DEFINE_enum(
  "jacobian_mode",
  "auto",
  list(workloads.JACOBIAN_MODES),
  "jacobian_mode of the TF full steps.",
)
_JAX_FULL = flags.DEFINE_enum(
  "jax_full",
  "vmap",
  list(workloads.FULL_METHODS),
  "How JAX builds full derivatives (workloads.FULL_METHODS); vmap "
  "compiles in a time independent of d.",
)
_QUICK = flags.DEFINE_bool(
  "quick",
  False,
  "Smoke test: d in {4, 16}, 4 outputs, full and stochastic order 1, "
  "tf_xla and jax, 2 steps, 1 repeat.",
)

_POLL_SECONDS = 0.05
_MIB = 2.0**20
_OVER_BUDGET = ("memory", "time")


def sweep_points(
  dims: Sequence[int],
  outputs: Sequence[int],
  kinds: Sequence[str],
  frameworks: Sequence[str],
  **settings: Any,
) -> List[scaling_point.Point]:
  """Every combination, smaller d first, `settings` shared by all points."""
  return [
    scaling_point.Point(framework, d, num_outputs, kind, **settings)
    for d in sorted(dims)
    for num_outputs in outputs
    for kind in kinds
    for framework in frameworks
  ]


def _resident_bytes(pid: int) -> Optional[int]:
  """Resident set size of process `pid` now, or None where /proc is absent."""
  try:
    with open(f"/proc/{pid}/statm") as statm:
      return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except (OSError, IndexError, ValueError):
    return None


def _watch(process, memory_budget: float, time_budget: float) -> str:
  """Waits for `process`; kills it over a budget. Returns the status."""
  start = time.monotonic()
  while process.poll() is None:
    resident = _resident_bytes(process.pid)
    over = None
    if resident is not None and resident > memory_budget:
      over = "memory"
    elif time.monotonic() - start > time_budget:
      over = "time"
    if over:
      process.kill()
      process.wait()
      return over
    time.sleep(_POLL_SECONDS)
  return "ok" if process.returncode == 0 else "error"


def _child_env() -> Dict[str, str]:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join(
    filter(None, [root, os.environ.get("PYTHONPATH")])
  )
  return env


def error_detail(stderr: str, returncode: int) -> Tuple[str, str]:
  """`(status, detail)` of a failed process, from its last error line."""
  if returncode < 0:
    return "error", f"killed by signal {-returncode}"
  lines = [line for line in stderr.strip().splitlines() if line.strip()]
  last = lines[-1][:200] if lines else f"exit status {returncode}"
  if any(word in stderr for word in ("ResourceExhausted", "MemoryError")):
    return "memory", last
  return "error", last


def run_point(
  point: scaling_point.Point, memory_budget: float, time_budget: float
) -> scaling_point.Result:
  """Measures `point` in a fresh process, within the budgets.

  Args:
    point: the configuration.
    memory_budget: resident bytes above which the process is killed.
    time_budget: seconds after which the process is killed.

  Returns:
    The result; its measurements are those of `scaling_point.measure`.
  """
  kind = workloads.KINDS[point.kind]
  needed = workloads.target_bytes(point.workload, kind.order)
  if needed > memory_budget:
    return scaling_point.Result(
      point, "memory", f"not run: targets alone need {needed / _MIB:,.0f} MiB"
    )
  command = [sys.executable, "-m", "benchmarks.scaling_point", point.to_json()]
  with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
    process = subprocess.Popen(
      command, stdout=out, stderr=err, env=_child_env(), text=True
    )
    status = _watch(process, memory_budget, time_budget)
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read(), err.read()
  if status == "memory":
    return scaling_point.Result(
      point, status, f"over {memory_budget / _MIB:,.0f} MiB"
    )
  if status == "time":
    return scaling_point.Result(point, status, f"over {time_budget:g} s")
  if status == "error":
    return scaling_point.Result(
      point, *error_detail(stderr, process.returncode)
    )
  try:
    measurements = json.loads(stdout.splitlines()[-1])
  except (IndexError, json.JSONDecodeError):
    return scaling_point.Result(point, "error", "no measurements printed")
  return scaling_point.Result(point, "ok", measurements=measurements)


def stops_series(point: scaling_point.Point) -> bool:
  """Whether `point` over a budget means the larger d of its series are too.

  True where the cost grows with d. Not for full order 1 below d = outputs:
  there `jacobian_mode="auto"` builds the Jacobian in forward mode, d
  products, and from d = outputs on in reverse mode, `outputs` products, so
  a point that failed in one mode says nothing of the other.

  Args:
    point: a point that went over a budget.

  Returns:
    Whether to skip the larger d of its series.
  """
  kind = workloads.KINDS[point.kind]
  forward = kind.order == 1 and point.input_dim < point.num_outputs
  return kind.mode != "full" or not forward


def run_sweep(
  points: Sequence[scaling_point.Point],
  memory_budget: float,
  time_budget: float,
) -> List[scaling_point.Result]:
  """Runs the points, smaller d first; skips where `stops_series` says."""
  results = []
  over: Dict[tuple, scaling_point.Result] = {}
  for index, point in enumerate(points):
    series = point.series
    if series in over:
      first = over[series]
      result = scaling_point.Result(
        point,
        first.status,
        f"not run: over budget at d={first.point.input_dim}",
      )
    else:
      result = run_point(point, memory_budget, time_budget)
      if result.status in _OVER_BUDGET and stops_series(point):
        over[series] = result
    logging.info(
      "[%d/%d] %s: %s %s",
      index + 1,
      len(points),
      point.to_json(),
      result.status,
      result.detail or _milliseconds(result),
    )
    results.append(result)
  return results


def _milliseconds(result: scaling_point.Result) -> str:
  if result.measurements is None:
    return ""
  return f"{1e3 * result.measurements['seconds_per_step']:.3g} ms/step"


def write_report(
  results: Sequence[scaling_point.Result],
  header: Sequence[str],
  output: Optional[str],
  figure: Optional[str],
) -> str:
  """Writes the Markdown report and the figure where asked; returns the text.

  Args:
    results: the sweep's results.
    header: Markdown lines above the tables.
    output: the Markdown file, or None.
    figure: the PNG file, or None.

  Returns:
    The Markdown report.
  """
  text = scaling_report.markdown(results, header)
  if output:
    with open(output, "w") as file:
      file.write(text)
    logging.info("Wrote %s", output)
  if figure:
    scaling_report.write_figure(results, figure)
    logging.info("Wrote %s", figure)
  return text


def _settings() -> Dict[str, Any]:
  if _QUICK.value:
    return {
      "dims": [4, 16],
      "outputs": [4],
      "kinds": ["full_o1", "stochastic_o1"],
      "frameworks": ["tf_xla", "jax"],
      "steps": 2,
      "repeats": 1,
    }
  return {
    "dims": [int(d) for d in _DIMS.value],
    "outputs": [int(n) for n in _OUTPUTS.value],
    "kinds": _KINDS.value,
    "frameworks": _FRAMEWORKS.value,
    "steps": _STEPS.value,
    "repeats": _REPEATS.value,
  }


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  settings = _settings()
  try:
    points = sweep_points(
      settings.pop("dims"),
      settings.pop("outputs"),
      settings.pop("kinds"),
      settings.pop("frameworks"),
      batch_size=_BATCH_SIZE.value,
      jacobian_mode=_JACOBIAN_MODE.value,
      jax_full=_JAX_FULL.value,
      **settings,
    )
  except ValueError as error:
    raise app.UsageError(str(error)) from error
  memory_budget = _MEMORY_BUDGET_GB.value * 2**30
  load_before = machine.load_average()
  start = time.monotonic()
  results = run_sweep(points, memory_budget, _TIME_BUDGET_S.value)
  header = [
    "# Scaling benchmark: cost and memory against input and output size",
    "",
    *report.environment(load_before),
    f"- MLP d-256-256-outputs, softplus, batch {_BATCH_SIZE.value}, "
    f"{points[0].steps} steps per timed call, {points[0].repeats} calls "
    "after a warm-up call, medians; one process per point",
    f"- TF jacobian_mode={_JACOBIAN_MODE.value}; JAX full derivatives "
    f"--jax_full={_JAX_FULL.value}",
    f"- Budgets per point: {_MEMORY_BUDGET_GB.value:g} GiB resident, "
    f"{_TIME_BUDGET_S.value:g} s; sweep took "
    f"{(time.monotonic() - start) / 60:.1f} min",
  ]
  print(write_report(results, header, _OUTPUT.value, _FIGURE.value))


if __name__ == "__main__":
  app.run(main)
