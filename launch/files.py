"""What launchers write to a workdir: files, the config, results, tables.

Every file goes through `tf.io.gfile`, so a workdir may be `gs://...` (or
`ram://...` in tests), and is written whole or not at all (`write_file`).
`write_config` writes every flag to `<workdir>/config.json`; a
`ResultStore` keeps a sweep's finished runs in `<workdir>/results.jsonl`;
`markdown_table`, `mean_std_cell` and `save_figure` make the tables and
figures of their records.
"""

import io
import json
import os
from typing import Any
from typing import Dict
from typing import Iterator
from typing import List
from typing import Optional
from typing import Sequence
from typing import Union
import uuid

from absl import flags
from absl import logging
import tensorflow as tf


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
