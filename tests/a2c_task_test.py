"""Tests for the A2C teacher task, on the fake Atari environment."""

import os

import numpy as np
import tensorflow as tf

from sobolev_tf import testing
from sobolev_tf.layers import atari
from sobolev_tf.tasks import a2c
from sobolev_tf.tasks import a2c_task

testing.configure_logical_cpus(2)

_CONFIG = a2c.Config(num_envs=4, learning_rate=1e-3, entropy_weight=0.0)


def _task(num_updates, eval_episodes=4, **kwargs):
  task = a2c_task.TeacherTask(
    "fake",
    num_updates * _CONFIG.frames_per_update,
    _CONFIG,
    seed=1,
    eval_episodes=eval_episodes,
    make_env=lambda n: testing.FakeAtariEnv(n, min_length=4, max_length=9),
    **kwargs,
  )
  task.build()
  return task


def _checkpoint(task):
  return tf.train.Checkpoint(**task.checkpoint_items())


class TeacherTaskTest(tf.test.TestCase):
  def test_learns_the_rewarded_action(self):
    # 16 evaluation episodes: with 4, the mean return of the sampled
    # actions is too noisy for a threshold (it fell on it exactly on one
    # machine).
    task = _task(60, eval_episodes=16)
    task.resume(0)
    frames = tf.constant(task.environments.observations)

    def preference():
      logits, _ = task.learner.network(frames)
      return float(tf.reduce_mean(tf.nn.softmax(logits)[:, 0]))

    before = preference()
    logs = task.train(60)
    self.assertGreater(preference(), before + 0.2)
    self.assertEqual(int(task.step_counter.numpy()), 60)
    self.assertEqual(logs["frames"], 60 * _CONFIG.frames_per_update)
    # Rewards come from action 0 only: the late episodes score above 1/3.
    self.assertGreater(logs["episode_return"], 0.5 * 6.5)
    teacher = task.evaluate()["teacher_mean"]
    self.assertGreater(teacher, 0.5 * 6.5)
    self.assertGreater(
      teacher, task.finish(self.get_temp_dir(), False)["random_mean"]
    )

  def test_resumed_run_ends_where_an_uninterrupted_one_does(self):
    straight = _task(12)
    straight.resume(0)
    straight.train(12)

    interrupted = _task(12)
    interrupted.resume(0)
    interrupted.train(5)
    path = _checkpoint(interrupted).save(
      os.path.join(self.get_temp_dir(), "a2c")
    )
    resumed = _task(12)
    _checkpoint(resumed).restore(path).assert_consumed()
    self.assertEqual(int(resumed.step_counter.numpy()), 5)
    resumed.resume(5)
    resumed.train(7)

    for a, b in zip(
      straight.learner.network.variables,
      resumed.learner.network.variables,
      strict=True,
    ):
      self.assertAllEqual(a, b)
    self.assertAllEqual(
      straight.environments.observations, resumed.environments.observations
    )
    self.assertEqual(
      straight.environments.finished, resumed.environments.finished
    )
    self.assertAllEqual(
      straight.checkpoint_items()["actions"],
      resumed.checkpoint_items()["actions"],
    )

  def test_resume_needs_the_whole_action_log(self):
    task = _task(4)
    with self.assertRaisesRegex(RuntimeError, "logs 0 environment steps; 15"):
      task.resume(3)

  def test_refuses_several_replicas(self):
    with self.assertRaisesRegex(
      ValueError, "Received: MirroredStrategy with 2 replicas"
    ):
      _task(1).check_strategy(testing.mirrored_strategy())
    _task(1).check_strategy(tf.distribute.get_strategy())

  def test_finish_exports_float16_weights_and_random_play(self):
    task = _task(2)
    task.resume(0)
    task.train(2)
    metrics = task.evaluate()
    extra = task.finish("ram://a2c_finish", chief=True)
    teacher = atari.load_teacher(extra["weights"], 3)
    for a, b in zip(
      task.learner.network.variables, teacher.variables, strict=True
    ):
      self.assertAllClose(a, b, rtol=1e-3, atol=1e-4)
    self.assertLen(extra["scores"]["random"], 4)
    self.assertEqual(
      metrics["teacher_mean"], np.mean(extra["scores"]["teacher"])
    )
    self.assertEqual(
      extra["weights_bytes"], tf.io.gfile.stat(extra["weights"]).length
    )


if __name__ == "__main__":
  tf.test.main()
