"""The interface every experiment's training run implements.

In the spirit of TF Model Garden's `base_task.Task` and Orbit's trainers: a
task builds its model, modules and optimisers (under the strategy's scope),
says what its checkpoint holds, trains one step at a time, evaluates itself
and makes its result record. `launch/loop.py` owns the rest: the strategy,
the workdir, checkpoints, summaries and resuming.

Two kinds of training step:

* `DatasetTask`: a replica function on a batch from a `tf.data` pipeline
  that can start at any step (`dataset(context, start_step)`). The loop runs
  it under `strategy.run` inside a `tf.function`.
* `HostTask`: steps driven from the host, e.g. by environments that step on
  this machine: `resume(start_step)` brings the data source to the
  restored step, then `train(num_steps)` trains.

The loop calls, in order: `check_strategy`, `build` (inside
`strategy.scope()`), restores `checkpoint_items()`, trains (`dataset` and
`train_step`, or `resume` and `train`), calls `evaluate` at every evaluation
point and at the end, then `summary_images`, `finish` and `record` once.
"""

import abc
import dataclasses
from typing import Any
from typing import Dict
from typing import Hashable
from typing import Optional
from typing import Tuple
from typing import Union

import tensorflow as tf

from sobolev_tf import checks
from sobolev_tf import finite_updates

HParamValue = Union[bool, int, float, str]


def check_global_batch(
  batch_size: int, strategy: tf.distribute.Strategy, what: str = ""
) -> None:
  """Raises a `ValueError` unless `batch_size` divides among the replicas.

  Args:
    batch_size: the global batch.
    strategy: the strategy the task runs under.
    what: what the batch is, when it is not `--batch_size` itself.
  """
  replicas = strategy.num_replicas_in_sync
  if batch_size % replicas:
    what = f" ({what})" if what else ""
    raise ValueError(
      f"Received an invalid value for `batch_size`: the global batch{what} "
      f"must divide among the {replicas} replicas of "
      f"{type(strategy).__name__}. Received: batch_size={batch_size}"
    )


def config_hparams(config: Any, *excluded: str) -> Dict[str, HParamValue]:
  """The fields of a run's config dataclass but `excluded`, as hparams.

  Args:
    config: a dataclass instance whose fields, but `excluded`, are `bool`,
      `int`, `float` or `str`.
    *excluded: fields left out, e.g. tuples HParams cannot show.

  Returns:
    `{field: value}`, in the fields' order.
  """
  return {
    key: value
    for key, value in dataclasses.asdict(config).items()
    if key not in excluded
  }


class Task(abc.ABC):
  """One training run of an experiment.

  Args:
    run_id: unique within a sweep; names the run's directory.
    num_steps: the step the run trains to.

  Raises:
    ValueError: for an empty `run_id` or a `num_steps` below 1.
  """

  def __init__(self, run_id: str, num_steps: int):
    if not run_id or "/" in run_id:
      raise ValueError(
        "Received an invalid value for `run_id`, expected a non-empty name "
        f"without '/'. Received: run_id={run_id!r}"
      )
    checks.positive_ints(num_steps=num_steps)
    self.run_id = run_id
    self.num_steps = num_steps

  def check_strategy(self, strategy: tf.distribute.Strategy) -> None:
    """Raises a `ValueError` if the task cannot run under `strategy`.

    Every strategy is accepted unless a task says otherwise.
    """
    del strategy

  @abc.abstractmethod
  def hparams(self) -> Dict[str, HParamValue]:
    """The run's settings, for its record and TensorBoard's HParams."""

  @abc.abstractmethod
  def build(self) -> None:
    """Creates the models, modules and optimisers, inside `strategy.scope()`.

    Every variable a checkpoint holds must exist when it returns, so that a
    checkpoint restores before the first step.
    """

  @property
  def step_counter(self) -> tf.Variable:
    """The global step: saved in the checkpoint, one more after each step.

    By default, as in Orbit's trainers, the iterations of the checkpoint's
    `optimizer`.
    """
    return self.checkpoint_items()["optimizer"].iterations

  @abc.abstractmethod
  def checkpoint_items(self) -> Dict[str, Any]:
    """What a checkpoint holds, as `tf.train.Checkpoint` keyword arguments.

    The default `step_counter` reads the `optimizer` among them.
    """

  @property
  def selection(self) -> Optional[Tuple[str, str]]:
    """The validation metric that picks the run's best weights, or `None`.

    `(name, "min")` or `(name, "max")` of a metric `evaluate` returns: the
    loop keeps the weights of the best evaluation, ends the run with them
    and records their metrics beside the last ones.
    """
    return None

  @property
  def guard(self) -> Optional[finite_updates.StepGuard]:
    """The guard of a task whose steps skip non-finite updates, or `None`."""
    return None

  def check_steps(self) -> None:
    """Raises from the host if a step just run was not applied.

    The loop calls it after every execution: a skipped step is an error
    that names its cause (`guard`).
    """
    if self.guard is not None:
      self.guard.raise_if_skipped(
        f"in run {self.run_id} before step {int(self.step_counter.numpy())} "
      )

  @abc.abstractmethod
  def evaluate(self) -> Dict[str, float]:
    """Scalar test metrics of the current weights, by name."""

  def summary_images(self) -> Dict[str, tf.Tensor]:
    """Images `[1, H, W, C]` in [0, 1] for TensorBoard at the end, by name."""
    return {}

  def finish(self, run_dir: str, chief: bool) -> Dict[str, Any]:
    """Runs once after training; returns fields added to the record.

    Args:
      run_dir: the run's directory, for artifacts (written by the chief
        only).
      chief: whether this task writes.

    Returns:
      Extra record fields (none unless a task says otherwise).
    """
    del run_dir, chief
    return {}

  def record(self, metrics: Dict[str, float]) -> Dict[str, Any]:
    """The run's result record: its id, settings and final metrics."""
    return {"run_id": self.run_id, **self.hparams(), **metrics}

  @property
  def share_key(self) -> Optional[Hashable]:
    """Tasks of one key take over one model, one task at a time.

    Known before `build`. A sweep that trains several tasks at once starts
    a task whose key no running task holds where it can, so that the tasks
    of a key reuse one model and its compiled step instead of building
    and compiling another. `None` (the default): nothing shared.
    """
    return None


class DatasetTask(Task):
  """A task whose steps are replica functions on batches of a dataset."""

  @abc.abstractmethod
  def dataset(
    self, context: tf.distribute.InputContext, start_step: int
  ) -> tf.data.Dataset:
    """This input pipeline's per-replica batches from global step `start_step`.

    Global batch `k` must depend only on the run's settings and `k`, so that
    a resumed run sees the batches of an uninterrupted one.
    """

  @abc.abstractmethod
  def train_step(self, batch: Any) -> Dict[str, tf.Tensor]:
    """One step on one replica's batch; returns scalar logs.

    It runs inside `strategy.run` and advances `step_counter` by one.
    """

  def reset_metrics(self) -> None:
    """Resets running metrics before each group of steps (none by default)."""

  @property
  def step_key(self) -> Optional[Hashable]:
    """What makes this task's `train_step` the same program as another's.

    Tasks of a sweep that share their step's function and variables (a
    model reset between runs) return one key, and the loop compiles the
    step once for all of them. `None` (the default): a program of its own.
    """
    return None


class HostTask(Task):
  """A task whose steps are driven from the host, e.g. by environments."""

  @abc.abstractmethod
  def resume(self, start_step: int) -> None:
    """Brings the data source to `start_step`, after the checkpoint restored.

    Called once, before the first `train`.
    """

  @abc.abstractmethod
  def train(self, num_steps: int) -> Dict[str, float]:
    """Trains `num_steps` steps; returns their logs (means over the steps)."""
