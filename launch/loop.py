"""The launchers' one loop: any task, any strategy, checkpoints, resume.

`run_sweep` trains every task (`sobolev_tf.tasks.base.Task`) of a sweep
whose record is not yet in `<workdir>/results.jsonl`, `concurrent_runs` at
once (threads), storing the records in the sweep's order; `run` trains one,
in `<workdir>/runs/<run_id>/`:

* `checkpoints/`: `tf.train.CheckpointManager` checkpoints, written in the
  pattern TensorFlow documents for several workers (every worker saves, the
  chief into this directory, the others into a scratch directory they
  delete; every worker restores the chief's: `launch.checkpoints`), and the
  evaluations made so far. Deleted once the run's record is written.
* `tensorboard/`: the chief's summaries: `train/<log>` after every
  execution of `--steps_per_execution` steps (with `train/steps_per_second`),
  `eval/<metric>` at every evaluation, the task's images at the end, and the
  run's hyperparameters for TensorBoard's HParams dashboard.
* whatever the task's `finish` writes (a saved model, exported weights).

A run started again restores its latest readable checkpoint (a truncated or
corrupt one is reported, by file, and the one before it is used) and gives
the task that step: a `DatasetTask`'s dataset starts there, a `HostTask`
brings its environments there. So a job killed at any moment, SIGKILL
included, loses at most the steps since the last checkpoint (at most
`checkpoint_secs` of training, or from the run's start), redoes them,
and ends with the weights and numbers of a job never killed: bit for bit
under `--deterministic`; without it, a step whose concurrent ops round
differently from run to run (the synthetic-gradient one) does so after a
restart too.

Why not `keras.Model.fit`: Keras 3 `fit` does not run under
`MultiWorkerMirroredStrategy` (it reduces its scalar logs with
`strategy.reduce(..., axis=0)`, which fails for scalars:
keras-team/keras#20585, tensorflow/tensorflow#72388), its
`BackupAndRestore` restores the epoch but not the position inside it, every
worker writes the same files, and it cannot drive environments.
"""

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import threading
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import Iterable
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

from absl import logging
from tensorboard.plugins.hparams import api as hparams_api
import tensorflow as tf

from launch import checkpoints
from launch import files
from launch import strategies
from sobolev_tf import checks
from sobolev_tf import execution
from sobolev_tf.tasks import base

TrainFn = Callable[[int], Dict[str, float]]


@dataclasses.dataclass(frozen=True)
class Settings:
  """How the loop trains each run.

  Attributes:
    steps_per_execution: steps between logs; for a `DatasetTask`, also the
      steps per `tf.function` call.
    checkpoints_per_run: checkpoints written over a run, evenly spaced, the
      last at its end.
    checkpoint_secs: the least wall time between a run's checkpoints (and
      from its start to its first): a checkpoint due sooner is skipped, as
      Estimator's `save_checkpoints_secs` spaced them, so that the short
      runs of a sweep do not spend their time writing checkpoints; a run
      killed then redoes at most that much. 0 writes every one. Ignored in
      a cluster, whose workers must all save together.
    eval_every: steps between evaluations during training (each becomes a
      point of the record's `curve`); 0 evaluates at the end only.
    jit_compile: compile a `DatasetTask`'s step with XLA.
    fuse_steps: with `jit_compile` on one replica, whether an execution's
      steps run as one XLA program: `"auto"`, `True` or `False` (see
      `sobolev_tf.execution`).
    concurrent_runs: runs of a sweep trained at once, each in a thread of
      its own (`run_sweep`): the small steps of one run leave a CPU's cores
      idle. More than 1 needs a strategy of one replica on one worker.
  """

  steps_per_execution: int = 50
  checkpoints_per_run: int = 4
  checkpoint_secs: float = 0.0
  eval_every: int = 0
  jit_compile: bool = False
  fuse_steps: Any = "auto"
  concurrent_runs: int = 1

  def __post_init__(self):
    execution.check_fuse_steps(self.fuse_steps)
    checks.positive_ints(
      steps_per_execution=self.steps_per_execution,
      checkpoints_per_run=self.checkpoints_per_run,
      concurrent_runs=self.concurrent_runs,
    )
    checks.non_negative_ints(eval_every=self.eval_every)
    checks.non_negative_numbers(checkpoint_secs=self.checkpoint_secs)


class _Evaluations:
  """The evaluations of a run so far, kept beside its checkpoints."""

  def __init__(self, directory: str, chief: bool):
    self._path = os.path.join(directory, "evaluations.json")
    self._chief = chief
    self.points: List[Dict[str, float]] = []

  def restore(self, step: int) -> None:
    """Keeps the points up to `step`, the step the run resumes from."""
    if tf.io.gfile.exists(self._path):
      saved = json.loads(files.read_file(self._path))
      self.points = [point for point in saved if point["step"] <= step]

  def add(self, point: Dict[str, float]) -> None:
    """Adds a point (replacing one of its step); the chief writes them all."""
    self.points = [p for p in self.points if p["step"] != point["step"]]
    self.points.append(point)
    if self._chief:
      files.write_file(self._path, json.dumps(self.points))


def _dataset_trainer(
  task: base.DatasetTask,
  strategy: tf.distribute.Strategy,
  start_step: int,
  settings: Settings,
) -> TrainFn:
  """`count -> logs`: `count` steps of `strategy.run(task.train_step)`.

  With XLA on one replica, the `count` steps run as one XLA program where
  `execution.fused_steps` chooses to. Programs are reused across runs of
  the same `task.step_key` (`_PROGRAMS`).
  """
  dataset = strategy.distribute_datasets_from_function(
    lambda context: task.dataset(context, start_step)
  )
  iterator = iter(dataset)
  key = task.step_key
  if key is not None:
    key = (key, id(strategy), settings, repr(iterator.element_spec))
  with _PROGRAMS_LOCK:
    programs = _PROGRAMS.get(key) if key is not None else None
  if programs is None:
    programs = _programs(task, strategy, settings, iterator.element_spec)
    if key is not None:
      with _PROGRAMS_LOCK:
        _PROGRAMS[key] = programs
        while len(_PROGRAMS) > _MOST_PROGRAMS:
          del _PROGRAMS[next(iter(_PROGRAMS))]
  run_steps, fused = programs

  def train(count: int) -> Dict[str, float]:
    task.reset_metrics()
    if fused is None:
      logs = run_steps(iterator, tf.constant(count))
    else:
      logs = fused(iterator, count)
    return {name: float(value) for name, value in logs.items()}

  return train


# The compiled programs of tasks whose steps are the same function of the
# same variables (`DatasetTask.step_key`): a later run of the sweep reuses
# them instead of tracing and compiling its own. The oldest are dropped.
_PROGRAMS: Dict[Any, Tuple[Any, Any]] = {}
_PROGRAMS_LOCK = threading.Lock()
_MOST_PROGRAMS = 16


def _programs(task, strategy, settings, element_spec):
  """`(run_steps, fused)`: an execution's steps, stepwise and fused (or None).

  `run_steps(iterator, count)` runs `count` steps of
  `strategy.run(task.train_step)`; with XLA on one replica `fused` runs
  them as one XLA program where `execution.fused_steps` chooses to.
  """
  replica_step = (
    tf.function(task.train_step, jit_compile=True)
    if settings.jit_compile
    else task.train_step
  )

  @tf.function
  def run_steps(iterator, count):
    for _ in tf.range(count - 1):
      strategy.run(replica_step, args=(next(iterator),))
    logs = strategy.run(replica_step, args=(next(iterator),))
    return {
      name: strategy.reduce("MEAN", value, axis=None)
      for name, value in logs.items()
    }

  fused = execution.fused_steps(
    settings.fuse_steps,
    lambda batch: strategy.run(task.train_step, args=(batch,)),
    settings.steps_per_execution,
    element_spec,
    strategy.num_replicas_in_sync,
    settings.jit_compile,
  )
  return run_steps, fused


def trainer(
  task: base.Task,
  strategy: tf.distribute.Strategy,
  start_step: int,
  settings: Settings,
) -> TrainFn:
  """`count -> logs`: trains a built task from `start_step` as `run` does.

  What `run` calls for its executions (and what the sweep benchmark
  times): the compiled steps on the task's dataset, or a host task's
  `train`.
  """
  if isinstance(task, base.DatasetTask):
    return _dataset_trainer(task, strategy, start_step, settings)
  if isinstance(task, base.HostTask):
    task.resume(start_step)
    return task.train
  raise TypeError(
    f"Expected a DatasetTask or a HostTask. Received: {type(task).__name__}"
  )


class Clock:
  """Wall seconds spent in each phase of a run, for its record and log."""

  PHASES = (
    "build",
    "first_execution",
    "steps",
    "evaluation",
    "summaries",
    "checkpoints",
    "finish",
  )

  def __init__(self):
    self.seconds = dict.fromkeys(self.PHASES, 0.0)

  @contextlib.contextmanager
  def phase(self, name: str):
    """Adds the time inside the context to phase `name`."""
    start = time.perf_counter()
    try:
      yield
    finally:
      self.seconds[name] += time.perf_counter() - start

  @staticmethod
  def now() -> float:
    """Monotonic seconds, by which checkpoints are spaced."""
    return time.monotonic()

  def rounded(self) -> Dict[str, float]:
    """The phases' seconds, rounded to milliseconds."""
    return {name: round(value, 3) for name, value in self.seconds.items()}


def _write_scalars(writer, prefix: str, values: Dict[str, float], step: int):
  with writer.as_default(step=step):
    for name, value in values.items():
      tf.summary.scalar(f"{prefix}/{name}", value)


def _steps_until(step: int, every: int) -> int:
  """Steps from `step` to the next multiple of `every`."""
  return every - step % every


class _Run:
  """One run's checkpoints, evaluations and summaries, for `run`.

  Made after the task is built: restores its latest checkpoint and the
  evaluations up to that step, and opens the chief's summary writer.
  """

  def __init__(
    self,
    task: base.Task,
    strategy: tf.distribute.Strategy,
    run_dir: str,
    settings: Settings,
    clock: Clock,
  ):
    self.task = task
    self.settings = settings
    self.clock = clock
    self.chief = strategies.is_chief(strategy)
    self.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
    checkpoint_dir = os.path.join(run_dir, "checkpoints")
    self.checkpointer = checkpoints.Checkpointer(
      tf.train.Checkpoint(
        **task.checkpoint_items(), train_seconds=self.seconds
      ),
      checkpoint_dir,
      chief=self.chief,
      worker=strategies.task_id(strategy),
    )
    self.checkpointer.restore()
    self.step = int(task.step_counter.numpy())
    self.evaluations = _Evaluations(checkpoint_dir, self.chief)
    self.evaluations.restore(self.step)
    self.best = None
    if task.selection is not None:
      self.best = checkpoints.BestCheckpoint(
        tf.train.Checkpoint(**task.checkpoint_items()),
        os.path.join(checkpoint_dir, "best"),
        *task.selection,
        chief=self.chief,
        worker=strategies.task_id(strategy),
      )
    self.writer = (
      tf.summary.create_file_writer(os.path.join(run_dir, "tensorboard"))
      if self.chief
      else tf.summary.create_noop_writer()
    )
    with self.writer.as_default():
      hparams_api.hparams(task.hparams(), trial_id=task.run_id)
    self.checkpoint_every = max(
      1, task.num_steps // settings.checkpoints_per_run
    )
    # Workers of a cluster save together, so only a lone process skips.
    self.checkpoint_secs = (
      settings.checkpoint_secs if strategies.task_id(strategy) is None else 0
    )
    self.saved_at = clock.now()

  def _count(self) -> int:
    """Steps of the next execution: up to a checkpoint, evaluation or end."""
    count = min(
      self.settings.steps_per_execution,
      _steps_until(self.step, self.checkpoint_every),
      self.task.num_steps - self.step,
    )
    if self.settings.eval_every:
      count = min(count, _steps_until(self.step, self.settings.eval_every))
    return count

  def train(self, train: TrainFn) -> None:
    """Trains to the end: executions, summaries, evaluations, checkpoints."""
    first = True
    while self.step < self.task.num_steps:
      count = self._count()
      start = time.perf_counter()
      with self.clock.phase("first_execution" if first else "steps"):
        logs = train(count)
        self.task.check_steps()
      elapsed = time.perf_counter() - start
      first = False
      self.seconds.assign_add(elapsed)
      new_step = int(self.task.step_counter.numpy())
      if new_step != self.step + count:
        raise RuntimeError(
          f"A training step must advance the step counter by one: it went "
          f"from {self.step} to {new_step} in {count} steps."
        )
      self.step = new_step
      logs["steps_per_second"] = count / elapsed
      with self.clock.phase("summaries"):
        _write_scalars(self.writer, "train", logs, self.step)
      every = self.settings.eval_every
      if every and self.step % every == 0 and self.step < self.task.num_steps:
        self._evaluate()
      if self._checkpoint_due():
        with self.clock.phase("checkpoints"):
          self.checkpointer.save(self.step)
          if self.best is not None:
            self.best.prune(self.evaluations.points)
        self.saved_at = self.clock.now()

  def _checkpoint_due(self) -> bool:
    """At a checkpoint's step, `checkpoint_secs` after the last one."""
    at_step = (
      self.step % self.checkpoint_every == 0 or self.step == self.task.num_steps
    )
    return at_step and (
      self.clock.now() - self.saved_at >= self.checkpoint_secs
    )

  def _evaluate(self) -> Dict[str, float]:
    with self.clock.phase("evaluation"):
      metrics = self.task.evaluate()
    with self.clock.phase("summaries"):
      _write_scalars(self.writer, "eval", metrics, self.step)
    if self.settings.eval_every or self.best is not None:
      self.evaluations.add({"step": self.step, **metrics})
    if self.best is not None:
      if self.best.metric not in metrics:
        raise ValueError(
          f"Task {self.task.run_id} selects by {self.best.metric!r}, which "
          f"its evaluation does not return. Received: {sorted(metrics)}"
        )
      with self.clock.phase("checkpoints"):
        self.best.consider(self.evaluations.points)
    return metrics

  def finish(self, run_dir: str) -> Dict[str, Any]:
    """Evaluates the trained task and makes its record.

    With a selection metric, the task ends with the weights of its best
    evaluation, which `finish` saves, and the record holds their metrics
    (`best_<metric>`, `best_step`) beside the last ones.
    """
    metrics = self._evaluate()
    with self.clock.phase("summaries"):
      with self.writer.as_default(step=self.step):
        for name, image in self.task.summary_images().items():
          tf.summary.image(f"eval/{name}", image)
    record = self.task.record(metrics)
    if self.settings.eval_every:
      record["curve"] = self.evaluations.points
    record["train_seconds"] = round(float(self.seconds.numpy()), 2)
    if self.best is not None:
      record.update(self._best_record(metrics))
    with self.clock.phase("finish"):
      self.writer.close()
      record.update(self.task.finish(run_dir, self.chief))
    record["seconds"] = self.clock.rounded()
    return record

  def _best_record(self, last: Dict[str, float]) -> Dict[str, Any]:
    """The best evaluation's weights restored, and their metrics."""
    with self.clock.phase("checkpoints"):
      best = self.best.restore(self.evaluations.points)
    if best["step"] == self.step:
      metrics = last
    else:
      with self.clock.phase("evaluation"):
        metrics = self.task.evaluate()
    _write_scalars(self.writer, "best", metrics, best["step"])
    return {
      "best_step": best["step"],
      **{f"best_{name}": value for name, value in metrics.items()},
    }


def run(
  task: base.Task,
  strategy: tf.distribute.Strategy,
  run_dir: str,
  settings: Settings = Settings(),
) -> Dict[str, Any]:
  """Trains `task` to its `num_steps` in `run_dir`, resuming if it can.

  Args:
    task: the run.
    strategy: the strategy to build and train it under.
    run_dir: the run's directory.
    settings: how to train.

  Returns:
    The run's record: the task's `record` of the final evaluation, the
    `curve` of evaluations (with `eval_every`), the fields `finish`
    returned, and `train_seconds` (training time summed over restarts, up
    to the last checkpoint).

  Raises:
    RuntimeError: if the task's step does not advance its `step_counter`
      by one per step, or no existing checkpoint can be read.
  """
  task.check_strategy(strategy)
  clock = Clock()
  with clock.phase("build"):
    with strategy.scope():
      task.build()
    state = _Run(task, strategy, run_dir, settings, clock)
    train = None
    if state.step < task.num_steps:
      train = trainer(task, strategy, state.step, settings)
  if train is not None:
    state.train(train)
  return state.finish(run_dir)


def run_sweep(
  workdir: str,
  strategy: tf.distribute.Strategy,
  tasks: Sequence[base.Task],
  settings: Settings,
  describe: Callable[[Dict[str, Any]], str],
) -> List[Dict[str, Any]]:
  """Runs every task whose record is not yet in `<workdir>/results.jsonl`.

  Every task is checked against the strategy before any trains. The chief
  writes each record when its run ends and then deletes the run's
  checkpoints; progress is logged after each run.

  Args:
    workdir: the sweep's directory.
    strategy: the strategy to run under.
    tasks: the runs, in order, with distinct `run_id`s.
    settings: how to train each run.
    describe: a record to the few words logged about it.

  Returns:
    The records of `tasks`, finished before or now, in the order written.

  Raises:
    ValueError: for repeated run ids, or a strategy a task cannot use.
  """
  _check_sweep(tasks, strategy)
  _check_concurrency(settings.concurrent_runs, strategy)
  store = files.ResultStore(os.path.join(workdir, "results.jsonl"))
  finished = store.finished()
  todo = [task for task in tasks if task.run_id not in finished]
  logging.info(
    "%d runs, %d already finished, %d to go%s.",
    len(tasks),
    len(tasks) - len(todo),
    len(todo),
    f", {settings.concurrent_runs} at once"
    if settings.concurrent_runs > 1
    else "",
  )
  chief = strategies.is_chief(strategy)
  start = time.perf_counter()
  totals = dict.fromkeys(Clock.PHASES + ("store",), 0.0)
  with _Runner(strategy, workdir, settings) as runner:
    records = runner.start(todo)
    for index, (task, record) in enumerate(zip(todo, records, strict=True)):
      stored = time.perf_counter()
      if chief:
        _store(record, store, os.path.join(workdir, "runs", task.run_id))
      for name, value in record["seconds"].items():
        totals[name] += value
      totals["store"] += time.perf_counter() - stored
      elapsed = time.perf_counter() - start
      logging.info(
        "[%d/%d] %s: %s (%.1fs: %s; ~%.0fs left)",
        index + 1,
        len(todo),
        task.run_id,
        describe(record),
        sum(record["seconds"].values()),
        _phases(record["seconds"]),
        elapsed / (index + 1) * (len(todo) - index - 1),
      )
  if todo:
    logging.info(
      "Sweep: %d runs in %.1fs: %s",
      len(todo),
      time.perf_counter() - start,
      _phases(totals),
    )
  run_ids = {task.run_id for task in tasks}
  return [r for r in store.records() if r["run_id"] in run_ids]


class _Runner:
  """Runs a sweep's tasks, `concurrent_runs` at once, for `run_sweep`.

  `start(tasks)` yields their records in the tasks' order, each as soon as
  it and the runs before it have finished, so that the results file keeps
  the sweep's order and a killed sweep loses no stored record. With one run
  at a time every run trains in the calling thread, in order. With more,
  runs train in a pool of threads (TensorFlow runs ops outside Python's
  lock), a free thread starting the task `_choose` picks. Leaving the
  context stops the runs not started when one fails.
  """

  def __init__(self, strategy, workdir: str, settings: Settings):
    self._strategy = strategy
    self._workdir = workdir
    self._settings = settings
    self._pool = None

  def __enter__(self) -> "_Runner":
    if self._settings.concurrent_runs > 1:
      self._pool = concurrent.futures.ThreadPoolExecutor(
        self._settings.concurrent_runs, thread_name_prefix="run"
      )
    return self

  def __exit__(self, *unused_exc_info) -> None:
    if self._pool is not None:
      self._pool.shutdown(wait=True, cancel_futures=True)

  def _run(self, task: base.Task) -> Dict[str, Any]:
    run_dir = os.path.join(self._workdir, "runs", task.run_id)
    return run(task, self._strategy, run_dir, self._settings)

  def start(self, tasks: Sequence[base.Task]):
    """The records of `tasks`, in order (a generator)."""
    if self._pool is None:
      yield from map(self._run, tasks)
      return
    waiting = list(range(len(tasks)))
    running: Dict[concurrent.futures.Future, int] = {}
    done: Dict[int, concurrent.futures.Future] = {}
    failure = None
    for index in range(len(tasks)):
      while index not in done:
        while (
          failure is None
          and waiting
          and len(running) < self._settings.concurrent_runs
        ):
          chosen = _choose(tasks, waiting, running.values())
          if chosen is None:
            break
          waiting.remove(chosen)
          running[self._pool.submit(self._run, tasks[chosen])] = chosen
        if not running:  # A failure stopped the sweep before this run.
          raise failure
        finished, _ = concurrent.futures.wait(
          running, return_when=concurrent.futures.FIRST_COMPLETED
        )
        for future in finished:
          done[running.pop(future)] = future
          if failure is None:
            failure = future.exception()
      # The runs before a failed one are stored; then its error is raised.
      yield done.pop(index).result()


# Waiting runs of one key that are worth a second model of it (and a second
# compilation of its step) while its first is busy: fewer are trained
# sooner one after another on the first.
_RUNS_WORTH_A_COPY = 4


def _choose(
  tasks: Sequence[base.Task], waiting: List[int], running: Iterable[int]
) -> Optional[int]:
  """The waiting task a free thread of `_Runner` starts, or None to wait.

  The first waiting task whose `share_key` no running task holds, so that
  the tasks of a key reuse one model and compiled program; else, if the
  first waiting task's key has `_RUNS_WORTH_A_COPY` runs waiting, that task
  (on a model of its own); else none: the thread waits for a running task
  to end (at a sweep's end, a copy would cost more than it saves).
  """
  held = {tasks[i].share_key for i in running} - {None}
  for i in waiting:
    if tasks[i].share_key not in held:
      return i
  key = tasks[waiting[0]].share_key
  same = sum(tasks[i].share_key == key for i in waiting)
  return waiting[0] if same >= _RUNS_WORTH_A_COPY else None


def _phases(seconds: Dict[str, float]) -> str:
  """`build 0.4, first_execution 1.2, ...`: the phases that took time."""
  return ", ".join(f"{k} {v:.2f}" for k, v in seconds.items() if v >= 0.005)


def _check_concurrency(
  concurrent_runs: int, strategy: tf.distribute.Strategy
) -> None:
  """Raises a `ValueError` for concurrent runs under a distributed strategy."""
  if concurrent_runs > 1 and strategies.is_distributed(strategy):
    replicas = strategy.num_replicas_in_sync
    cluster = strategies.task_id(strategy) is not None
    raise ValueError(
      "Expected concurrent_runs=1 under a strategy of several replicas or "
      "workers, whose steps already share the devices (and whose collective "
      f"ops must run in one order). Received: concurrent_runs="
      f"{concurrent_runs} under {type(strategy).__name__} with {replicas} "
      f"replicas{' in a cluster' if cluster else ''}"
    )


def _check_sweep(
  tasks: Sequence[base.Task], strategy: tf.distribute.Strategy
) -> None:
  """Raises a `ValueError` for repeated run ids or a strategy refused."""
  run_ids = [task.run_id for task in tasks]
  repeated = sorted({r for r in run_ids if run_ids.count(r) > 1})
  if repeated:
    raise ValueError(f"Expected distinct run ids. Repeated: {repeated}")
  for task in tasks:
    task.check_strategy(strategy)


def _store(
  record: Dict[str, Any], store: files.ResultStore, run_dir: str
) -> None:
  """Adds a finished run's record, then deletes the run's checkpoints."""
  store.add(record)
  checkpoint_dir = os.path.join(run_dir, "checkpoints")
  if tf.io.gfile.exists(checkpoint_dir):
    tf.io.gfile.rmtree(checkpoint_dir)
