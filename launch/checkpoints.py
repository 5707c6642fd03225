"""Checkpoints of a run under any strategy, and their recovery.

A `Checkpointer` saves in the pattern TensorFlow documents for several
workers (every worker saves, the chief into the run's directory, the others
into a scratch directory they delete; every worker restores the chief's),
and restores the latest checkpoint it can read: a truncated or corrupt one
is reported, by file, and the one before it is used.

A `BestCheckpoint` keeps the weights of a run's best evaluation by a
validation metric (Model Garden's best-checkpoint exporter, made to survive
preemption): what the best is follows from the evaluations saved beside the
checkpoints, so a resumed run knows it.
"""

import os
import re
from typing import Any
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence

from absl import logging
import tensorflow as tf


def _checkpoint_paths(directory: str) -> List[str]:
  """The complete checkpoints in `directory`, newest first."""
  paths = []
  for index in tf.io.gfile.glob(os.path.join(directory, "ckpt-*.index")):
    match = re.fullmatch(r"ckpt-(\d+)\.index", os.path.basename(index))
    if match:
      paths.append((int(match.group(1)), index[: -len(".index")]))
  return [path for _, path in sorted(paths, reverse=True)]


class Checkpointer:
  """Saves and restores a `tf.train.Checkpoint` under any strategy.

  Args:
    checkpoint: what to save, e.g. `tf.train.Checkpoint(model=model)`.
    directory: the checkpoint directory (the chief's).
    chief: whether this task is the chief.
    worker: this worker's index, names a non-chief's scratch directory.
    max_to_keep: checkpoints kept in `directory`; with 2 or more, a corrupt
      latest one falls back to the one before.
  """

  def __init__(
    self,
    checkpoint: tf.train.Checkpoint,
    directory: str,
    chief: bool = True,
    worker: Optional[int] = None,
    max_to_keep: int = 2,
  ):
    self.checkpoint = checkpoint
    self.directory = directory
    self._scratch = (
      None if chief else os.path.join(directory, f"worker_{worker}_scratch")
    )
    self._manager = tf.train.CheckpointManager(
      checkpoint, self._scratch or directory, max_to_keep=max_to_keep
    )

  def restore(self, step: Optional[int] = None) -> Optional[str]:
    """Restores the chief's latest readable checkpoint (or that of `step`).

    Checkpoints are tried newest first (found by their files, not by the
    `checkpoint` state file, which a crash may have left stale): one that
    fails to read is logged, by path, and the one before it is tried.

    Returns:
      The path restored, or `None` if the directory has no checkpoint.

    Raises:
      RuntimeError: if checkpoints exist and none of them can be read; the
        message names each file and its error.
    """
    failures = []
    paths = _checkpoint_paths(self.directory)
    if step is not None:
      paths = [p for p in paths if p.endswith(f"ckpt-{step}")]
    for path in paths:
      try:
        self.checkpoint.restore(path).assert_existing_objects_matched()
      # A damaged file raises anything from IndexError ("Read less bytes
      # than requested") to DataLossError; every one is reported below.
      except Exception as error:
        message = str(error).strip().splitlines()[0]
        logging.warning("Cannot read checkpoint %s: %s", path, message)
        failures.append(f"{path}: {message}")
        continue
      if failures:
        logging.warning("Restored the earlier checkpoint %s instead.", path)
      logging.info("Restored %s", path)
      return path
    if failures:
      raise RuntimeError(
        "No checkpoint in "
        f"{self.directory} can be read (delete the directory to start the "
        "run again):\n" + "\n".join(failures)
      )
    return None

  def save(self, step: int) -> None:
    """Writes the checkpoint of `step` (a non-chief's is then deleted)."""
    self._manager.save(checkpoint_number=step)
    if self._scratch and tf.io.gfile.exists(self._scratch):
      tf.io.gfile.rmtree(self._scratch)

  def delete_before(self, step: int) -> None:
    """Deletes the chief's checkpoints of steps before `step`."""
    for path in _checkpoint_paths(self.directory):
      if int(path.rsplit("-", 1)[1]) < step:
        for name in tf.io.gfile.glob(path + ".*"):
          tf.io.gfile.remove(name)


Point = Dict[str, Any]


class BestCheckpoint:
  """The weights of a run's best evaluation by one metric.

  Args:
    checkpoint: the task's items (not the loop's own state).
    directory: where the best weights go, the chief's.
    metric: the evaluation metric that selects, e.g. `"val_mse"`.
    mode: `"min"` or `"max"`.
    chief: whether this task writes.
    worker: this worker's index.

  Raises:
    ValueError: for a `mode` other than `"min"` and `"max"`.
  """

  def __init__(
    self,
    checkpoint: tf.train.Checkpoint,
    directory: str,
    metric: str,
    mode: str,
    chief: bool = True,
    worker: Optional[int] = None,
  ):
    if mode not in ("min", "max"):
      raise ValueError(
        "Received an invalid value for `mode`, expected 'min' or 'max'. "
        f"Received: mode={mode!r}"
      )
    self.metric, self.mode = metric, mode
    self._chief = chief
    self._checkpointer = Checkpointer(
      checkpoint, directory, chief, worker, max_to_keep=None
    )

  def best(self, points: Sequence[Point]) -> Optional[Point]:
    """The best of the evaluation `points` (the earliest of equals)."""
    scored = [p for p in points if self.metric in p]
    if not scored:
      return None
    sign = 1.0 if self.mode == "min" else -1.0
    return min(scored, key=lambda p: (sign * p[self.metric], p["step"]))

  def consider(self, points: Sequence[Point]) -> None:
    """Saves the weights if the last of `points` is the best so far."""
    best = self.best(points)
    if best is not None and best is points[-1]:
      self._checkpointer.save(best["step"])

  def prune(self, points: Sequence[Point]) -> None:
    """Deletes weights older than the best of `points`.

    Called after a checkpoint of the run: a run resumed from it never needs
    them.
    """
    best = self.best(points)
    if best is not None and self._chief:
      self._checkpointer.delete_before(best["step"])

  def restore(self, points: Sequence[Point]) -> Optional[Point]:
    """Restores the weights of the best of `points`; returns that point."""
    best = self.best(points)
    if best is not None:
      self._checkpointer.restore(best["step"])
    return best
