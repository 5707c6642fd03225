"""The benchmarks' Markdown: the run's environment and the results table."""

import datetime
import os
import platform
import statistics
from typing import List
from typing import Optional
from typing import Sequence

import jax
import jaxlib
import keras
import numpy as np
import tensorflow as tf

from benchmarks import harness
from benchmarks import jax_reference
from benchmarks import machine
import sobolev_tf

LEGEND = """\
TF/JAX > 1: TF faster. `time / plain`: the step's time over the workload's
`plain` step's time in the same framework (and, for TF, with the same XLA
setting). A step in parentheses names its TF variant: the full-Jacobian mode
when not `auto`, `no XLA` when compiled without XLA. Spread: (max - min) /
median of the repeats. Warm-up: the first repeat, compilation included. Loss
check: relative difference of the two frameworks' first losses on the same
weights (`random` where the loss depends on random directions). Atari
Sobolev rows distil a frozen teacher (its forward pass and projected gradient
are part of the step); Atari `plain` fits value arrays."""


def environment(load_before: str) -> List[str]:
  """Markdown bullets: command line, date, versions, machine, threads."""
  nproc = len(os.sched_getaffinity(0))
  threads = (
    tf.config.threading.get_intra_op_parallelism_threads(),
    tf.config.threading.get_inter_op_parallelism_threads(),
  )
  now = datetime.datetime.now(datetime.UTC)
  return [
    f"- Command: `{machine.command_line()}` (at the top of the repository)",
    f"- Date: {now.strftime('%Y-%m-%d %H:%M UTC')}",
    f"- sobolev_tf {sobolev_tf.__version__} (git {machine.git_revision()}), "
    f"Python {platform.python_version()}, TensorFlow {tf.__version__}, "
    f"Keras {keras.__version__}, JAX {jax.__version__}, jaxlib "
    f"{jaxlib.__version__}, NumPy {np.__version__}",
    f"- Machine: nproc = {nproc} ({machine.cpu_model()}); load average (1, 5, "
    f"15 min) {load_before} before, {machine.load_average()} after",
    f"- Threads: TF intra-op {threads[0]}, inter-op {threads[1]} (0: "
    "default, from the CPUs); JAX XLA:CPU default; JAX devices "
    f"{[str(device) for device in jax.devices()]}",
  ]


def publish_table(
  title: str,
  load_before: str,
  settings: str,
  table: Sequence[str],
  output: Optional[str],
) -> None:
  """Prints a titled Markdown table with the environment; writes it too.

  Args:
    title: the document's title.
    load_before: `load_average()` before the measurement.
    settings: one Markdown bullet on how it was measured.
    table: the table's lines.
    output: a file to write, or None.
  """
  text = "\n".join(
    [f"# {title}", "", *environment(load_before), settings, "", *table, ""]
  )
  print(text)
  if output:
    with open(output, "w") as file:
      file.write(text)


def header(steps: int, repeats: int, load_before: str, method: str) -> str:
  """The training-step benchmark's title and settings, as Markdown."""
  lines = [
    "# Training-step benchmark: sobolev_tf (TF/Keras) against JAX",
    "",
    *environment(load_before),
    f"- {steps} steps per repeat (Keras steps_per_execution={steps}), "
    f"{repeats} repeats after one warm-up repeat; medians",
    "- JAX full derivatives: order 1 "
    f"{jax_reference.full_method(1, method)}, order 2 "
    f"{jax_reference.full_method(2, method)} (--jax_full={method})",
  ]
  return "\n".join(lines)


def _format_rate(rate: float) -> str:
  if rate >= 1000:
    return f"{rate:,.0f}"
  return f"{rate:.1f}" if rate >= 10 else f"{rate:.2f}"


def _spread(seconds: Sequence[float]) -> float:
  return (max(seconds) - min(seconds)) / statistics.median(seconds)


def _check_cell(check) -> str:
  if check is None:
    return "random"
  return "0" if check == 0 else f"{check:.0e}"  # "0": bitwise equal.


def markdown_table(rows: Sequence[harness.Row]) -> str:
  """The results as a Markdown table, one line per row."""
  plain = {
    (row.workload.name, row.variant.xla): row
    for row in rows
    if row.kind.name == "plain"
  }
  lines = [
    "| workload | step | TF steps/s | JAX steps/s | TF/JAX | TF time / "
    "plain | JAX time / plain | spread TF, JAX | warm-up s TF, JAX | "
    "loss check |",
    "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
  ]
  for row in rows:
    base = plain.get((row.workload.name, row.variant.xla))
    tf_cost = jax_cost = "-"
    if base is not None:
      tf_cost = f"{base.tf_rate / row.tf_rate:.2f}"
      jax_cost = f"{base.jax_rate / row.jax_rate:.2f}"
    step = row.kind.name
    if row.variant.label:
      step += f" ({row.variant.label})"
    cells = [
      row.workload.label,
      step,
      _format_rate(row.tf_rate),
      _format_rate(row.jax_rate),
      f"{row.tf_rate / row.jax_rate:.2f}",
      tf_cost,
      jax_cost,
      f"{_spread(row.tf_seconds):.0%}, {_spread(row.jax_seconds):.0%}",
      f"{row.tf_warm_up:.1f}, {row.jax_warm_up:.1f}",
      _check_cell(row.check),
    ]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)
