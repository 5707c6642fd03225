r"""Kernel gradients by shape under XLA:CPU: TensorFlow's and the library's.

    python -m benchmarks.narrow_gradients_benchmark \
        --output=docs/narrow_gradients.md

For a product `y = x @ w` with `x` `[batch, rows]` and `w` `[rows,
columns]`: the microseconds of `dL/dw` (`L = sum(sin(y))`), compiled by
XLA in a loop of `--steps` gradients, with TensorFlow's registered `MatMul`
gradient (`x^T @ g`) and inside `training.xla_cpu_matmul_gradients`, which
computes a narrow one (2 to `training.NARROW_COLUMNS` columns, fewer than
its rows) as `(g^T @ x)^T`. The last column is TensorFlow's time over the
library's: above 1 where the library is faster. Shapes it leaves alone
measure the same program twice (their ratio is the noise).
"""

import itertools
import statistics
import time
from typing import Callable
from typing import List
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from benchmarks import report
from sobolev_tf import training

FLAGS = flags.FlagValues()
_BATCHES = flags.DEFINE_list(
  "batches",
  ["32", "256", "2048"],
  "Batch sizes (the contracted dimension).",
  flag_values=FLAGS,
)
_ROWS = flags.DEFINE_list(
  "rows", ["32", "256", "1024"], "Rows of the kernel.", flag_values=FLAGS
)
_COLUMNS = flags.DEFINE_list(
  "columns",
  ["1", "4", "8", "16", "32", "64"],
  "Columns of the kernel.",
  flag_values=FLAGS,
)
_STEPS = flags.DEFINE_integer(
  "steps", 100, "Gradients per timed call.", flag_values=FLAGS
)
_REPEATS = flags.DEFINE_integer(
  "repeats", 5, "Timed calls; medians.", flag_values=FLAGS
)
_OUTPUT = flags.DEFINE_string(
  "output", None, "Optional Markdown file.", flag_values=FLAGS
)


def _loop(batch: int, rows: int, columns: int, library: bool) -> Callable:
  """`--steps` kernel gradients in one XLA program."""
  x = tf.random.stateless_normal([batch, rows], seed=[0, 0])
  w = tf.random.stateless_normal([rows, columns], seed=[0, 1])

  def gradient(w):
    with tf.GradientTape() as tape:
      tape.watch(w)
      loss = tf.reduce_sum(tf.sin(x @ w))
    return tape.gradient(loss, w)

  @tf.function(jit_compile=True)
  def run():
    def body(step, total):
      # A new kernel at each step, so that XLA cannot hoist the product.
      shift = 1e-6 * tf.cast(step, tf.float32)
      if library:
        with training.xla_cpu_matmul_gradients():
          return step + 1, total + gradient(w + shift)
      return step + 1, total + gradient(w + shift)

    return tf.while_loop(
      lambda step, _: step < _STEPS.value, body, (0, tf.zeros_like(w))
    )[1]

  return run


def _microseconds(run: Callable) -> float:
  seconds = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    run().numpy()
    seconds.append(time.perf_counter() - start)
  return 1e6 * statistics.median(seconds) / _STEPS.value


def main(argv: Sequence[str]) -> None:
  """Measures every shape; prints (writes) the table."""
  del argv
  load_before = report.load_average()
  header = ["batch", "kernel", "rewritten", "TensorFlow µs", "library µs"]
  header.append("TF / library")
  lines: List[str] = [
    "| " + " | ".join(header) + " |",
    "|" + "--:|" * len(header),
  ]
  for batch, rows, columns in itertools.product(
    *(
      map(int, values)
      for values in (_BATCHES.value, _ROWS.value, _COLUMNS.value)
    )
  ):
    runs = [_loop(batch, rows, columns, library) for library in (False, True)]
    for run in runs:
      run().numpy()  # Compiles.
    tensorflow, library = (_microseconds(run) for run in runs)
    rewritten = training.is_narrow(rows, columns)
    lines.append(
      f"| {batch} | {rows}×{columns} | {'yes' if rewritten else 'no'} | "
      f"{tensorflow:.1f} | {library:.1f} | {tensorflow / library:.2f} |"
    )
    logging.info(lines[-1])
  report.publish_table(
    "Kernel gradients by shape under XLA:CPU",
    load_before,
    f"- {_STEPS.value} gradients per call in one XLA loop, "
    f"{_REPEATS.value} calls after one warm-up; medians",
    lines,
    _OUTPUT.value,
  )


def _parsed_main(argv: Sequence[str]) -> None:
  FLAGS.mark_as_parsed()
  main(argv)


if __name__ == "__main__":
  flags.FLAGS.append_flag_values(FLAGS)
  app.run(_parsed_main)
