"""The machine and command of a benchmark run, for its report.

No path of the machine goes into a report: the command is written as a
user types it at the top of the repository.
"""

import os
import platform
import shlex
import subprocess
import sys


def load_average() -> str:
  """The 1, 5 and 15 minute load averages, as text."""
  return ", ".join(f"{load:.2f}" for load in os.getloadavg())


def command_line() -> str:
  """The command that runs this benchmark, as a user types it.

  `python` for the interpreter's path, and no path of this machine: the
  environment variables that change the measurement, then the arguments.
  """
  env = [
    f"{name}={shlex.quote(os.environ[name])}"
    for name in ("JAX_PLATFORMS", "XLA_FLAGS", "TF_XLA_FLAGS", "KERAS_BACKEND")
    if name in os.environ
  ]
  args = [
    os.path.relpath(arg) if os.path.isabs(arg) else arg
    for arg in sys.orig_argv[1:]
  ]
  return " ".join(env + ["python"] + [shlex.quote(arg) for arg in args])


def git_revision() -> str:
  """`git describe` of the checkout, or `unknown`."""
  try:
    result = subprocess.run(
      ["git", "describe", "--always", "--dirty"],
      cwd=os.path.dirname(os.path.abspath(__file__)),
      capture_output=True,
      text=True,
      timeout=10,
      check=True,
    )
  except (OSError, subprocess.SubprocessError):
    return "unknown"
  return result.stdout.strip()


def cpu_model() -> str:
  """The CPU's model name."""
  try:
    with open("/proc/cpuinfo") as cpuinfo:
      for line in cpuinfo:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"
