r"""Benchmark-function regression sweep (paper Sec. 4.1, Figures 2 and 3).

Trains one MLP per (function, training size, method, seed), scores it on a
fixed held-out sample and writes to `--workdir`:

* `config.json`: every flag;
* `results.jsonl`: one JSON record per finished run;
* `table.md`: log10 test MSE and gradient MSE, mean ± std over seeds;
* `figure2.png`; `figure3.png` when Styblinski-Tang was fitted at 20 and
  100 points by `regular` and `sobolev` (seed 0), and `figure3_ackley.png`
  when Ackley was at 20 and 10,000 points;
* `runs/<run_id>/`: TensorBoard logs (`train/`: the loss, its value and
  derivative terms and the steps per second; `eval/`: the test errors and
  an image of the fitted surface; the run's settings for the HParams
  dashboard), the model (`model.keras`) and, while the run trains, its
  checkpoints (`checkpoints/`, `--checkpoints_per_run` of them).

Every flag is checked before anything trains. A sweep started again with
the same workdir skips finished runs and resumes an interrupted one from its
last checkpoint, at the same step and data position (`launch/loop.py`), so
it ends with the weights of a run that was never interrupted. Any
`--strategy` works, several workers included; only the chief writes.

The quick sweep of `make demo` (7 functions × 20, 100 points × 2 methods × 3
seeds):

    python -m launch.regression --workdir=workdir/regression --quick

The paper's full grid (20, 100 and 10,000 points, 5 seeds):

    python -m launch.regression --workdir=workdir/regression_full --full_grid

Functions take an optional dimension, e.g.
`--functions=styblinski_tang:10,rosenbrock:100`. The paper's domains are the
default (`--domain=standard` for Surjanovic and Bingham's), its gradient loss
too (`--gradient_loss=sum`, ||grad m - grad f||^2), and every term is
balanced by its targets' scale (`--balance=target_scale`); `--balance=none`
is the earlier plain sum.
"""

import os
from typing import Any
from typing import Dict
from typing import List
from typing import Tuple

from absl import flags
from absl import logging
import keras
import tensorflow as tf

from launch import common
from launch import flag_checks
from launch import regression_report
from sobolev_tf.tasks import functions
from sobolev_tf.tasks import regression
from sobolev_tf.tasks import regression_task
from sobolev_tf.tasks import surfaces

FLAGS = flags.FlagValues()
_FUNCTIONS = flags.DEFINE_list(
  "functions",
  list(functions.PAPER_FUNCTIONS),
  f"Functions, each `name` or `name:dim`, among {list(functions.FUNCTIONS)}.",
  flag_values=FLAGS,
)
_TRAIN_SIZES = flags.DEFINE_list(
  "train_sizes", ["20", "100"], "Training set sizes.", flag_values=FLAGS
)
_METHODS = common.define_choices_flag(
  FLAGS,
  "methods",
  ["regular", "sobolev"],
  regression.METHODS,
  "Training methods",
)
_SWEEP = common.define_sweep_flags(
  FLAGS,
  steps=2000,
  batch_size=32,
  learning_rate_help="Initial Adam step size (cosine decay to 0).",
)
_CYCLE_STEPS = flags.DEFINE_integer(
  "cycle_steps",
  regression.RunConfig.cycle_steps,
  "Restart the cosine rate every ~cycle_steps steps (steps // cycle_steps "
  "cycles, each ending at rate 0; evaluated at their ends by default). 0: "
  "one cosine over the run.",
  lower_bound=0,
  flag_values=FLAGS,
)
_ACTIVATION = flags.DEFINE_string(
  "activation", "relu", "Hidden activation.", flag_values=FLAGS
)
_TERMS = common.define_balance_flags(
  FLAGS,
  "derivative_weight",
  "Multiplies the derivative terms' weights; 1 keeps the paper's balance.",
  terms="the value and derivative terms",
  balance_note="none is the plain sum over the value variance",
)
_DOMAIN = flags.DEFINE_enum(
  "domain",
  "paper",
  list(functions.DOMAINS),
  "The functions' boxes: the paper's supplementary material's, or "
  "Surjanovic and Bingham's (functions.py).",
  flag_values=FLAGS,
)
_GRADIENT_LOSS = flags.DEFINE_enum(
  "gradient_loss",
  "sum",
  list(regression.GRADIENT_LOSSES),
  "The gradient term's squared error summed over input dimensions (the "
  "paper's) or averaged (Keras's MSE).",
  flag_values=FLAGS,
)
_EVAL_EVERY = common.define_eval_every_flag(FLAGS, 0)
_VALIDATION = common.define_validation_flag(
  FLAGS, 0.0, "its points' value error selects the weights"
)
_TEST_SIZE = flags.DEFINE_integer(
  "test_size", 10_000, "Held-out points.", lower_bound=1, flag_values=FLAGS
)
_JIT_COMPILE = flags.DEFINE_enum(
  "jit_compile",
  "auto",
  ["auto", "true", "false"],
  "Compile the training step with XLA ('auto': on one replica, where each "
  "run's small steps gain the most; every run of the same shapes reuses "
  "the program).",
  flag_values=FLAGS,
)
_FUSE_STEPS = flags.DEFINE_enum(
  "fuse_steps",
  "auto",
  ["auto", "true", "false"],
  "With --jit_compile on one device, run each --steps_per_execution steps "
  "as one XLA program ('auto': except convolutional steps on a CPU).",
  flag_values=FLAGS,
)
_CONCURRENT_RUNS = flags.DEFINE_string(
  "concurrent_runs",
  "auto",
  "Runs trained at once, each in a thread of its own: a positive integer, "
  "or 'auto' (one more than the CPU's cores, up to "
  f"{common.MOST_CONCURRENT_RUNS}, on a host without accelerators, under "
  "one replica, without --deterministic; else 1).",
  flag_values=FLAGS,
)
# The preset sweeps: each overrides --train_sizes, --seeds and --steps.
_PRESETS = {
  "quick": (
    "The make-demo sweep: 20 and 100 points, 3 seeds, 1000 steps",
    ([20, 100], 3, 1000),
  ),
  "full_grid": (
    "The paper's grid: 20, 100 and 10,000 points, 5 seeds, 2000 steps",
    ([20, 100, 10_000], 5, 2000),
  ),
}
_PRESET_FLAGS = {
  name: flags.DEFINE_bool(
    name,
    False,
    f"{description}; overrides --train_sizes, --seeds and --steps.",
    flag_values=FLAGS,
  )
  for name, (description, _) in _PRESETS.items()
}
# Regression runs are thousands of sub-millisecond steps: 250 per execution
# (one XLA program under --jit_compile) keeps the host out of the loop.
_COMMON = common.define_common_flags(FLAGS, steps_per_execution=250)


def _function(spec: str) -> Tuple[str, int]:
  """`name` or `name:dim` to `(name, dim)`, checked by building it."""
  name, _, dim = spec.partition(":")
  dim = flag_checks.positive_int(dim) if dim else 2
  functions.get_function(name, dim)  # Every domain has every name and dim.
  return name, dim


flag_checks.check_list_flag(FLAGS, "functions", _function)
flag_checks.check_list_flag(FLAGS, "train_sizes", flag_checks.positive_int)
flag_checks.check_flag(FLAGS, "activation", keras.activations.get)
flag_checks.check_flag(
  FLAGS,
  "concurrent_runs",
  lambda value: value == "auto" or flag_checks.positive_int(value),
)


def sweep_configs() -> List[regression.RunConfig]:
  """Every run of the sweep the flags describe, in order."""
  train_sizes = [int(s) for s in _TRAIN_SIZES.value]
  seeds, steps = _SWEEP["seeds"].value, _SWEEP["steps"].value
  for name, (_, preset) in _PRESETS.items():
    if _PRESET_FLAGS[name].value:
      train_sizes, seeds, steps = preset
  return [
    regression.RunConfig(
      function=name,
      dim=dim,
      train_size=size,
      method=method,
      seed=seed,
      steps=steps,
      batch_size=_SWEEP["batch_size"].value,
      learning_rate=_SWEEP["learning_rate"].value,
      activation=_ACTIVATION.value,
      derivative_weight=_TERMS["derivative_weight"].value,
      test_size=_TEST_SIZE.value,
      domain=_DOMAIN.value,
      balance=_TERMS["balance"].value,
      balance_floor=_TERMS["balance_floor"].value,
      gradient_loss=_GRADIENT_LOSS.value,
      validation_fraction=_VALIDATION.value,
      cycle_steps=_CYCLE_STEPS.value,
    )
    for name, dim in map(_function, _FUNCTIONS.value)
    for size in train_sizes
    for method in _METHODS.value
    for seed in range(seeds)
  ]


def _eval_every(config: regression.RunConfig) -> int:
  """`--eval_every`, or by default once per learning-rate cycle's end.

  A run of one cycle (or without a validation split) takes
  `common.eval_every`'s default; a run of several is evaluated where each
  cycle ends, at rate 0, which is where validation should choose. A
  `--eval_every` that misses the cycles' ends is warned about.
  """
  cycle = config.steps / config.cycles
  if _EVAL_EVERY.value:
    if config.cycles > 1 and cycle % _EVAL_EVERY.value:
      logging.warning(
        "--eval_every=%d does not divide the learning-rate cycle of %g steps "
        "(%d cycles of --steps=%d): evaluations miss the cycles' ends.",
        _EVAL_EVERY.value,
        cycle,
        config.cycles,
        config.steps,
      )
    return _EVAL_EVERY.value
  if config.cycles > 1 and _VALIDATION.value and cycle == int(cycle):
    return int(cycle)
  return common.eval_every(0, config.steps, _VALIDATION.value)


def figure3_panels(
  workdir: str,
  records: List[Dict[str, Any]],
  function_name: str = "styblinski_tang",
  sizes: Tuple[int, int] = (20, 100),
) -> list:
  """Figure 3's panels from the saved 2-D models of seed 0, if all exist.

  Args:
    workdir: the sweep's directory.
    records: its records.
    function_name: the function drawn.
    sizes: the two training sizes drawn, regular and Sobolev each.

  Returns:
    `(title, x1, x2, values, gradients)` for the true function and each
    model, or `[]` when a model is missing.
  """
  found = [
    r
    for r in records
    if r["function"] == function_name and r["dim"] == 2 and r["seed"] == 0
  ]
  if not found:
    return []
  function = functions.get_function(function_name, 2, found[0]["domain"])
  panels = [("true function", *_true_grid(function))]
  for size in sizes:
    for method in ("regular", "sobolev"):
      record = next(
        (r for r in found if r["train_size"] == size and r["method"] == method),
        None,
      )
      path = record and os.path.join(
        workdir, "runs", record["run_id"], "model.keras"
      )
      if not path or not tf.io.gfile.exists(path):
        return []
      network = keras.saving.load_model(path)
      panels.append(
        (f"{method}, {size} points", *surfaces.grid_values(network, function))
      )
  return panels


def _true_grid(function: functions.BenchmarkFunction):
  inputs = keras.Input((2,))
  network = keras.Model(inputs, keras.layers.Lambda(function.value)(inputs))
  return surfaces.grid_values(network, function)


def main(argv: List[str]) -> None:
  """Runs the sweep, then writes the table and figures."""
  del argv
  context = common.setup(_COMMON)
  configs = sweep_configs()
  tasks = [
    regression_task.RegressionTask(config, share_model=True)
    for config in configs
  ]
  concurrent_runs = common.resolve_concurrent_runs(
    _CONCURRENT_RUNS.value, context.strategy, _COMMON["deterministic"].value
  )
  context.write_config(
    FLAGS,
    num_runs=len(configs),
    # What --quick or --full_grid made of the flags.
    effective={
      "train_sizes": sorted({c.train_size for c in configs}),
      "seeds": sorted({c.seed for c in configs}),
      "steps": sorted({c.steps for c in configs}),
      "concurrent_runs": concurrent_runs,
    },
  )
  records = context.run_sweep(
    tasks,
    lambda record: (
      f"test MSE {record['test_mse']:.4g}, "
      f"gradient MSE {record['test_gradient_mse']:.4g}"
    ),
    eval_every=_eval_every(configs[0]),
    jit_compile=common.resolve_jit_compile(
      _JIT_COMPILE.value, context.strategy
    ),
    fuse_steps=common.resolve_fuse_steps(_FUSE_STEPS.value),
    concurrent_runs=concurrent_runs,
  )
  if not context.chief:
    return
  workdir = context.workdir
  table = regression_report.write_table(
    records, os.path.join(workdir, "table.md")
  )
  figures = [os.path.join(workdir, "figure2.png")]
  regression_report.figure2(records, figures[0])
  for name, sizes, filename in (
    ("styblinski_tang", (20, 100), "figure3.png"),
    ("ackley", (20, 10_000), "figure3_ackley.png"),
  ):
    panels = figure3_panels(workdir, records, name, sizes)
    if panels:
      figures.append(os.path.join(workdir, filename))
      regression_report.figure3(panels, figures[-1])
  print(table)
  print(
    f"Results: {workdir}/results.jsonl\nTable: {workdir}/table.md\nFigures: "
    + ", ".join(figures)
    + f"\nTensorBoard: tensorboard --logdir={workdir}/runs"
  )


if __name__ == "__main__":
  common.run_main(main, FLAGS)
