r"""Training steps per second of `SobolevModel`, each beside the same JAX step.

    JAX_PLATFORMS=cpu python -m benchmarks.train_step_benchmark \
        --output=docs/benchmark.md
    python -m benchmarks.train_step_benchmark --quick --workloads=mlp_a
    python -m benchmarks.train_step_benchmark --workloads=mlp_c \
        --jacobian_modes=auto,reverse,forward --xla=true,false

Every row is a workload (`workloads.WORKLOADS`: network and batch) and a step
kind (`plain`: value MSE only, `SobolevModel(net, order=0)`; `full_o1`,
`stochastic_o1`, `stochastic_o2`, `full_o2`: `SobolevModel(net, order=...,
mode=...)` with one projection, every loss argument explicit, see
`workloads.objective_kwargs`). Both frameworks run the same step in the same
process, so the ratio TF/JAX (> 1: TF faster) is measured under the same
machine load.

TensorFlow side (`tf_trainer`): the real Keras training path, compiled with
`steps_per_execution=N` and, by default, `jit_compile=True`; one timed repeat
is one call of `model.train_function`, i.e. N steps. `--jacobian_modes` and
`--xla` add rows for other full-Jacobian modes and for XLA off.

JAX side (`jax_reference`): the same network, weights copied from the Keras
network's initial weights, the same targets, the same loss, Adam as Keras
writes it; `tests/jax_reference_test.py` checks that its loss and gradients
equal the library's. The whole JAX step, Adam included, is one `jax.jit`
program (parameters and optimizer state donated), called from a Python loop:
one compiled program per step, as on the TF side (a `lax.scan` over steps
would fuse steps, which Keras cannot). Each repeat ends with
`block_until_ready`. `--jax_full` picks how it builds full derivatives.

For the Atari convnet the Sobolev step distils a frozen teacher of the same
architecture (`SobolevModel(..., teacher=teacher)`), the paper's use case,
so its derivative targets are the teacher's projected input gradients,
computed at every step in both frameworks; its `plain` row fits random value
arrays, like the MLPs.

The `loss check` column compares the two frameworks' losses at the shared
initial weights (TF: the objective evaluated eagerly; JAX: the first step's)
where they do not depend on the random directions.

`--quick` (3 steps, 2 repeats) is a smoke test, about half a minute per
workload, mostly compilation; its numbers are noise. Timing: see `harness`.

Threads: both frameworks keep their defaults, which size TensorFlow's intra-
and inter-op pools and the XLA:CPU pool of JAX from the machine's CPUs, so
neither is favoured; the header records `nproc` and the TF settings. To
compare on one core, run the benchmark under `taskset -c 0`. JAX runs on the
CPU whatever `JAX_PLATFORMS` says.

Each new model traces a new `train_function`, so TensorFlow warns about
retracing after a few rows; no row retraces once warmed up.
"""

from typing import Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import keras

from benchmarks import harness
from benchmarks import machine
from benchmarks import report
from benchmarks import workloads

_WORKLOADS = flags.DEFINE_list(
  "workloads",
  ["mlp_a", "mlp_b", "mlp_c", "atari"],
  f"Workloads to run, among {', '.join(workloads.WORKLOADS)}.",
)
_KINDS = flags.DEFINE_list(
  "kinds",
  [],
  f"Step kinds to run, among {', '.join(workloads.KINDS)} (default: "
  "every kind a workload has).",
)
_JACOBIAN_MODES = flags.DEFINE_list(
  "jacobian_modes",
  ["auto"],
  "jacobian_mode values of the TF full Sobolev rows, among "
  f"{', '.join(workloads.JACOBIAN_MODES)}; one row each.",
)
_XLA = flags.DEFINE_list(
  "xla",
  ["true"],
  "TF rows compiled with XLA (true) and/or without (false); one row each.",
)
_STEPS = flags.DEFINE_integer(
  "steps", 50, "Training steps per timed repeat (Keras steps_per_execution)."
)
_REPEATS = flags.DEFINE_integer(
  "repeats", 7, "Timed repeats per framework and row; the median is reported."
)
_OUTPUT = flags.DEFINE_string(
  "output", None, "Optional Markdown file to write the report to."
)
_QUICK = flags.DEFINE_bool(
  "quick",
  False,
  "Smoke test: 3 steps and 2 repeats, overriding --steps and --repeats.",
)
_JAX_FULL = flags.DEFINE_enum(
  "jax_full",
  "auto",
  list(workloads.FULL_METHODS),
  "How the JAX reference builds full derivatives: vmap, per example with "
  "jax.vmap(jax.jacrev) (order 1) and jax.vmap(jax.jacfwd(jax.jacrev)) "
  "(order 2); unrolled, one VJP (or JVP) of the batch per coordinate, the "
  "algorithm of sobolev_tf; auto, vmap at order 1 and unrolled at order 2.",
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of weights, data, directions.")

_QUICK_STEPS = 3
_QUICK_REPEATS = 2
_BOOLEANS = {"true": True, "false": False}


def _check_flags() -> None:
  if keras.backend.backend() != "tensorflow":
    raise app.UsageError(
      "The benchmark measures Keras on TensorFlow; set KERAS_BACKEND="
      f"tensorflow. Received backend: {keras.backend.backend()}"
    )
  unknown = sorted(set(_WORKLOADS.value) - set(workloads.WORKLOADS))
  unknown += sorted(set(_KINDS.value) - set(workloads.KINDS))
  unknown += sorted(set(_JACOBIAN_MODES.value) - set(workloads.JACOBIAN_MODES))
  unknown += sorted(set(_XLA.value) - set(_BOOLEANS))
  if unknown:
    raise app.UsageError(
      f"Unknown workloads, kinds, Jacobian modes or --xla values: {unknown}"
    )


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  _check_flags()
  jax.config.update("jax_platforms", "cpu")
  steps, repeats = _STEPS.value, _REPEATS.value
  if _QUICK.value:
    steps, repeats = _QUICK_STEPS, _QUICK_REPEATS
  xla_settings = [_BOOLEANS[value] for value in _XLA.value]
  load_before = machine.load_average()

  rows = []
  for name in _WORKLOADS.value:
    workload = workloads.WORKLOADS[name]
    for kind_name in workload.kinds:
      if _KINDS.value and kind_name not in _KINDS.value:
        continue
      kind = workloads.KINDS[kind_name]
      variants = harness.variants_for(kind, _JACOBIAN_MODES.value, xla_settings)
      rows += harness.measure(
        workload, kind, variants, steps, repeats, _SEED.value, _JAX_FULL.value
      )

  text = "\n\n".join(
    [
      report.header(steps, repeats, load_before, _JAX_FULL.value),
      report.markdown_table(rows),
      report.LEGEND,
    ]
  )
  print(text)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as output:
      output.write(text + "\n")
    logging.info("Wrote %s", _OUTPUT.value)


if __name__ == "__main__":
  app.run(main)
