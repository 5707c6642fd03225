"""The launchers' training loop: any strategy, checkpoints, summaries, resume.

`SobolevModel.fit` is the library's workflow. The launchers drive training
with this loop instead, for two reasons:

* Keras 3 `fit` does not run under `MultiWorkerMirroredStrategy`: it reduces
  its scalar logs with `strategy.reduce(..., axis=0)`, which fails for
  scalars (keras-team/keras#20585, tensorflow/tensorflow#72388).
* Keras 3 `BackupAndRestore` restores the epoch but not the position inside
  it, and every worker writes the same files.

The loop runs a replica step function with `strategy.run` inside a
`tf.function`, feeds it from `strategy.distribute_datasets_from_function`,
and checkpoints with `tf.train.CheckpointManager` in the pattern TensorFlow
documents for several workers: every worker saves (saving may need
collectives), the chief into the checkpoint directory, the others into a
scratch directory they delete; every worker restores from the chief's.
A run started again restores the latest checkpoint and continues from its
step, and the dataset function gets that step, so the data position
continues too: a job killed at any point (SIGTERM or SIGKILL) loses at most
the steps since the last checkpoint, and redoes them identically.
"""

import os
import shutil
import time
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional

from absl import logging
import tensorflow as tf

from launch import common

# A replica step: a batch in, scalar logs out.
StepFn = Callable[..., Dict[str, tf.Tensor]]
# (input context, first global step) -> per-replica batches.
DatasetFn = Callable[[tf.distribute.InputContext, int], tf.data.Dataset]


def task_id(strategy: tf.distribute.Strategy) -> Optional[int]:
  """This worker's index in a multi-worker cluster, or `None`."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return None
  return resolver.task_id


class Checkpointer:
  """Saves and restores a `tf.train.Checkpoint` under any strategy.

  Args:
    checkpoint: what to save, for example
      `tf.train.Checkpoint(model=model, optimizer=model.optimizer)`.
    directory: the checkpoint directory (the chief's).
    chief: whether this task is the chief.
    worker: this worker's index, names a non-chief's scratch directory.
    max_to_keep: checkpoints kept in `directory`.
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
    """Restores the chief's latest checkpoint; returns its path or `None`."""
    path = tf.train.latest_checkpoint(self.directory)
    if path:
      self.checkpoint.restore(path).assert_existing_objects_matched()
      logging.info("Restored %s", path)
    return path

  def save(self, step: int) -> None:
    """Writes the checkpoint of `step` (a non-chief's is then deleted)."""
    self._manager.save(checkpoint_number=step)
    if self._scratch:
      shutil.rmtree(self._scratch, ignore_errors=True)


def train(
  strategy: tf.distribute.Strategy,
  step_fn: StepFn,
  dataset_fn: DatasetFn,
  step_counter: tf.Variable,
  num_steps: int,
  checkpointer: Checkpointer,
  checkpoint_every: int,
  steps_per_loop: int = 50,
  summary_dir: Optional[str] = None,
  reset_fn: Optional[Callable[[], None]] = None,
  jit_compile: bool = False,
) -> List[Dict[str, float]]:
  """Trains until `step_counter` reaches `num_steps`, resuming if it can.

  Args:
    strategy: the strategy the model and optimiser were built under.
    step_fn: one training step on one replica's batch; must advance
      `step_counter` by one (an optimiser's `iterations` does) and return
      scalar logs.
    dataset_fn: `(input_context, start_step)` to the per-replica batches
      from global step `start_step` on.
    step_counter: the global step, saved in the checkpoint.
    num_steps: the step to train to.
    checkpointer: restores before training and saves every
      `checkpoint_every` steps and at the end.
    checkpoint_every: steps between checkpoints.
    steps_per_loop: steps per `tf.function` call; logs and summaries are
      written after each call.
    summary_dir: TensorBoard directory for the chief's scalars (every log,
      and `steps_per_second`); `None` writes none.
    reset_fn: called before each loop, e.g. to reset running-mean metrics
      so that each log is the mean over its loop.
    jit_compile: compile the step with XLA.

  Returns:
    The logs after each loop, each with its `"step"`, averaged over
    replicas.

  Raises:
    ValueError: for non-positive `num_steps`, `checkpoint_every` or
      `steps_per_loop`.
  """
  for name, value in (
    ("num_steps", num_steps),
    ("checkpoint_every", checkpoint_every),
    ("steps_per_loop", steps_per_loop),
  ):
    if value < 1:
      raise ValueError(
        f"Received an invalid value for `{name}`, expected a positive "
        f"integer. Received: {name}={value}"
      )
  checkpointer.restore()
  step = int(step_counter.numpy())
  if step >= num_steps:
    return []
  dataset = strategy.distribute_datasets_from_function(
    lambda context: dataset_fn(context, step)
  )
  iterator = iter(dataset)
  replica_step = (
    tf.function(step_fn, jit_compile=True) if jit_compile else step_fn
  )

  @tf.function
  def run_loop(iterator, count):
    for _ in tf.range(count - 1):
      strategy.run(replica_step, args=(next(iterator),))
    logs = strategy.run(replica_step, args=(next(iterator),))
    return {
      name: strategy.reduce("MEAN", value, axis=None)
      for name, value in logs.items()
    }

  writer = (
    tf.summary.create_file_writer(summary_dir)
    if summary_dir
    else tf.summary.create_noop_writer()
  )
  history = []
  while step < num_steps:
    next_checkpoint = (step // checkpoint_every + 1) * checkpoint_every
    count = min(steps_per_loop, next_checkpoint - step, num_steps - step)
    if reset_fn is not None:
      reset_fn()
    start = time.perf_counter()
    logs = run_loop(iterator, tf.constant(count))
    logs = {name: float(value) for name, value in logs.items()}
    logs["steps_per_second"] = count / (time.perf_counter() - start)
    new_step = int(step_counter.numpy())
    if new_step != step + count:
      raise RuntimeError(
        f"`step_fn` must advance `step_counter` by one per step: it went "
        f"from {step} to {new_step} in {count} steps."
      )
    step = new_step
    history.append({"step": step, **logs})
    with writer.as_default(step=step):
      for name, value in logs.items():
        tf.summary.scalar(name, value)
    if step % checkpoint_every == 0 or step == num_steps:
      checkpointer.save(step)
  writer.close()
  return history


def train_run(
  run_dir: str,
  strategy: tf.distribute.Strategy,
  checkpoint: tf.train.Checkpoint,
  step_fn: StepFn,
  dataset_fn: DatasetFn,
  step_counter: tf.Variable,
  num_steps: int,
  checkpoints: int = 4,
  **kwargs,
) -> List[Dict[str, float]]:
  """`train` in a launcher's run directory.

  Checkpoints go to `run_dir/checkpoints` (`checkpoints` of them over the
  run, the chief's), the chief's scalars to `run_dir/tensorboard/train`.

  Args:
    run_dir: the run's directory.
    strategy: as for `train`.
    checkpoint: what to save.
    step_fn: as for `train`.
    dataset_fn: as for `train`.
    step_counter: as for `train`.
    num_steps: as for `train`.
    checkpoints: checkpoints over the run.
    **kwargs: the other arguments of `train`.

  Returns:
    What `train` returns.
  """
  chief = common.is_chief(strategy)
  return train(
    strategy,
    step_fn,
    dataset_fn,
    step_counter,
    num_steps,
    Checkpointer(
      checkpoint,
      os.path.join(run_dir, "checkpoints"),
      chief=chief,
      worker=task_id(strategy),
    ),
    checkpoint_every=max(1, num_steps // max(1, checkpoints)),
    summary_dir=os.path.join(run_dir, "tensorboard", "train")
    if chief
    else None,
    **kwargs,
  )
