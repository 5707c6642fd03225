r"""Where an A2C update's time goes, and whether XLA shortens it.

    python -m benchmarks.a2c_benchmark --repeats=7

One A2C update of `launch.train_teacher` (16 environments, 5-step
rollouts) is 5 environment steps, 6 action choices (one per step and the
bootstrap value) on a batch of 16 frame stacks, and one gradient step on the
80 states. This times each part on its own, through `A2CLearner.act` and
`A2CLearner.update` (NumPy in and out, as in training), with
`jit_compile=False` and `True` (XLA) on the same weights and inputs, and
prints medians over `--repeats` repeats, the XLA/graph ratio (> 1: XLA
faster) and the frames per second the parts add up to (4 frames per
environment step). The repeats alternate which variant runs first, so load
from other processes falls on both alike.
"""

import statistics
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import Tuple

from absl import app
from absl import flags
import numpy as np

from sobolev_tf.layers import atari
from sobolev_tf.tasks import a2c

_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed repeats per part.")
_CALLS = flags.DEFINE_integer("calls", 20, "Calls per repeat.")
_GAME = flags.DEFINE_string("game", "pong", "Game whose steps are timed.")


def _time_calls(fn, calls: int) -> float:
  """Seconds per call of `fn` (which returns NumPy, so it has finished)."""
  start = time.perf_counter()
  for _ in range(calls):
    fn()
  return (time.perf_counter() - start) / calls


def _learners(config, rng) -> Dict[str, Dict[str, Callable[[], Any]]]:
  """`act` and `update` calls of a graph and an XLA learner, warmed up."""
  act_frames = rng.integers(0, 255, (16, *atari.FRAME_SHAPE), dtype=np.uint8)
  network = atari.AtariTeacher(6)
  network(act_frames)  # builds the variables the learners copy
  batch = config.num_envs * config.rollout_length
  frames = rng.integers(0, 255, (batch, *atari.FRAME_SHAPE), dtype=np.uint8)
  actions = rng.integers(0, 6, len(frames))
  returns = rng.normal(size=len(frames)).astype(np.float32)

  learners = {}
  for name, jit_compile in (("graph", False), ("xla", True)):
    learner = a2c.A2CLearner(6, config, jit_compile=jit_compile)
    for source, target in zip(
      network.variables, learner.network.variables, strict=True
    ):
      target.assign(source)
    learner.act(act_frames, [0, 1])  # Traces and compiles outside the timing.
    learner.update(frames, actions, returns)
    learners[name] = {
      "act": lambda learner=learner: learner.act(act_frames, [0, 1])[0],
      "update": lambda learner=learner: learner.update(
        frames, actions, returns
      )["loss"],
    }
  return learners


def _time_parts(learners) -> Dict[Tuple[str, str], float]:
  """Median seconds per call of each learner's parts, alternating learners."""
  times = {(name, part): [] for name in learners for part in ("act", "update")}
  for repeat in range(_REPEATS.value):
    order = list(learners) if repeat % 2 == 0 else list(reversed(learners))
    for name in order:
      for part, fn in learners[name].items():
        times[(name, part)].append(_time_calls(fn, _CALLS.value))
  return {key: statistics.median(value) for key, value in times.items()}


def _env_step_seconds(config, rng) -> float:
  """Median seconds of one step of the vector environment, random actions."""
  env = a2c.make_atari_env(_GAME.value, config.num_envs)
  step_times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    for _ in range(_CALLS.value):
      env.step(rng.integers(0, 6, config.num_envs))
    step_times.append((time.perf_counter() - start) / _CALLS.value)
  env.close()
  return statistics.median(step_times)


def main(argv):
  """Prints the table."""
  del argv
  config = a2c.Config()
  rng = np.random.default_rng(0)
  learners = _learners(config, rng)
  medians = _time_parts(learners)
  env_step = _env_step_seconds(config, rng)

  print(
    f"environment step ({config.num_envs} {_GAME.value} games): "
    f"{1e3 * env_step:.2f} ms"
  )
  print("| part | graph (ms) | XLA (ms) | XLA speed-up |")
  print("|---|---|---|---|")
  for part in ("act", "update"):
    graph, xla = medians[("graph", part)], medians[("xla", part)]
    print(
      f"| {part} | {1e3 * graph:.2f} | {1e3 * xla:.2f} | {graph / xla:.2f}× |"
    )
  frames_per_update = config.num_envs * config.rollout_length * 4
  for name in learners:
    seconds = (
      config.rollout_length * env_step
      + (config.rollout_length + 1) * medians[(name, "act")]
      + medians[(name, "update")]
    )
    print(
      f"{name}: parts add up to {frames_per_update / seconds:,.0f} "
      "frames/s (no overlap of environments and network)"
    )


if __name__ == "__main__":
  app.run(main)
