r"""Benchmark-function regression sweep (paper Sec. 4.1, Figures 2 and 3).

Trains one MLP per (function, training size, method, seed), scores it on a
fixed held-out sample and writes to `--workdir`:

* `results.jsonl`: one JSON record per finished run (the results file);
* `table.md`: log10 test MSE and gradient MSE, mean ± std over seeds;
* `figure2.png`, and `figure3.png` when Styblinski-Tang was fitted at 20 and
  100 points by `regular` and `sobolev`;
* `runs/<run_id>/`: TensorBoard logs (`train/` with the losses, learning
  progress and steps per second, and `test/` with the test errors and an
  image of the fitted surface), the model (`model.keras`) and, while the run
  trains, its checkpoints (`checkpoints/`, `--checkpoints_per_run` of them).

A sweep started again with the same workdir skips finished runs and resumes
an interrupted one from its last checkpoint, at the same step and data
position (`launch/loop.py`), so it ends with the weights of a run that was
never interrupted. Any `--strategy` works, several workers included; only
the chief writes.

The quick sweep of `make demo` (7 functions × 20, 100 points × 2 methods × 3
seeds):

    python -m launch.regression --workdir=/tmp/regression --quick

The paper's full grid (20, 100 and 10,000 points, 5 seeds):

    python -m launch.regression --workdir=/tmp/regression_full --full_grid

Functions take an optional dimension, e.g.
`--functions=styblinski_tang:10,rosenbrock:100`.
"""

import os
import time
from typing import Any
from typing import Dict
from typing import List

from absl import app
from absl import flags
import keras
import tensorflow as tf

from launch import common
from launch import loop
from launch import regression_report
from sobolev_tf.tasks import functions
from sobolev_tf.tasks import regression

_FUNCTIONS = flags.DEFINE_list(
  "functions",
  list(functions.PAPER_FUNCTIONS),
  "Functions, each `name` or `name:dim`.",
)
_TRAIN_SIZES = flags.DEFINE_list(
  "train_sizes", ["20", "100"], "Training set sizes."
)
_METHODS = flags.DEFINE_list(
  "methods",
  ["regular", "sobolev"],
  f"Training methods, among {list(regression.METHODS)}.",
)
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per cell: 0 .. seeds - 1.")
_STEPS = flags.DEFINE_integer("steps", 2000, "Adam steps per run.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Global batch size.")
_LEARNING_RATE = flags.DEFINE_float(
  "learning_rate", 1e-3, "Initial Adam step size (cosine decay to 0)."
)
_ACTIVATION = flags.DEFINE_string("activation", "relu", "Hidden activation.")
_DERIVATIVE_WEIGHT = flags.DEFINE_float(
  "derivative_weight",
  1.0,
  "Multiplies the derivative terms' weights; 1 keeps the paper's balance.",
)
_TEST_SIZE = flags.DEFINE_integer("test_size", 10_000, "Held-out points.")
_CHECKPOINTS = flags.DEFINE_integer(
  "checkpoints_per_run", 4, "Checkpoints (and TensorBoard points) per run."
)
_JIT_COMPILE = flags.DEFINE_bool("jit_compile", False, "Compile with XLA.")
_STEPS_PER_EXECUTION = flags.DEFINE_integer(
  "steps_per_execution",
  50,
  "Training steps per tf.function call (Keras `steps_per_execution`).",
)
_QUICK = flags.DEFINE_bool(
  "quick",
  False,
  "The make-demo sweep: paper functions at 20 and 100 "
  "points, regular and sobolev, 3 seeds, 1000 steps.",
)
_FULL_GRID = flags.DEFINE_bool(
  "full_grid",
  False,
  "The paper's grid: 20, 100 and 10,000 points, 5 "
  "seeds, 2000 steps; overrides --train_sizes, --seeds and --steps.",
)
_COMMON = common.define_common_flags()


def _parse_functions(specs: List[str]) -> List[tuple]:
  parsed = []
  for spec in specs:
    name, _, dim = spec.partition(":")
    parsed.append((name, int(dim) if dim else 2))
  return parsed


def sweep_configs() -> List[regression.RunConfig]:
  """Every run of the sweep the flags describe, in order."""
  train_sizes = [int(s) for s in _TRAIN_SIZES.value]
  seeds, steps = _SEEDS.value, _STEPS.value
  if _QUICK.value:
    train_sizes, seeds, steps = [20, 100], 3, 1000
  if _FULL_GRID.value:
    train_sizes, seeds, steps = [20, 100, 10_000], 5, 2000
  return [
    regression.RunConfig(
      function=name,
      dim=dim,
      train_size=size,
      method=method,
      seed=seed,
      steps=steps,
      batch_size=_BATCH_SIZE.value,
      learning_rate=_LEARNING_RATE.value,
      activation=_ACTIVATION.value,
      derivative_weight=_DERIVATIVE_WEIGHT.value,
      test_size=_TEST_SIZE.value,
    )
    for name, dim in _parse_functions(_FUNCTIONS.value)
    for size in train_sizes
    for method in _METHODS.value
    for seed in range(seeds)
  ]


def _surface_image(
  network: keras.Model, function: functions.BenchmarkFunction
) -> tf.Tensor:
  _, _, values, _ = regression.grid_values(network, function)
  scaled = (values - values.min()) / max(values.max() - values.min(), 1e-12)
  return tf.constant(scaled[::-1, :, None][None], tf.float32)  # [1, R, R, 1]


def run_one(
  config: regression.RunConfig,
  run_dir: str,
  strategy: tf.distribute.Strategy,
  chief: bool,
) -> Dict[str, Any]:
  """Trains and scores one run, resuming from its checkpoint if it has one.

  Returns:
    The run's result record.
  """
  function = functions.get_function(config.function, config.dim)
  (x_train, y_train), (x_test, y_test) = regression.make_data(config, function)
  with strategy.scope():
    model = regression.build_model(config, function, y_train)
    model.compile(optimizer=regression.build_optimizer(config))
    model.optimizer.build(model.trainable_variables)
  start = time.perf_counter()
  loop.train_run(
    run_dir,
    strategy,
    tf.train.Checkpoint(model=model, optimizer=model.optimizer),
    model.train_step,
    lambda context, step: regression.train_dataset(
      x_train, y_train, config.batch_size, config.seed, step, context
    ),
    model.optimizer.iterations,
    config.steps,
    checkpoints=_CHECKPOINTS.value,
    steps_per_loop=_STEPS_PER_EXECUTION.value,
    reset_fn=model.reset_metrics,
    jit_compile=_JIT_COMPILE.value,
  )
  seconds = time.perf_counter() - start
  scores = regression.evaluate(model.model, x_test, y_test)
  if chief:
    writer = tf.summary.create_file_writer(
      os.path.join(run_dir, "tensorboard", "test")
    )
    with writer.as_default(step=config.steps):
      tf.summary.scalar("test/value_mse", scores["test_mse"])
      tf.summary.scalar("test/gradient_mse", scores["test_gradient_mse"])
      if config.dim == 2:
        tf.summary.image(
          "test/fitted_surface", _surface_image(model.model, function)
        )
    writer.close()
    if config.dim == 2:
      model.model.save(os.path.join(run_dir, "model.keras"))
  return {
    "run_id": config.run_id,
    **{k: v for k, v in vars(config).items() if k != "hidden_sizes"},
    "hidden_sizes": list(config.hidden_sizes),
    **scores,
    "train_seconds": round(seconds, 2),
  }


def figure3_panels(workdir: str, records: List[Dict[str, Any]]) -> list:
  """Panels of Figure 3 from the saved Styblinski-Tang models, if all exist."""
  function = functions.get_function("styblinski_tang")
  x1, x2, values, gradients = _true_grid(function)
  panels = [("true function", x1, x2, values, gradients)]
  for size in (20, 100):
    for method in ("regular", "sobolev"):
      record = next(
        (
          r
          for r in records
          if r["function"] == "styblinski_tang"
          and r["dim"] == 2
          and r["train_size"] == size
          and r["method"] == method
          and r["seed"] == 0
        ),
        None,
      )
      path = record and os.path.join(
        workdir, "runs", record["run_id"], "model.keras"
      )
      if not path or not os.path.exists(path):
        return []
      network = keras.saving.load_model(path)
      panels.append(
        (f"{method}, {size} points", *regression.grid_values(network, function))
      )
  return panels


def _true_grid(function: functions.BenchmarkFunction):
  inputs = keras.Input((2,))
  network = keras.Model(inputs, keras.layers.Lambda(function.value)(inputs))
  return regression.grid_values(network, function)


def main(argv):
  """Runs the sweep, then writes the table and figures."""
  del argv
  workdir = _COMMON["workdir"].value
  strategy = common.setup(_COMMON)
  chief = common.is_chief(strategy)
  configs = sweep_configs()
  replicas = strategy.num_replicas_in_sync
  for config in configs:
    if min(config.batch_size, config.train_size) % replicas:
      raise ValueError(
        f"Received an invalid value for `batch_size`: the global batch "
        f"(--batch_size capped at the training size, here "
        f"{min(config.batch_size, config.train_size)} for {config.run_id}) "
        f"must divide among the {replicas} replicas. Received: "
        f"batch_size={config.batch_size}"
      )
  if chief:
    common.write_config(
      workdir,
      {
        "flags": {
          name: flags.FLAGS[name].value
          for name in (
            "functions",
            "train_sizes",
            "methods",
            "seeds",
            "steps",
            "batch_size",
            "learning_rate",
            "activation",
            "derivative_weight",
            "test_size",
            "quick",
            "full_grid",
            "strategy",
            "num_gpus",
            "jit_compile",
            "deterministic",
            "cpu_devices",
          )
        },
        "num_runs": len(configs),
        # What --quick or --full_grid made of the flags above.
        "effective": {
          "train_sizes": sorted({c.train_size for c in configs}),
          "seeds": sorted({c.seed for c in configs}),
          "steps": sorted({c.steps for c in configs}),
        },
        "replicas": strategy.num_replicas_in_sync,
      },
    )
  records = common.run_sweep(
    workdir,
    configs,
    lambda config, run_dir: run_one(config, run_dir, strategy, chief),
    chief,
    lambda record: (
      f"test MSE {record['test_mse']:.4g}, "
      f"gradient MSE {record['test_gradient_mse']:.4g}"
    ),
  )
  if not chief:
    return
  table = regression_report.write_table(records, workdir)
  regression_report.figure2(records, os.path.join(workdir, "figure2.png"))
  panels = figure3_panels(workdir, records)
  if panels:
    regression_report.figure3(panels, os.path.join(workdir, "figure3.png"))
  print(table)
  print(
    f"\nResults: {workdir}/results.jsonl\nTable: {workdir}/table.md\nFigures: "
    f"{workdir}/figure2.png"
    + (f", {workdir}/figure3.png" if panels else "")
    + f"\nTensorBoard: tensorboard --logdir={workdir}/runs"
  )


if __name__ == "__main__":
  app.run(main)
