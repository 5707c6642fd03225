"""Test helpers: logical CPUs for strategies, and launchers in subprocesses."""

from collections.abc import Sequence
import functools
import subprocess
import sys

import tensorflow as tf


def configure_logical_cpus(count: int = 2) -> None:
  """Splits the physical CPU into `count` logical devices.

  Lets `tf.distribute.MirroredStrategy` run on several replicas without
  accelerators. It must run before TensorFlow initialises its devices, so
  test modules call it at import time; a later call is a no-op when the
  devices are already what is asked for.

  Args:
    count: number of logical CPU devices wanted.

  Raises:
    RuntimeError: if TensorFlow's devices were initialised with another
      number of logical CPUs.
  """
  physical = tf.config.list_physical_devices("CPU")
  try:
    tf.config.set_logical_device_configuration(
      physical[0], [tf.config.LogicalDeviceConfiguration()] * count
    )
  except RuntimeError:
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) != count:
      raise RuntimeError(
        f"TensorFlow already runs on {len(logical)} logical CPUs; "
        f"{count} were asked for. Call configure_logical_cpus before "
        "any TensorFlow op runs."
      ) from None


@functools.cache
def mirrored_strategy() -> tf.distribute.MirroredStrategy:
  """One `MirroredStrategy` over the first two logical CPUs, per process.

  Tests share it: several `MirroredStrategy` objects in one process reuse
  collective instance keys and abort with "Shape mismatch in the collective
  instance".
  """
  return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def start_launcher(module: str, flags: Sequence[str]) -> subprocess.Popen:
  """Starts `python -m <module> <flags>` in a subprocess.

  Args:
    module: the launcher's module, e.g. `"launch.distill"`.
    flags: its command-line flags, e.g. `["--workdir=/tmp/w"]`.

  Returns:
    The running process, with stderr merged into a text stdout pipe.
  """
  return subprocess.Popen(
    [sys.executable, "-m", module, *flags],
    stdout=subprocess.PIPE,
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
