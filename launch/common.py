"""What every launcher shares: strategy by name, workdir, results, resume.

A launcher defines its own flags plus `define_common_flags()`, builds its
strategy with `make_strategy`, writes its config with `write_config`, and keeps
finished runs in a `ResultStore`, so that a sweep started again with the same
flags skips what is done and loses nothing.
"""

import json
import os
import shutil
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import Iterator
from typing import List
from typing import Optional
from typing import Sequence

from absl import flags
from absl import logging
import keras
import tensorflow as tf

from sobolev_tf import testing

STRATEGIES = (
  "default",
  "one_device",
  "mirrored",
  "multi_worker_mirrored",
  "tpu",
)


def define_common_flags() -> Dict[str, flags.FlagHolder]:
  """Defines `--workdir`, `--strategy`, `--num_gpus` and `--tpu`.

  Returns:
    The flag holders, keyed by flag name.
  """
  return {
    "workdir": flags.DEFINE_string(
      "workdir",
      None,
      "Directory for logs, checkpoints and results; a "
      "run started again in the same workdir resumes.",
      required=True,
    ),
    "strategy": flags.DEFINE_string(
      "strategy",
      "default",
      f"tf.distribute strategy, one of {', '.join(STRATEGIES)}.",
    ),
    "num_gpus": flags.DEFINE_integer(
      "num_gpus", 0, "GPUs for one_device/mirrored; 0 uses the CPU(s)."
    ),
    "tpu": flags.DEFINE_string(
      "tpu", "", "TPU name or address for --strategy=tpu."
    ),
    "cpu_devices": flags.DEFINE_integer(
      "cpu_devices",
      0,
      "Split the CPU into this many logical devices, so that "
      "--strategy=mirrored has several replicas without GPUs; 0 keeps one.",
    ),
    "deterministic": flags.DEFINE_bool(
      "deterministic",
      False,
      "Enable TensorFlow's op determinism and seed Python, NumPy and "
      "TensorFlow: the same flags give bit-identical results.",
    ),
  }


def setup(holders: Dict[str, flags.FlagHolder]) -> tf.distribute.Strategy:
  """Applies `--deterministic` and `--cpu_devices`; returns the strategy.

  Call it first in `main`, before any TensorFlow op runs.

  Args:
    holders: what `define_common_flags` returned.

  Returns:
    The strategy of `--strategy`.
  """
  if holders["deterministic"].value:
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
  if holders["cpu_devices"].value:
    testing.configure_logical_cpus(holders["cpu_devices"].value)
  return make_strategy(
    holders["strategy"].value, holders["num_gpus"].value, holders["tpu"].value
  )


def make_strategy(
  name: str, num_gpus: int = 0, tpu: str = ""
) -> tf.distribute.Strategy:
  """Returns the `tf.distribute` strategy called `name`.

  Args:
    name: one of `STRATEGIES`.
    num_gpus: GPUs to use for `one_device` and `mirrored`; with 0, `mirrored`
      mirrors over every logical CPU.
    tpu: TPU name or address for `tpu`.

  Returns:
    The strategy.

  Raises:
    ValueError: for an unknown `name` or a negative `num_gpus`.
  """
  if name not in STRATEGIES:
    raise ValueError(
      f"Received an invalid value for `strategy`, expected one of "
      f"{list(STRATEGIES)}. Received: strategy={name!r}"
    )
  if num_gpus < 0:
    raise ValueError(
      "Received an invalid value for `num_gpus`, expected a non-negative "
      f"integer. Received: num_gpus={num_gpus}"
    )
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy("/gpu:0" if num_gpus else "/cpu:0")
  if name == "mirrored":
    if num_gpus:
      devices = [f"/gpu:{i}" for i in range(num_gpus)]
    else:
      devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)
  if name == "multi_worker_mirrored":
    return tf.distribute.MultiWorkerMirroredStrategy()
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
  tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)


def require_one_replica(
  strategy: tf.distribute.Strategy, name: str, why: str
) -> None:
  """Raises a clear error unless `strategy` has exactly one replica.

  Args:
    strategy: the strategy made from `--strategy`.
    name: the `--strategy` flag's value, for the message.
    why: why the launcher needs one replica.

  Raises:
    ValueError: with several replicas.
  """
  if strategy.num_replicas_in_sync != 1:
    raise ValueError(
      f"Received an invalid value for `strategy`: {why}; use default or "
      f"one_device. Received: strategy={name!r} with "
      f"{strategy.num_replicas_in_sync} replicas"
    )


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this task writes checkpoints, summaries and results."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  return resolver.task_type == "chief" or (
    resolver.task_type == "worker"
    and resolver.task_id == 0
    and "chief" not in resolver.cluster_spec().as_dict()
  )


def write_config(workdir: str, config: Dict[str, Any]) -> None:
  """Logs the whole config and writes it to `workdir/config.json`."""
  tf.io.gfile.makedirs(workdir)
  text = json.dumps(config, indent=2, sort_keys=True, default=str)
  logging.info("Config:\n%s", text)
  with tf.io.gfile.GFile(os.path.join(workdir, "config.json"), "w") as f:
    f.write(text + "\n")


class ResultStore:
  """Append-only JSON-lines file of finished runs, keyed by `run_id`.

  Each record is written and flushed as one line when its run ends, so a
  crash loses at most the run in progress; a record cut short by a crash is
  ignored when read back.
  """

  def __init__(self, path: str):
    self.path = path

  def records(self) -> List[Dict[str, Any]]:
    """Every complete record, in the order written, one per `run_id`."""
    if not tf.io.gfile.exists(self.path):
      return []
    by_id = {}
    with tf.io.gfile.GFile(self.path) as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          logging.warning("Ignoring a truncated line in %s", self.path)
          continue
        by_id.setdefault(record["run_id"], record)
    return list(by_id.values())

  def finished(self) -> set:
    """The ids of the finished runs."""
    return {record["run_id"] for record in self.records()}

  def add(self, record: Dict[str, Any]) -> None:
    """Appends one finished run's record."""
    if "run_id" not in record:
      raise ValueError(f"A result record needs a 'run_id'. Received: {record}")
    line = json.dumps(record, sort_keys=True) + "\n"
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(line)
      f.flush()
      os.fsync(f.fileno())

  def __iter__(self) -> Iterator[Dict[str, Any]]:
    return iter(self.records())


def run_sweep(
  workdir: str,
  configs: Sequence[Any],
  run_fn: Callable[[Any, str], Dict[str, Any]],
  chief: bool,
  describe: Callable[[Dict[str, Any]], str],
) -> List[Dict[str, Any]]:
  """Runs every config whose result is not yet in `workdir/results.jsonl`.

  Each config needs a `run_id`; its run gets `workdir/runs/<run_id>/`, and
  its checkpoints there (`checkpoints/`) are deleted once its record is
  written. Progress is logged after each run.

  Args:
    workdir: the sweep's directory.
    configs: the runs, in order.
    run_fn: `(config, run_dir)` to the run's result record (with
      `run_id` and `train_seconds`).
    chief: whether this task writes the records.
    describe: a record to the few words logged about it.

  Returns:
    The records of `configs`, finished before or now, in the order
    written.
  """
  store = ResultStore(os.path.join(workdir, "results.jsonl"))
  finished = store.finished()
  todo = [c for c in configs if c.run_id not in finished]
  logging.info(
    "%d runs, %d already finished, %d to go.",
    len(configs),
    len(configs) - len(todo),
    len(todo),
  )
  start = time.perf_counter()
  for index, config in enumerate(todo):
    run_dir = os.path.join(workdir, "runs", config.run_id)
    record = run_fn(config, run_dir)
    if chief:
      store.add(record)
      shutil.rmtree(os.path.join(run_dir, "checkpoints"), ignore_errors=True)
    elapsed = time.perf_counter() - start
    logging.info(
      "[%d/%d] %s: %s (%.1fs; ~%.0fs left)",
      index + 1,
      len(todo),
      config.run_id,
      describe(record),
      record["train_seconds"],
      elapsed / (index + 1) * (len(todo) - index - 1),
    )
  wanted = {c.run_id for c in configs}
  return [r for r in store.records() if r["run_id"] in wanted]


def mean_and_std(values: List[float]) -> Optional[tuple]:
  """`(mean, std)` of `values` (population std), or `None` when empty."""
  if not values:
    return None
  mean = sum(values) / len(values)
  return mean, (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
