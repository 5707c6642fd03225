r"""Runs a launcher as several workers on this machine, for MultiWorkerMirrored.

Each worker is the same command in its own process with its own `TF_CONFIG`
(a cluster of `--num_workers` workers on 127.0.0.1, on free ports); worker 0
is the chief. This is how a cluster job runs, on one machine, and how the
tests check multi-worker training:

    python -m launch.local_cluster --num_workers=2 -- \
      -m launch.regression --workdir=workdir/two_workers \
      --strategy=multi_worker_mirrored --quick

Everything after `--` is passed to the Python interpreter of each worker.
The workers' output is prefixed with their index. If a worker fails, the
others are stopped, and the exit code is the first non-zero one.
"""

import json
import os
import socket
import subprocess
import sys
import threading
from typing import List
from typing import Optional
from typing import Sequence

from absl import app
from absl import flags

_NUM_WORKERS = flags.DEFINE_integer(
  "num_workers", 2, "Worker processes to start."
)


def free_ports(count: int) -> List[int]:
  """`count` distinct TCP ports that are free on 127.0.0.1 right now."""
  sockets = []
  try:
    for _ in range(count):
      s = socket.socket()
      s.bind(("127.0.0.1", 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def tf_config(ports: Sequence[int], index: int) -> str:
  """The `TF_CONFIG` of worker `index` in a cluster on `ports` of 127.0.0.1."""
  if not 0 <= index < len(ports):
    raise ValueError(
      f"Received an invalid value for `index`, expected 0 <= index < "
      f"{len(ports)}. Received: index={index}"
    )
  return json.dumps(
    {
      "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
      "task": {"type": "worker", "index": index},
    }
  )


def start_workers(
  python_args: Sequence[str],
  num_workers: int,
  cwd: Optional[str] = None,
  **popen_kwargs,
) -> List[subprocess.Popen]:
  """Starts `python <python_args>` as `num_workers` workers of one cluster.

  Args:
    python_args: arguments of the Python interpreter, e.g.
      `["-m", "launch.regression", "--workdir=..."]`.
    num_workers: number of workers.
    cwd: working directory of the workers.
    **popen_kwargs: passed to `subprocess.Popen` (e.g. `stdout`).

  Returns:
    The worker processes, chief first.

  Raises:
    ValueError: if `num_workers` is less than 1.
  """
  if num_workers < 1:
    raise ValueError(
      "Received an invalid value for `num_workers`, expected a positive "
      f"integer. Received: num_workers={num_workers}"
    )
  ports = free_ports(num_workers)
  base_env = popen_kwargs.pop("env", None) or os.environ
  processes = []
  for index in range(num_workers):
    env = dict(base_env)
    env["TF_CONFIG"] = tf_config(ports, index)
    processes.append(
      subprocess.Popen(
        [sys.executable, *python_args], cwd=cwd, env=env, **popen_kwargs
      )
    )
  return processes


def _relay(index: int, stream) -> None:
  for line in stream:
    sys.stdout.write(f"[worker {index}] {line}")
    sys.stdout.flush()


def main(argv):
  """Starts the workers, relays their output and returns the exit code."""
  python_args = argv[1:]
  if not python_args:
    raise app.UsageError("Give the worker command after `--`.")
  processes = start_workers(
    python_args,
    _NUM_WORKERS.value,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  relays = [
    threading.Thread(target=_relay, args=(index, process.stdout))
    for index, process in enumerate(processes)
  ]
  for relay in relays:
    relay.start()
  code = 0
  pending = list(processes)
  while pending:
    for process in list(pending):
      try:
        returncode = process.wait(timeout=0.5)
      except subprocess.TimeoutExpired:
        continue
      pending.remove(process)
      if returncode and not code:
        code = returncode
        for other in pending:
          other.terminate()
  for relay in relays:
    relay.join()
  return code


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
