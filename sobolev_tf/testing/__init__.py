"""Test helpers: devices, launchers in-process and in subprocesses, fakes."""

from collections.abc import Sequence
import functools
import glob
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any
from typing import Dict
from typing import Optional
from typing import Tuple

from absl import flags
import numpy as np
import tensorflow as tf

from sobolev_tf import distribute_utils
from sobolev_tf.tasks import base

# Test modules call it at import time, before any op runs, with 2.
configure_logical_cpus = distribute_utils.configure_logical_cpus


@functools.cache
def mirrored_strategy() -> tf.distribute.MirroredStrategy:
  """One `MirroredStrategy` over the first two logical CPUs, per process.

  Tests share it: several `MirroredStrategy` objects in one process reuse
  collective instance keys and abort with "Shape mismatch in the collective
  instance".
  """
  return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def parse_flags(flag_values: flags.FlagValues, argv: Sequence[str]) -> None:
  """Parses `argv` into a launcher's `FLAGS`, from their defaults.

  Lets a test call a launcher's `main` in-process (for example on a
  `ram://` workdir, which a subprocess cannot share).

  Args:
    flag_values: the launcher's `FLAGS`.
    argv: flags such as `["--workdir=ram://w"]`.

  Raises:
    flags.IllegalFlagValueError: for a value a flag's checks reject.
  """
  flag_values.unparse_flags()
  flag_values(["launcher", *argv])


def start_launcher(
  module: str, flags: Sequence[str], output: Optional[Any] = None
) -> subprocess.Popen:
  """Starts `python -m <module> <flags>` in a subprocess.

  Args:
    module: the launcher's module, e.g. `"launch.distill"`.
    flags: its command-line flags, e.g. `["--workdir=workdir/w"]`.
    output: a file for its stdout and stderr; a text pipe if `None`.

  Returns:
    The running process, with stderr merged into stdout.
  """
  return subprocess.Popen(
    [sys.executable, "-m", module, *flags],
    stdout=output or subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


def run_launcher(
  module: str,
  flags: Sequence[str],
  *,
  timeout: float = 600.0,
  expect_success: bool = True,
) -> str:
  """Runs a launcher to the end and checks how it exited.

  Args:
    module: the launcher's module, e.g. `"launch.distill"`.
    flags: its command-line flags.
    timeout: seconds before the process is killed and the call fails.
    expect_success: whether the launcher should exit with status 0 (True)
      or with an error (False).

  Returns:
    The launcher's stdout and stderr, interleaved.

  Raises:
    AssertionError: if the exit status is not the one expected; the message
      holds the whole output.
    subprocess.TimeoutExpired: if the launcher runs longer than `timeout`.
  """
  process = start_launcher(module, flags)
  try:
    output, _ = process.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    process.kill()
    process.communicate()
    raise
  if (process.returncode == 0) != expect_success:
    expected = "status 0" if expect_success else "an error"
    raise AssertionError(
      f"{module} exited with status {process.returncode}, expected "
      f"{expected}. Output:\n{output}"
    )
  return output


def kill_and_resume(
  module: str,
  flags: Sequence[str],
  straight_workdir: str,
  killed_workdir: str,
  kill_at: str,
  timeout: float = 300.0,
) -> str:
  """Runs a launcher once straight, once killed (SIGKILL) and resumed.

  Both first runs start at once, each in its workdir. The second is killed
  as soon as a file matching `kill_at` appears in its workdir (a
  checkpoint, say), then started again to the end in the same workdir.

  Args:
    module: the launcher's module.
    flags: its flags but `--workdir`.
    straight_workdir: the workdir of the run never killed.
    killed_workdir: the workdir of the run killed and resumed.
    kill_at: a glob pattern under `killed_workdir`, e.g.
      `"runs/*/checkpoints/ckpt-*.index"`.
    timeout: seconds each phase may take.

  Returns:
    The output of the resumed run.

  Raises:
    AssertionError: if a run fails, or the killed run ended (or ran out of
      time) before a file matched `kill_at`; the message holds its output.
  """
  with (
    tempfile.TemporaryFile("w+") as straight_log,
    tempfile.TemporaryFile("w+") as killed_log,
  ):
    straight = start_launcher(
      module, [*flags, f"--workdir={straight_workdir}"], straight_log
    )
    killed = start_launcher(
      module, [*flags, f"--workdir={killed_workdir}"], killed_log
    )
    deadline = time.time() + timeout
    pattern = os.path.join(killed_workdir, kill_at)
    while not glob.glob(pattern):
      if killed.poll() is not None or time.time() > deadline:
        killed.kill()
        straight.kill()
        killed_log.seek(0)
        raise AssertionError(
          f"{module} ended or timed out before {kill_at} appeared:\n"
          + killed_log.read()
        )
      time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    if straight.wait(timeout=timeout):
      straight_log.seek(0)
      raise AssertionError(f"{module} failed:\n{straight_log.read()}")
  return run_launcher(
    module, [*flags, f"--workdir={killed_workdir}"], timeout=timeout
  )


# Fields of a run's record that time it: they differ between runs.
TIMING_FIELDS = ("train_seconds", "seconds")


def without_timings(record: Dict[str, Any]) -> Dict[str, Any]:
  """`record` without its `TIMING_FIELDS`, to compare two runs' records."""
  return {k: v for k, v in record.items() if k not in TIMING_FIELDS}


class FakeAtariEnv:
  """`num_envs` fake games with the interface of `atari_env.make_atari_env`.

  Observations are random uint8 frame stacks `[N, 84, 84, 4]`; action 0
  earns reward 1, the others 0; each episode lasts a number of steps drawn
  from `[min_length, max_length]`, and a finished episode restarts at once
  (as ALE's `autoreset_mode="SameStep"`). Like ALE, it is deterministic:
  the same `reset` seed and actions give the same frames, rewards and
  episode ends.

  Args:
    num_envs: number of environments.
    num_actions: size of the action set.
    min_length: shortest episode, in steps.
    max_length: longest episode, in steps (`min_length` by default).
  """

  FRAME_SHAPE = (84, 84, 4)

  def __init__(
    self,
    num_envs: int = 4,
    num_actions: int = 3,
    min_length: int = 10,
    max_length: int = 0,
  ):
    import gymnasium  # only the fake env needs it

    self.num_envs = num_envs
    self.single_action_space = gymnasium.spaces.Discrete(num_actions)
    self._lengths = (min_length, max(min_length, max_length))
    self.reset(seed=0)

  def _observe(self) -> np.ndarray:
    return self._rng.integers(
      0, 255, (self.num_envs, *self.FRAME_SHAPE), dtype=np.uint8
    )

  def _episode_lengths(self, count: int) -> np.ndarray:
    return self._rng.integers(self._lengths[0], self._lengths[1] + 1, count)

  def reset(self, seed=None) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Starts new episodes everywhere; returns `(observations, info)`."""
    self._rng = np.random.default_rng(seed)
    self._left = self._episode_lengths(self.num_envs)
    return self._observe(), {}

  def step(self, actions) -> tuple:
    """Steps every game; returns ALE's five-tuple of arrays and info."""
    rewards = (np.asarray(actions) == 0).astype(np.float64)
    self._left -= 1
    done = self._left == 0
    self._left[done] = self._episode_lengths(int(done.sum()))
    return self._observe(), rewards, done, np.zeros_like(done), {}

  def close(self) -> None:
    """Nothing to release."""


class CountingTask(base.DatasetTask):
  """A task that adds up the numbers 0, 1, 2, ...: step `k` adds `k`.

  After `n` steps of a run, resumed or not, its `total` is `n (n - 1) / 2`
  if every step saw its own batch once.

  Args:
    run_id: the run's id.
    num_steps: steps to train.
    advance: whether a step advances the step counter (a task that does
      not is broken).
    replicas: the number of replicas the task accepts (any if 0).
  """

  def __init__(
    self,
    run_id: str = "count",
    num_steps: int = 4,
    advance: bool = True,
    replicas: int = 0,
  ):
    super().__init__(run_id, num_steps)
    self._advance = advance
    self._replicas = replicas

  def check_strategy(self, strategy: tf.distribute.Strategy) -> None:
    """Refuses other numbers of replicas than `replicas`, if given."""
    if self._replicas and strategy.num_replicas_in_sync != self._replicas:
      raise ValueError(
        f"Received an invalid value for `strategy`: {self.run_id} needs "
        f"{self._replicas} replicas."
      )

  def hparams(self) -> Dict[str, base.HParamValue]:
    """Whether it advances."""
    return {"advance": self._advance}

  def build(self) -> None:
    """The step counter and the total."""
    self.counter = tf.Variable(0, dtype=tf.int64)
    self.total = tf.Variable(0, dtype=tf.int64)

  @property
  def step_counter(self) -> tf.Variable:
    """The step."""
    return self.counter

  def checkpoint_items(self) -> Dict[str, Any]:
    """The step and the total."""
    return {"counter": self.counter, "total": self.total}

  def dataset(
    self, context: tf.distribute.InputContext, start_step: int
  ) -> tf.data.Dataset:
    """The numbers from `start_step` on (one replica)."""
    del context
    return tf.data.Dataset.range(start_step, 2**62)

  def train_step(self, batch: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Adds the batch's number to the total."""
    self.total.assign_add(batch)
    if self._advance:
      self.counter.assign_add(1)
    return {"total": self.total}

  def evaluate(self) -> Dict[str, float]:
    """The total."""
    return {"total": float(self.total.numpy())}
