r"""Full-Jacobian modes by shape, with and without XLA, in a training step.

    python -m benchmarks.jacobian_modes_benchmark \
        --output=docs/jacobian_modes.md

For each MLP shape `in-256-256-out` (softplus) and batch, and XLA on and
off: the milliseconds of one training step (value MSE + full first-order
Jacobian MSE, Adam) with the Jacobian built by

* `reverse`: `derivatives.value_and_jacobian(mode="reverse")`, one VJP per
  output coordinate, unrolled (under XLA with several outputs, run as one
  vectorised pass);
* `forward`: `mode="forward"`, one JVP per input coordinate (under XLA the
  derivative of a VJP);
* `auto`: the library's choice (`derivatives.choose_jacobian_mode`);
* `vectorized`: not a library mode, a reference: `tf.vectorized_map` of
  the VJP over the output basis (what
  `GradientTape.batch_jacobian` does with `pfor`, and what `jax.vmap` of
  `jax.vjp` does).

Each mode's steps run as one `tf.function` loop of `--steps` steps, so that
per-step launch overhead does not hide the derivative's cost; `--repeats`
timed repeats, rotating which mode goes first, after one warm-up call (its
seconds, compilation included, are reported). The last column is `auto`'s
time over the fastest mode's.
"""

import statistics
import time
from typing import Callable
from typing import Dict
from typing import List
from typing import Sequence
from typing import Tuple

from absl import app
from absl import flags
from absl import logging
import keras
import tensorflow as tf

from benchmarks import machine
from benchmarks import report
from sobolev_tf import derivatives

# Its own flags, so that it imports beside the other benchmarks.
FLAGS = flags.FlagValues()
_SHAPES = flags.DEFINE_list(
  "shapes",
  ["2:1:128", "2:8:64", "8:32:64", "32:8:256"],
  "MLP shapes as in:out:batch.",
  flag_values=FLAGS,
)
_STEPS = flags.DEFINE_integer(
  "steps", 20, "Steps per timed repeat.", flag_values=FLAGS
)
_REPEATS = flags.DEFINE_integer(
  "repeats", 7, "Timed repeats; medians.", flag_values=FLAGS
)
_OUTPUT = flags.DEFINE_string(
  "output", None, "Optional Markdown file.", flag_values=FLAGS
)

MODES = ("reverse", "forward", "auto", "vectorized")


def vectorized_jacobian(fn, x: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """`fn(x)` and its Jacobian `[B, out, in]` by `vectorized_map` of VJPs."""
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    y = fn(x)
  basis = tf.eye(y.shape[1], dtype=y.dtype)[:, None, :] * tf.ones_like(y)
  rows = tf.vectorized_map(
    lambda v: tape.gradient(y, x, output_gradients=v), basis
  )
  return y, tf.transpose(rows, [1, 0, 2])


def _loop(mode: str, shape: Tuple[int, int, int], xla: bool) -> Callable:
  """A function running `--steps` training steps of one mode."""
  inputs, outputs, batch = shape
  keras.utils.set_random_seed(0)
  net = keras.Sequential(
    [
      keras.Input((inputs,)),
      keras.layers.Dense(256, "softplus"),
      keras.layers.Dense(256, "softplus"),
      keras.layers.Dense(outputs),
    ]
  )
  x = tf.random.normal([batch, inputs])
  y_target = tf.random.normal([batch, outputs])
  jacobian_target = tf.random.normal([batch, outputs, inputs])
  optimizer = keras.optimizers.Adam(1e-4)
  optimizer.build(net.trainable_variables)

  def step():
    with tf.GradientTape() as tape:
      if mode == "vectorized":
        y, jacobian = vectorized_jacobian(net, x)
      else:
        y, jacobian = derivatives.value_and_jacobian(net, x, mode=mode)
      loss = tf.reduce_mean(tf.square(y - y_target)) + tf.reduce_mean(
        tf.square(jacobian - jacobian_target)
      )
    gradients = tape.gradient(loss, net.trainable_variables)
    optimizer.apply_gradients(
      zip(gradients, net.trainable_variables, strict=True)
    )
    return loss

  @tf.function(jit_compile=xla)
  def run():
    loss = tf.constant(0.0)
    for _ in tf.range(_STEPS.value):
      loss = step()
    return loss

  return run


def _auto_choice(shape: Tuple[int, int, int], xla: bool) -> str:
  """What `auto` picks for `shape`, asked while tracing under `xla`."""
  choice = []

  @tf.function(jit_compile=xla)
  def choose():
    choice.append(derivatives.choose_jacobian_mode(shape[0], shape[1]))
    return tf.constant(0.0)

  choose()
  return choice[0]


def measure(shape, xla: bool) -> Dict[str, Tuple[float, float]]:
  """`mode -> (median ms per step, warm-up seconds)` for one shape."""
  # Every model first: building one sets Keras's global seed, and the
  # functions traced before it would trace again at their next call.
  runs = [_loop(mode, shape, xla) for mode in MODES]
  warm_up = []
  for run in runs:
    start = time.perf_counter()
    run().numpy()
    warm_up.append(time.perf_counter() - start)
  seconds: List[List[float]] = [[] for _ in MODES]
  for repeat in range(_REPEATS.value):
    order = [(repeat + i) % len(MODES) for i in range(len(MODES))]
    for index in order:
      start = time.perf_counter()
      runs[index]().numpy()
      seconds[index].append(time.perf_counter() - start)
  return {
    mode: (1e3 * statistics.median(s) / _STEPS.value, w)
    for mode, s, w in zip(MODES, seconds, warm_up, strict=True)
  }


def _row(shape, xla: bool, times) -> List[str]:
  best = min(times[mode][0] for mode in MODES)
  return [
    f"{shape[0]}-256-256-{shape[1]}, B={shape[2]}",
    "on" if xla else "off",
    *(f"{times[m][0]:.2f} ({times[m][1]:.1f} s)" for m in MODES),
    _auto_choice(shape, xla),
    f"{times['auto'][0] / best:.2f}",
  ]


def main(argv: Sequence[str]) -> None:
  """Measures every shape with and without XLA; prints (writes) the table."""
  del argv
  load_before = machine.load_average()
  header = ["MLP", "XLA", *(f"{m} ms (warm-up)" for m in MODES)]
  header += ["auto picks", "auto / best"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for spec in _SHAPES.value:
    shape = tuple(int(n) for n in spec.split(":"))
    for xla in (False, True):
      times = measure(shape, xla)
      lines.append("| " + " | ".join(_row(shape, xla, times)) + " |")
      logging.info(lines[-1])
  report.publish_table(
    "Full-Jacobian modes by shape",
    load_before,
    f"- {_STEPS.value} steps per repeat in one tf.function loop, "
    f"{_REPEATS.value} repeats after one warm-up; medians, ms per step",
    lines,
    _OUTPUT.value,
  )


def _parsed_main(argv: Sequence[str]) -> None:
  FLAGS.mark_as_parsed()
  main(argv)


if __name__ == "__main__":
  flags.FLAGS.append_flag_values(FLAGS)
  app.run(_parsed_main)
