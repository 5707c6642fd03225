r"""One point of the scaling benchmark, measured alone in this process.

    python -m benchmarks.scaling_point '{"framework": "jax", "input_dim": 8,
        "num_outputs": 4, "kind": "full_o1"}'

`scaling_benchmark` starts one such process per point, so that each reads
its own peak memory: the largest resident set size of the process, once
after importing its framework (the baseline) and once after the timed steps.
It is `VmHWM` of /proc/self/status, the high-water mark of this program's
memory, not `getrusage(RUSAGE_SELF).ru_maxrss`, which Linux carries over
from the parent through fork and exec (a child of a 700 MiB process reports
at least 700 MiB). Only the point's own framework is imported: TensorFlow
for `tf_xla` and `tf_graph`, JAX for `jax`. The last line printed is a JSON
object with the measurements.

Network: `workloads.mlp(d, outputs)` with softplus hidden units (order 2 is
meaningless on ReLU), full array targets as in the training-step benchmark.
Timing: one warm-up call of `steps` steps (compilation included), then
`repeats` timed calls; the median gives the time per step.
"""

import dataclasses
import json
import resource
import statistics
import sys
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np

from benchmarks import workloads

FRAMEWORKS = ("tf_xla", "tf_graph", "jax")
ACTIVATION = "softplus"


@dataclasses.dataclass(frozen=True)
class Point:
  """One configuration: network shape, step kind and framework."""

  framework: str
  input_dim: int
  num_outputs: int
  kind: str
  batch_size: int = 64
  steps: int = 10
  repeats: int = 3
  seed: int = 0
  jacobian_mode: str = "auto"
  jax_full: str = "vmap"

  def __post_init__(self):
    choices = {
      "framework": FRAMEWORKS,
      "kind": tuple(workloads.KINDS),
      "jacobian_mode": workloads.JACOBIAN_MODES,
      "jax_full": workloads.FULL_METHODS,
    }
    for name, allowed in choices.items():
      if getattr(self, name) not in allowed:
        raise ValueError(
          f"Received an invalid value for `{name}`, expected one of "
          f"{allowed}. Received: {name}={getattr(self, name)!r}"
        )
    sizes = ("input_dim", "num_outputs", "batch_size", "steps", "repeats")
    for name in sizes:
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(
          f"Received an invalid value for `{name}`, expected a positive "
          f"integer. Received: {name}={value!r}"
        )

  @property
  def series(self) -> Tuple[str, int, str]:
    """The configuration but d: `(framework, num_outputs, kind)`."""
    return (self.framework, self.num_outputs, self.kind)

  @property
  def workload(self) -> workloads.Workload:
    """The MLP d-256-256-outputs with softplus units."""
    return workloads.mlp(
      self.input_dim,
      self.num_outputs,
      self.batch_size,
      (self.kind,),
      ACTIVATION,
    )

  def to_json(self) -> str:
    """The point as a JSON object."""
    return json.dumps(dataclasses.asdict(self))

  @classmethod
  def from_json(cls, text: str) -> "Point":
    """The point from `to_json`'s output (omitted fields take defaults)."""
    return cls(**json.loads(text))


@dataclasses.dataclass
class Result:
  """What became of a point: `ok`, `memory`, `time` or `error`.

  Attributes:
    point: the configuration.
    status: `ok` (measured), `memory` or `time` (over a budget) or `error`.
    detail: why it is not `ok`, or empty.
    measurements: `measure`'s output when `ok`, else None.
  """

  point: Point
  status: str
  detail: str = ""
  measurements: Optional[Dict[str, Any]] = None


def max_rss_bytes() -> int:
  """The largest resident set size of this program so far, in bytes.

  Returns:
    `VmHWM` of /proc/self/status; where /proc is absent, `ru_maxrss`, which
    may include the parent's memory (see the module docstring).
  """
  try:
    with open("/proc/self/status") as status:
      for line in status:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024  # In kB.
  except OSError:
    pass
  # Bytes on macOS, KiB on Linux and BSD.
  scale = 1 if sys.platform == "darwin" else 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _timed(run: Callable[[], Any]) -> float:
  start = time.perf_counter()
  run()
  return time.perf_counter() - start


def _tf_run(point: Point) -> Tuple[int, Callable[[], Any]]:
  """Baseline memory after the imports, and the TF trainer's `run`."""
  # Imported here, not at the top: a JAX point must not load TensorFlow.
  from benchmarks import tf_trainer

  baseline = max_rss_bytes()
  workload, kind = point.workload, workloads.KINDS[point.kind]
  rng = np.random.default_rng(point.seed)
  trainer = tf_trainer.TfTrainer(
    tf_trainer.keras_net(workload, ACTIVATION, point.seed),
    kind,
    workloads.inputs(rng, workload),
    workloads.array_targets(rng, workload, kind.order),
    None,
    point.steps,
    point.seed,
    tf_trainer.TfVariant(point.jacobian_mode, point.framework == "tf_xla"),
  )
  return baseline, trainer.run


def _jax_run(point: Point) -> Tuple[int, Callable[[], Any]]:
  """Baseline memory after the imports, and the JAX trainer's `run`."""
  # Imported here, not at the top: a TF point must not load JAX.
  import jax

  from benchmarks import jax_reference
  from benchmarks import jax_trainer

  jax.config.update("jax_platforms", "cpu")
  baseline = max_rss_bytes()
  workload, kind = point.workload, workloads.KINDS[point.kind]
  rng = np.random.default_rng(point.seed)
  trainer = jax_trainer.JaxTrainer(
    workload,
    kind,
    jax_reference.init_params(workload, point.seed),
    workloads.inputs(rng, workload),
    workloads.array_targets(rng, workload, kind.order),
    point.steps,
    point.seed,
    point.jax_full,
  )
  return baseline, trainer.run


def measure(point: Point) -> Dict[str, Any]:
  """Builds, warms up and times `point`'s step in this process.

  Args:
    point: the configuration.

  Returns:
    `seconds_per_step` (median over repeats), `repeat_seconds`,
    `warm_up_seconds`, `baseline_rss_bytes` (after importing the
    framework) and `peak_rss_bytes` (after the timed steps).
  """
  build = _jax_run if point.framework == "jax" else _tf_run
  baseline, run = build(point)
  warm_up = _timed(run)
  seconds = [_timed(run) for _ in range(point.repeats)]
  return {
    "seconds_per_step": statistics.median(seconds) / point.steps,
    "repeat_seconds": seconds,
    "warm_up_seconds": warm_up,
    "baseline_rss_bytes": baseline,
    "peak_rss_bytes": max_rss_bytes(),
  }


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2:
    raise SystemExit(f"Usage: {argv[0]} '<point as JSON>'. Received: {argv}")
  print(json.dumps(measure(Point.from_json(argv[1]))), flush=True)


if __name__ == "__main__":
  main(sys.argv)
