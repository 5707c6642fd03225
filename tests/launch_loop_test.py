"""Tests for launch.loop: tasks trained, checkpointed, resumed, summarised."""

import collections
import glob
import json
import os
import threading
import time
from unittest import mock

from absl.testing import parameterized
from tensorboard.backend.event_processing import event_accumulator
import tensorflow as tf

from launch import loop
from sobolev_tf import testing
from sobolev_tf.tasks import a2c
from sobolev_tf.tasks import a2c_task
from sobolev_tf.tasks import regression
from sobolev_tf.tasks import regression_task

testing.configure_logical_cpus(2)


def _regression(steps=30, stop_at=None):
  """The Booth regression task; `stop_at` ends it early, as a kill would."""
  task = regression_task.RegressionTask(
    regression.RunConfig(
      "booth", 2, 24, "sobolev", seed=0, steps=steps, batch_size=8, test_size=50
    )
  )
  if stop_at:
    task.num_steps = stop_at
  return task


class _Selecting(testing.CountingTask):
  """A counting task whose validation error is least at step 5 (total 10)."""

  @property
  def selection(self):
    return ("val", "min")

  def evaluate(self):
    total = float(self.total.numpy())
    return {"total": total, "val": abs(total - 10.0)}


def _settings(**kwargs):
  return loop.Settings(
    **{"steps_per_execution": 4, "checkpoints_per_run": 3, **kwargs}
  )


def _tags(run_dir):
  (events,) = glob.glob(os.path.join(run_dir, "tensorboard", "events.*"))
  accumulator = event_accumulator.EventAccumulator(events, size_guidance={})
  accumulator.Reload()
  return accumulator


class RunTest(tf.test.TestCase, parameterized.TestCase):
  def test_trains_summarises_and_checkpoints(self):
    run_dir = self.get_temp_dir() + "/trains"
    task = _regression(steps=20)
    record = loop.run(task, tf.distribute.get_strategy(), run_dir, _settings())
    self.assertEqual(int(task.step_counter.numpy()), 20)
    self.assertEqual(record["run_id"], "booth-d2-n24-sobolev-s0")
    self.assertEqual(record["test_mse"], task.evaluate()["test_mse"])
    self.assertNotIn("curve", record)
    checkpoints = os.path.join(run_dir, "checkpoints")
    self.assertEqual(
      tf.train.latest_checkpoint(checkpoints),
      os.path.join(checkpoints, "ckpt-20"),
    )
    self.assertTrue(os.path.exists(os.path.join(run_dir, "model.keras")))
    tags = _tags(run_dir)
    # Executions end at the checkpoints (every 6 steps) and the end.
    self.assertEqual(
      [event.step for event in tags.Tensors("train/loss")],
      [4, 6, 10, 12, 16, 18, 20],
    )
    self.assertIn("train/d1_loss", tags.Tags()["tensors"])
    self.assertIn("train/steps_per_second", tags.Tags()["tensors"])
    (mse,) = tags.Tensors("eval/test_mse")
    self.assertEqual(mse.step, 20)
    self.assertAllClose(tf.make_ndarray(mse.tensor_proto), record["test_mse"])
    self.assertIn("eval/fitted_surface", tags.Tags()["tensors"])
    self.assertIn("_hparams_/session_start_info", tags.Tags()["tensors"])

  @parameterized.named_parameters(
    ("every_one", 0.0, [9, 12]),
    ("spaced", 1.5, [6, 12]),
    ("none", 100.0, []),
  )
  def test_checkpoints_are_spaced_by_checkpoint_secs(self, seconds, steps):
    class Ticking(loop.Clock):
      """A clock whose every reading is a second after the last."""

      def __init__(self):
        super().__init__()
        self.time = 0.0

      def now(self):
        self.time += 1.0
        return self.time

    run_dir = self.get_temp_dir() + f"/spaced{seconds}"
    task = testing.CountingTask("count", 12)
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
      task.build()
    # Checkpoints are due at steps 3, 6, 9 and 12; two are kept.
    settings = _settings(checkpoints_per_run=4, checkpoint_secs=seconds)
    state = loop._Run(task, strategy, run_dir, settings, Ticking())
    state.train(loop.trainer(task, strategy, 0, settings))
    kept = glob.glob(os.path.join(run_dir, "checkpoints", "ckpt-*.index"))
    self.assertCountEqual(
      [os.path.join(run_dir, "checkpoints", f"ckpt-{s}.index") for s in steps],
      kept,
    )
    self.assertEqual(int(task.total.numpy()), 66)

  def test_a_cluster_writes_every_checkpoint(self):
    # Its workers must all save together, whatever their clocks say.
    run_dir = self.get_temp_dir() + "/cluster"
    with mock.patch.object(loop.strategies, "task_id", return_value=0):
      loop.run(
        testing.CountingTask("count", 12),
        tf.distribute.get_strategy(),
        run_dir,
        _settings(checkpoints_per_run=4, checkpoint_secs=3600.0),
      )
    self.assertEqual(
      tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints")),
      os.path.join(run_dir, "checkpoints", "ckpt-12"),
    )

  def test_resumed_run_ends_with_the_uninterrupted_run(self):
    strategy = tf.distribute.get_strategy()
    straight = _regression()
    expected = loop.run(
      straight, strategy, self.get_temp_dir() + "/a", _settings()
    )
    run_dir = self.get_temp_dir() + "/b"
    loop.run(_regression(stop_at=20), strategy, run_dir, _settings())
    resumed = _regression()
    record = loop.run(resumed, strategy, run_dir, _settings())
    for a, b in zip(straight.model.weights, resumed.model.weights, strict=True):
      self.assertAllEqual(a, b)
    for key in ("test_mse", "test_gradient_mse"):
      self.assertEqual(record[key], expected[key])

  def test_xla_steps_resume_exactly_and_match_graph_steps(self):
    strategy = tf.distribute.get_strategy()
    settings = _settings(jit_compile=True)
    straight = _regression()
    loop.run(straight, strategy, self.get_temp_dir() + "/xla", settings)
    run_dir = self.get_temp_dir() + "/xla_resumed"
    loop.run(_regression(stop_at=20), strategy, run_dir, settings)
    resumed = _regression()
    loop.run(resumed, strategy, run_dir, settings)
    graph = _regression()
    loop.run(graph, strategy, self.get_temp_dir() + "/graph", _settings())
    for a, b, c in zip(
      straight.model.weights,
      resumed.model.weights,
      graph.model.weights,
      strict=True,
    ):
      self.assertAllEqual(a, b)
      self.assertAllClose(a, c, rtol=1e-5, atol=1e-6)

  def test_fused_xla_steps_match_a_program_per_step(self):
    strategy = tf.distribute.get_strategy()
    tasks = [_regression(), _regression()]
    for task, fuse_steps in zip(tasks, (True, False), strict=True):
      settings = _settings(jit_compile=True, fuse_steps=fuse_steps)
      run_dir = f"{self.get_temp_dir()}/fuse_{fuse_steps}"
      loop.run(task, strategy, run_dir, settings)
      self.assertEqual(int(task.step_counter.numpy()), 30)
    for a, b in zip(
      tasks[0].model.weights, tasks[1].model.weights, strict=True
    ):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)

  def test_invalid_fuse_steps_setting(self):
    with self.assertRaisesRegex(ValueError, "fuse_steps='sometimes'"):
      _settings(fuse_steps="sometimes")

  def test_finished_run_trains_no_more(self):
    run_dir = self.get_temp_dir() + "/finished"
    strategy = tf.distribute.get_strategy()
    first = loop.run(_regression(steps=8), strategy, run_dir, _settings())
    task = _regression(steps=8)
    again = loop.run(task, strategy, run_dir, _settings())
    self.assertEqual(int(task.step_counter.numpy()), 8)
    self.assertEqual(again["test_mse"], first["test_mse"])
    self.assertEqual(again["train_seconds"], first["train_seconds"])

  def test_two_replicas_match_one(self):
    tasks = [_regression(steps=12) for _ in range(2)]
    for task, strategy, name in zip(
      tasks,
      (tf.distribute.get_strategy(), testing.mirrored_strategy()),
      ("one", "two"),
      strict=True,
    ):
      loop.run(task, strategy, self.get_temp_dir() + "/" + name, _settings())
    for a, b in zip(
      tasks[0].model.weights, tasks[1].model.weights, strict=True
    ):
      self.assertAllClose(a, b, rtol=1e-4, atol=1e-5)

  def test_evaluations_make_a_curve_that_survives_resuming(self):
    settings = _settings(eval_every=10)
    strategy = tf.distribute.get_strategy()
    straight = loop.run(
      _regression(), strategy, self.get_temp_dir() + "/c", settings
    )
    self.assertEqual(
      [point["step"] for point in straight["curve"]], [10, 20, 30]
    )
    self.assertEqual(straight["curve"][-1]["test_mse"], straight["test_mse"])
    run_dir = self.get_temp_dir() + "/d"
    loop.run(_regression(stop_at=20), strategy, run_dir, settings)
    # Points after the step resumed from are dropped and made again.
    path = os.path.join(run_dir, "checkpoints", "evaluations.json")
    with open(path) as f:
      saved = json.load(f)
    with open(path, "w") as f:
      json.dump(saved + [{"step": 30, "test_mse": -1.0}], f)
    resumed = loop.run(_regression(), strategy, run_dir, settings)
    self.assertEqual(resumed["curve"], straight["curve"])

  def test_a_host_task_resumes_exactly(self):
    def teacher(num_updates):
      config = a2c.Config(num_envs=2)
      task = a2c_task.TeacherTask(
        "fake",
        6 * config.frames_per_update,
        config,
        eval_episodes=2,
        make_env=lambda n: testing.FakeAtariEnv(n, min_length=3, max_length=5),
      )
      task.num_steps = num_updates
      return task

    strategy = tf.distribute.get_strategy()
    straight = teacher(6)
    expected = loop.run(
      straight, strategy, self.get_temp_dir() + "/e", _settings()
    )
    run_dir = self.get_temp_dir() + "/f"
    loop.run(teacher(4), strategy, run_dir, _settings())
    resumed = teacher(6)
    record = loop.run(resumed, strategy, run_dir, _settings())
    for a, b in zip(
      straight.learner.network.variables,
      resumed.learner.network.variables,
      strict=True,
    ):
      self.assertAllEqual(a, b)
    self.assertEqual(record["scores"], expected["scores"])
    self.assertEqual(
      [e.step for e in _tags(self.get_temp_dir() + "/e").Tensors("train/loss")],
      [2, 4, 6],
    )

  def test_step_must_advance_the_counter(self):
    with self.assertRaisesRegex(RuntimeError, "went from 0 to 0 in 2 steps"):
      loop.run(
        testing.CountingTask(advance=False),
        tf.distribute.get_strategy(),
        self.get_temp_dir() + "/stuck",
        _settings(steps_per_execution=2, checkpoints_per_run=1),
      )

  def test_counting_task_sees_every_number_once_across_a_resume(self):
    strategy = tf.distribute.get_strategy()
    run_dir = self.get_temp_dir() + "/count"
    task = testing.CountingTask(num_steps=6)
    task.num_steps = 4
    loop.run(task, strategy, run_dir, _settings(checkpoints_per_run=1))
    record = loop.run(
      testing.CountingTask(num_steps=6), strategy, run_dir, _settings()
    )
    self.assertEqual(record["total"], sum(range(6)))

  def test_the_best_evaluation_selects_the_weights(self):
    task = _Selecting(num_steps=8)
    run_dir = self.get_temp_dir() + "/select"
    record = loop.run(
      task, tf.distribute.get_strategy(), run_dir, _settings(eval_every=1)
    )
    self.assertEqual(record["total"], sum(range(8)))  # The last weights'.
    self.assertEqual(record["best_step"], 5)
    self.assertEqual(record["best_total"], 10.0)
    self.assertEqual(record["best_val"], 0.0)
    self.assertEqual(int(task.total.numpy()), 10)  # It ends with the best.
    self.assertEqual([e.step for e in _tags(run_dir).Tensors("best/val")], [5])

  @parameterized.parameters(3, 5, 7)
  def test_the_best_survives_a_kill_at_any_step(self, killed_at):
    strategy = tf.distribute.get_strategy()
    settings = _settings(eval_every=1, steps_per_execution=1)
    straight = loop.run(
      _Selecting(num_steps=8), strategy, self.get_temp_dir() + "/s", settings
    )
    run_dir = self.get_temp_dir() + f"/k{killed_at}"
    killed = _Selecting(num_steps=8)
    killed.num_steps = killed_at  # Ends there, as a kill after a checkpoint.
    loop.run(killed, strategy, run_dir, settings)
    resumed = _Selecting(num_steps=8)
    record = loop.run(resumed, strategy, run_dir, settings)
    self.assertEqual(record["best_step"], straight["best_step"])
    self.assertEqual(int(resumed.total.numpy()), 10)
    best_dir = os.path.join(run_dir, "checkpoints", "best")
    kept = sorted(tf.io.gfile.glob(best_dir + "/ckpt-*.index"))
    self.assertEqual([os.path.basename(p) for p in kept], ["ckpt-5.index"])

  def test_a_selection_metric_must_be_evaluated(self):
    class _Missing(_Selecting):
      def evaluate(self):
        return {"total": float(self.total.numpy())}

    with self.assertRaisesRegex(ValueError, "selects by 'val'"):
      loop.run(
        _Missing(),
        tf.distribute.get_strategy(),
        self.get_temp_dir() + "/missing",
        _settings(eval_every=1),
      )

  @parameterized.parameters(
    dict(steps_per_execution=0),
    dict(checkpoints_per_run=0),
    dict(eval_every=-1),
    dict(concurrent_runs=0),
    dict(checkpoint_secs=-1.0),
  )
  def test_invalid_settings(self, **kwargs):
    ((name, value),) = kwargs.items()
    with self.assertRaisesRegex(ValueError, f"Received: {name}={value}"):
      loop.Settings(**kwargs)


class SweepTest(tf.test.TestCase, parameterized.TestCase):
  def test_skips_finished_runs_and_deletes_checkpoints(self):
    workdir = self.get_temp_dir() + "/sweep"
    strategy = tf.distribute.get_strategy()
    tasks = [testing.CountingTask("a", 3), testing.CountingTask("b", 5)]
    records = loop.run_sweep(workdir, strategy, tasks, _settings(), str)
    self.assertEqual([r["total"] for r in records], [3.0, 10.0])
    self.assertEqual(
      os.listdir(os.path.join(workdir, "runs", "a")), ["tensorboard"]
    )
    with self.assertLogs(level="INFO") as logs:
      again = loop.run_sweep(
        workdir, strategy, [testing.CountingTask("a", 3)], _settings(), str
      )
    self.assertEqual(again, records[:1])
    self.assertIn(
      "1 runs, 1 already finished, 0 to go.", "\n".join(logs.output)
    )

  def test_every_task_is_checked_before_any_trains(self):
    workdir = self.get_temp_dir() + "/refused"
    tasks = [testing.CountingTask("a"), testing.CountingTask("b", replicas=2)]
    with self.assertRaisesRegex(ValueError, "needs 2 replicas"):
      loop.run_sweep(
        workdir, tf.distribute.get_strategy(), tasks, _settings(), str
      )
    self.assertFalse(os.path.exists(workdir))
    with self.assertRaisesRegex(ValueError, r"Repeated: \['a'\]"):
      loop.run_sweep(
        workdir,
        tf.distribute.get_strategy(),
        [testing.CountingTask("a"), testing.CountingTask("a")],
        _settings(),
        str,
      )

  def test_concurrent_runs_give_the_records_of_runs_one_at_a_time(self):
    def sweep(concurrent_runs):
      tasks = [
        regression_task.RegressionTask(
          regression.RunConfig(
            function,
            2,
            24,
            method,
            seed=seed,
            steps=24,
            batch_size=8,
            test_size=50,
          ),
          share_model=True,
        )
        for function in ("booth", "beale")
        for method in ("regular", "sobolev")
        for seed in (0, 1)
      ]
      workdir = self.get_temp_dir() + f"/concurrent{concurrent_runs}"
      settings = _settings(concurrent_runs=concurrent_runs, jit_compile=True)
      records = loop.run_sweep(workdir, strategy, tasks, settings, str)
      return [t.run_id for t in tasks], records

    strategy = tf.distribute.get_strategy()
    order, one = sweep(1)
    _, three = sweep(3)
    self.assertEqual([r["run_id"] for r in three], order)
    for alone, together in zip(one, three, strict=True):
      alone, together = map(testing.without_timings, (alone, together))
      self.assertEqual(alone.keys(), together.keys())
      for key, value in alone.items():
        if isinstance(value, float):
          self.assertAllClose(value, together[key], rtol=1e-5, msg=key)
        else:
          self.assertEqual(value, together[key], msg=key)

  def test_runs_at_once_hold_different_share_keys_where_they_can(self):
    active = collections.Counter()
    together = []
    lock = threading.Lock()

    class Keyed(testing.CountingTask):
      def __init__(self, run_id, key):
        super().__init__(run_id, 8)
        self.key = key

      @property
      def share_key(self):
        return self.key

      def build(self):
        with lock:
          if active[self.key]:
            together.append(self.run_id)
          active[self.key] += 1
        time.sleep(0.2)  # so that the runs overlap
        super().build()

      def finish(self, run_dir, chief):
        with lock:
          active[self.key] -= 1
        return super().finish(run_dir, chief)

    def sweep(keys):
      tasks = [Keyed(f"{k}{i}", k) for i, k in enumerate(keys)]
      workdir = self.get_temp_dir() + "/keys" + "".join(keys)
      records = loop.run_sweep(
        workdir,
        tf.distribute.get_strategy(),
        tasks,
        _settings(concurrent_runs=2),
        str,
      )
      self.assertEqual(
        [r["run_id"] for r in records], [t.run_id for t in tasks]
      )

    sweep("aaabbb")
    self.assertEqual(together, [])
    # Two runs waiting are done sooner one after another than by a copy.
    sweep("aaa")
    self.assertEqual(together, [])
    # With many waiting and nothing else to run, runs of one key train at
    # once.
    sweep("aaaaaa")
    self.assertNotEqual(together, [])

  @parameterized.named_parameters(
    ("a_free_key_first", "aab", [0], 2),
    ("none_running", "abc", [], 0),
    ("no_key_is_never_held", "a_", [0], 1),
    ("too_few_for_a_copy", "abab", [0, 1], None),
    ("enough_for_a_copy", "aaaaa", [0], 1),
  )
  def test_choose(self, keys, running, expected):
    class Keyed:
      def __init__(self, key):
        self.share_key = None if key == "_" else key

    tasks = [Keyed(key) for key in keys]
    waiting = [i for i in range(len(tasks)) if i not in running]
    self.assertEqual(loop._choose(tasks, waiting, running), expected)

  def test_a_failed_concurrent_run_stops_the_sweep(self):
    workdir = self.get_temp_dir() + "/failed"
    tasks = [
      testing.CountingTask("a", 8),
      testing.CountingTask("broken", 8, advance=False),
      *(testing.CountingTask(f"later{i}", 8) for i in range(8)),
    ]
    with self.assertRaisesRegex(RuntimeError, "advance the step counter"):
      loop.run_sweep(
        workdir,
        tf.distribute.get_strategy(),
        tasks,
        _settings(concurrent_runs=2),
        str,
      )
    store = loop.files.ResultStore(os.path.join(workdir, "results.jsonl"))
    self.assertEqual([r["run_id"] for r in store.records()], ["a"])
    # At most the runs already started when it failed went on.
    self.assertLess(len(os.listdir(os.path.join(workdir, "runs"))), 6)

  def test_concurrent_runs_need_one_replica(self):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with self.assertRaisesRegex(
      ValueError, "concurrent_runs=2 under MirroredStrategy with 2 replicas"
    ):
      loop.run_sweep(
        self.get_temp_dir() + "/mirrored",
        strategy,
        [testing.CountingTask("a")],
        _settings(concurrent_runs=2),
        str,
      )


if __name__ == "__main__":
  tf.test.main()
