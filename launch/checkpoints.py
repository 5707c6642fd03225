"""Checkpoints of a run under any strategy, and their recovery.

A `Checkpointer` saves in the pattern TensorFlow documents for several
workers (every worker saves, the chief into the run's directory, the others
into a scratch directory they delete; every worker restores the chief's),
and restores the latest checkpoint it can read: a truncated or corrupt one
is reported, by file, and the one before it is used.
"""

import os
import re
from typing import List
from typing import Optional

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

  def restore(self) -> Optional[str]:
    """Restores the chief's latest readable checkpoint.

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
    for path in _checkpoint_paths(self.directory):
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
