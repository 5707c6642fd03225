"""What every launcher shares: flags, strategy, workdir files, results.

A launcher defines its flags on its own `FLAGS = flags.FlagValues()` (so
that several launchers can be imported into one process, as the tests do),
adds `define_common_flags(FLAGS)`, and ends with `run_main(main, FLAGS)`.
Its `main` calls `setup` (devices and strategy), `write_config` (every flag,
to `<workdir>/config.json`), and `launch.loop.run_sweep`, which keeps
finished runs in a `ResultStore`. Every file goes through `tf.io.gfile`, so
a workdir may be `gs://...` (or `ram://...` in tests), and is written whole
or not at all (`write_file`).
"""

import io
import json
import os
from typing import Any
from typing import Callable
from typing import Dict
from typing import Iterator
from typing import List
from typing import Optional
from typing import Sequence
from typing import Union
import uuid

from absl import app
from absl import flags
from absl import logging
import keras
import tensorflow as tf

from sobolev_tf import distribute_utils

STRATEGIES = (
  "default",
  "one_device",
  "mirrored",
  "multi_worker_mirrored",
  "tpu",
)


def define_common_flags(
  flag_values: flags.FlagValues,
  steps_per_execution: int = 50,
  checkpoints_per_run: int = 4,
) -> Dict[str, flags.FlagHolder]:
  """Defines the flags every launcher takes, on `flag_values`.

  Where it runs: `--workdir`, `--strategy`, `--num_gpus`, `--tpu`,
  `--cpu_devices`, `--deterministic`. How the loop trains:
  `--steps_per_execution`, `--checkpoints_per_run`.

  Args:
    flag_values: the launcher's `FLAGS`.
    steps_per_execution: the launcher's default for that flag.
    checkpoints_per_run: the launcher's default for that flag.

  Returns:
    The flag holders, keyed by flag name.
  """
  define = dict(flag_values=flag_values)
  return {
    "workdir": flags.DEFINE_string(
      "workdir",
      None,
      "Directory (any tf.io.gfile path: local, gs://...) for the config, "
      "results, tables, figures and runs; a sweep started again in the same "
      "workdir resumes.",
      required=True,
      **define,
    ),
    "strategy": flags.DEFINE_enum(
      "strategy", "default", STRATEGIES, "tf.distribute strategy.", **define
    ),
    "num_gpus": flags.DEFINE_integer(
      "num_gpus",
      0,
      "GPUs for one_device/mirrored; 0 uses the CPU(s).",
      lower_bound=0,
      **define,
    ),
    "tpu": flags.DEFINE_string(
      "tpu", "", "TPU name or address for --strategy=tpu.", **define
    ),
    "cpu_devices": flags.DEFINE_integer(
      "cpu_devices",
      0,
      "Split the CPU into this many logical devices, so that "
      "--strategy=mirrored has several replicas without GPUs; 0 keeps one.",
      lower_bound=0,
      **define,
    ),
    "deterministic": flags.DEFINE_bool(
      "deterministic",
      False,
      "Enable TensorFlow's op determinism, run one op at a time (some steps, "
      "the synthetic-gradient one among them, otherwise round differently "
      "from run to run as concurrent ops race) and seed Python, NumPy and "
      "TensorFlow: the same flags give bit-identical results.",
      **define,
    ),
    "steps_per_execution": flags.DEFINE_integer(
      "steps_per_execution",
      steps_per_execution,
      "Training steps per execution (Keras's name): per tf.function call "
      "for tf.data tasks; logs and TensorBoard points come after each.",
      lower_bound=1,
      **define,
    ),
    "checkpoints_per_run": flags.DEFINE_integer(
      "checkpoints_per_run",
      checkpoints_per_run,
      "Checkpoints written over each run (evenly spaced, the last at its "
      "end); a killed run resumes from the latest.",
      lower_bound=1,
      **define,
    ),
  }


def run_main(main: Callable[[List[str]], Any], flag_values: flags.FlagValues):
  """`absl.app.run(main)` with the launcher's own flags.

  Args:
    main: the launcher's `main(argv)`.
    flag_values: the launcher's `FLAGS`, parsed with absl's own flags.
  """
  flags.FLAGS.append_flag_values(flag_values)

  def parsed_main(argv: List[str]) -> Any:
    flag_values.mark_as_parsed()
    return main(argv)

  app.run(parsed_main)


def check_flag(
  flag_values: flags.FlagValues, name: str, check: Callable[[Any], Any]
) -> None:
  """Makes `check(value)` a validator of flag `name`, run when flags parse.

  Args:
    flag_values: the launcher's `FLAGS`.
    name: the flag.
    check: raises a `ValueError` for a bad value; its message follows
      absl's `flag --name=value: `.
  """

  def validate(value: Any) -> bool:
    try:
      check(value)
    except ValueError as error:
      raise flags.ValidationError(str(error)) from None
    return True

  flags.register_validator(name, validate, flag_values=flag_values)


def check_list_flag(
  flag_values: flags.FlagValues, name: str, check_item: Callable[[str], Any]
) -> None:
  """`check_flag` for a list flag: not empty, and `check_item` on each item."""

  def check(values: List[str]) -> None:
    if not values:
      raise ValueError("expected at least one value")
    for value in values:
      check_item(value)

  check_flag(flag_values, name, check)


def positive_int(text: str) -> int:
  """`int(text)`, which must be at least 1, else a `ValueError`."""
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise ValueError(f"expected positive integers, got {text!r}")
  return value


def positive_number(value: float) -> float:
  """`value`, which must be above 0, else a `ValueError`."""
  if not value > 0:
    raise ValueError(f"expected a positive number, got {value!r}")
  return value


def one_of(value: str, choices: Sequence[str]) -> str:
  """`value`, which must be among `choices`, else a `ValueError`."""
  if value not in choices:
    raise ValueError(f"expected values among {list(choices)}, got {value!r}")
  return value


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
    tf.config.threading.set_inter_op_parallelism_threads(1)
  if holders["cpu_devices"].value:
    distribute_utils.configure_logical_cpus(holders["cpu_devices"].value)
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


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this task writes checkpoints, summaries and results.

  The chief is the task of type `chief` if the cluster has one, else
  worker 0; without a cluster, the only task.
  """
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  return resolver.task_type == "chief" or (
    resolver.task_type == "worker"
    and resolver.task_id == 0
    and "chief" not in resolver.cluster_spec().as_dict()
  )


def task_id(strategy: tf.distribute.Strategy) -> Optional[int]:
  """This worker's index in a multi-worker cluster, or `None`."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return None
  return resolver.task_id


def barrier(strategy: tf.distribute.Strategy) -> None:
  """Returns on every worker once all have called it (an all-reduce).

  For example after the chief wrote a file the others then read.
  """
  strategy.reduce(
    "SUM",
    strategy.run(
      lambda: tf.distribute.get_replica_context().all_reduce(
        "SUM", tf.constant(1.0)
      )
    ),
    axis=None,
  )


def write_file(path: str, contents: Union[str, bytes]) -> None:
  """Writes `contents` to `path` whole or not at all.

  The bytes go to a temporary file beside `path`, which is then renamed
  over it: atomic on local and network file systems; on object stores
  (`gs://`) the object is replaced at once. Parent directories are made.

  Args:
    path: a `tf.io.gfile` path.
    contents: text (written as UTF-8) or bytes.
  """
  if isinstance(contents, str):
    contents = contents.encode("utf-8")
  directory = os.path.dirname(path)
  if directory:
    tf.io.gfile.makedirs(directory)
  temporary = f"{path}.tmp-{uuid.uuid4().hex}"
  with tf.io.gfile.GFile(temporary, "wb") as f:
    f.write(contents)
  tf.io.gfile.rename(temporary, path, overwrite=True)


def read_file(path: str) -> bytes:
  """The bytes of a `tf.io.gfile` path."""
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read()


def write_config(
  workdir: str, flag_values: flags.FlagValues, **extra: Any
) -> Dict[str, Any]:
  """Logs the config and writes it to `<workdir>/config.json`.

  Args:
    workdir: the launcher's workdir.
    flag_values: the launcher's `FLAGS`: every flag is written, its own and
      the common ones.
    **extra: further entries, e.g. the number of replicas.

  Returns:
    The config written.
  """
  config = {
    "flags": {name: flag_values[name].value for name in flag_values},
    **extra,
  }
  text = json.dumps(config, indent=2, sort_keys=True, default=str)
  logging.info("Config:\n%s", text)
  write_file(os.path.join(workdir, "config.json"), text + "\n")
  return config


class ResultStore:
  """A JSON-lines file of finished runs, one record per `run_id`.

  Each record is one line, a JSON object with a string `run_id`; the first
  record of a `run_id` wins. `add` rewrites the file whole with the new
  line at the end (`write_file`), so a crash while writing loses nothing
  written before, and a new record always starts on a fresh line, even
  after a line cut short by an older writer. Reading skips, and logs, every
  line that is not a record: cut JSON, JSON that is not an object with a
  `run_id`, bytes that are not UTF-8.

  Args:
    path: the file, any `tf.io.gfile` path.
  """

  def __init__(self, path: str):
    self.path = path

  def records(self) -> List[Dict[str, Any]]:
    """Every record, in the order written, one per `run_id`."""
    if not tf.io.gfile.exists(self.path):
      return []
    by_id = {}
    for number, line in enumerate(read_file(self.path).split(b"\n"), 1):
      if line.strip():
        record = self._parse(line, number)
        if record is not None:
          by_id.setdefault(record["run_id"], record)
    return list(by_id.values())

  def _parse(self, line: bytes, number: int) -> Optional[Dict[str, Any]]:
    where = f"line {number} of {self.path}"
    try:
      record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
      logging.warning("Skipping %s: not UTF-8 text.", where)
      return None
    except json.JSONDecodeError:
      logging.warning("Skipping %s: incomplete JSON (cut by a crash?).", where)
      return None
    if not isinstance(record, dict) or not isinstance(
      record.get("run_id"), str
    ):
      logging.warning(
        "Skipping %s: not a result record (a JSON object with a string "
        "'run_id').",
        where,
      )
      return None
    return record

  def finished(self) -> set:
    """The ids of the finished runs."""
    return {record["run_id"] for record in self.records()}

  def add(self, record: Dict[str, Any]) -> None:
    """Appends one finished run's record.

    Raises:
      ValueError: if `record` has no string `run_id`.
    """
    if not isinstance(record.get("run_id"), str):
      raise ValueError(
        f"A result record needs a string 'run_id'. Received: {record}"
      )
    contents = read_file(self.path) if tf.io.gfile.exists(self.path) else b""
    if contents and not contents.endswith(b"\n"):
      contents += b"\n"
    line = json.dumps(record, sort_keys=True).encode("utf-8") + b"\n"
    write_file(self.path, contents + line)

  def __iter__(self) -> Iterator[Dict[str, Any]]:
    return iter(self.records())


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A Markdown table; cells are written with `str`.

  Raises:
    ValueError: if a row's length differs from the header's.
  """
  for row in rows:
    if len(row) != len(header):
      raise ValueError(
        f"Expected rows of {len(header)} cells, as the header. Received a "
        f"row of {len(row)}: {list(row)}"
      )
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def save_figure(figure: Any, path: str, dpi: int = 80) -> None:
  """Writes a Matplotlib figure as PNG to a `tf.io.gfile` path."""
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=dpi)
  write_file(path, buffer.getvalue())


def mean_and_std(values: Sequence[float]) -> Optional[tuple]:
  """`(mean, std)` of `values` (population std), or `None` when empty."""
  if not values:
    return None
  mean = sum(values) / len(values)
  return mean, (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5


def mean_std_cell(values: Sequence[float], digits: int = 1) -> str:
  """`"mean ± std"` with `digits` decimals, or `"–"` when `values` is empty."""
  stats = mean_and_std(values)
  if stats is None:
    return "–"
  return f"{stats[0]:.{digits}f} ± {stats[1]:.{digits}f}"
