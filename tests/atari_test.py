"""Tests for the Atari networks and the A2C teacher trainer."""

import json
import os
import tempfile

from absl.testing import parameterized
import gymnasium
import numpy as np
import tensorflow as tf

from sobolev_tf import testing
from sobolev_tf.layers import atari
from sobolev_tf.tasks import a2c


class FakeEnv:
  """`num_envs` environments with the vector-env interface.

  Observations are random frames; action 0 earns reward 1, the others 0;
  every episode lasts `length` steps.
  """

  def __init__(self, num_envs=4, num_actions=3, length=10):
    self.num_envs, self.num_actions, self.length = num_envs, num_actions, length
    self.single_action_space = gymnasium.spaces.Discrete(num_actions)
    self._rng = np.random.default_rng(0)
    self._t = np.zeros(num_envs, np.int64)

  def _observe(self):
    return self._rng.integers(
      0, 255, (self.num_envs, *atari.FRAME_SHAPE), dtype=np.uint8
    )

  def reset(self, seed=None):
    self._rng = np.random.default_rng(seed)
    self._t[:] = 0
    return self._observe(), {}

  def step(self, actions):
    rewards = (np.asarray(actions) == 0).astype(np.float64)
    self._t += 1
    done = self._t >= self.length
    self._t[done] = 0
    return self._observe(), rewards, done, np.zeros_like(done), {}


class NetworkTest(tf.test.TestCase):
  def test_teacher_shapes_and_parameters(self):
    teacher = atari.AtariTeacher(6)
    frames = tf.zeros([3, *atari.FRAME_SHAPE], tf.uint8)
    logits, values = teacher(frames)
    self.assertEqual(logits.shape, [3, 6])
    self.assertEqual(values.shape, [3])
    self.assertEqual(teacher.features(frames).shape, [3, 512])
    self.assertAllClose(teacher.policy_logits(frames), logits)
    self.assertEqual(atari.num_parameters(teacher), 1_687_719)

  def test_student_shapes_and_parameters(self):
    student = atari.AtariStudent(6)
    logits = student(tf.zeros([3, *atari.FRAME_SHAPE], tf.uint8))
    self.assertEqual(logits.shape, [3, 6])
    self.assertEqual(atari.num_parameters(student), 677_686)

  def test_module_names_are_fixed(self):
    teacher = atari.AtariTeacher(4)
    teacher(tf.zeros([1, *atari.FRAME_SHAPE], tf.uint8))
    self.assertIn(
      "atari_teacher/conv_0/w:0", [v.name for v in teacher.variables]
    )


class ReturnsTest(tf.test.TestCase):
  def test_n_step_returns_against_brute_force(self):
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(5, 3)).astype(np.float32)
    dones = (rng.random((5, 3)) < 0.3).astype(np.float32)
    bootstrap = rng.normal(size=3).astype(np.float32)
    returns = a2c.n_step_returns(rewards, dones, bootstrap, 0.9)
    for n in range(3):
      for t in range(5):
        expected, scale = 0.0, 1.0
        for k in range(t, 5):
          expected += scale * rewards[k, n]
          if dones[k, n]:
            break
          scale *= 0.9
        else:
          expected += scale * bootstrap[n]
        self.assertAllClose(returns[t, n], expected, rtol=1e-5)


class A2CTest(tf.test.TestCase):
  def test_learns_the_rewarded_action_and_resumes(self):
    env = FakeEnv()
    config = a2c.Config(num_envs=4, learning_rate=1e-3, entropy_weight=0.0)
    learner = a2c.A2CLearner(3, config)
    frames = tf.constant(env.reset(seed=1)[0])

    def preference():
      logits, _ = learner.network(frames)
      return float(tf.reduce_mean(tf.nn.softmax(logits)[:, 0]))

    before = preference()
    logs = []
    saved = []
    scores = a2c.train(
      learner,
      env,
      num_frames=60 * 5 * 4 * 4,  # 60 updates
      on_log=lambda frames, entry: logs.append(entry),
      on_checkpoint=saved.append,
      log_every=10,
      checkpoint_every=30,
    )
    self.assertGreater(preference(), before + 0.2)
    self.assertLen(logs, 6)
    for entry in logs:
      for value in entry.values():
        self.assertTrue(np.isfinite(value))
    self.assertEqual(saved, [2400, 4800, 4800])
    self.assertNotEmpty(scores)  # episodes of 10 steps finished

    # Checkpoint, restore into a new learner, continue counting frames.
    path = tf.train.Checkpoint(
      network=learner.network,
      optimizer=learner.optimizer,
      frames=learner.frames,
    ).save(os.path.join(self.get_temp_dir(), "ckpt"))
    resumed = a2c.A2CLearner(3, config)
    tf.train.Checkpoint(
      network=resumed.network,
      optimizer=resumed.optimizer,
      frames=resumed.frames,
    ).restore(path).assert_consumed()
    self.assertEqual(int(resumed.frames.numpy()), 4800)
    a2c.train(resumed, env, num_frames=4800 + 400)
    self.assertEqual(int(resumed.frames.numpy()), 5200)

  def test_weights_round_trip_as_float16(self):
    learner = a2c.A2CLearner(4)
    path = os.path.join(self.get_temp_dir(), "teacher.npz")
    a2c.save_weights(learner.network, path)
    other = a2c.A2CLearner(4)
    a2c.load_weights(other.network, path)
    for a, b in zip(
      learner.network.variables, other.network.variables, strict=True
    ):
      self.assertAllClose(a, b, atol=1e-3, rtol=1e-3)
    student = atari.AtariStudent(4)
    student(tf.zeros([1, *atari.FRAME_SHAPE], tf.uint8))
    with self.assertRaisesRegex(ValueError, "do not match the network"):
      a2c.load_weights(student, path)

  def test_sample_actions_follows_the_policy(self):
    logits = tf.math.log([[0.7, 0.2, 0.1]] * 20_000)
    actions = a2c.sample_actions(logits, [3, 4])
    frequencies = np.bincount(actions.numpy(), minlength=3) / 20_000
    # Binomial standard deviations are below 0.0033: a 5-sigma band.
    self.assertAllClose(frequencies, [0.7, 0.2, 0.1], atol=0.016)
    self.assertAllEqual(actions, a2c.sample_actions(logits, [3, 4]))
    self.assertNotAllEqual(actions, a2c.sample_actions(logits, [3, 5]))

  def test_sample_actions_is_the_same_in_a_graph(self):
    logits = tf.random.stateless_normal([64, 5], [0, 1])
    self.assertAllEqual(
      a2c.sample_actions(logits, [2, 9]),
      tf.function(a2c.sample_actions)(logits, tf.constant([2, 9])),
    )

  def test_update_is_the_same_with_xla(self):
    graph = a2c.A2CLearner(4, a2c.Config(num_envs=2))
    compiled = a2c.A2CLearner(4, a2c.Config(num_envs=2), jit_compile=True)
    for a, b in zip(
      graph.network.variables, compiled.network.variables, strict=True
    ):
      b.assign(a)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (10, *atari.FRAME_SHAPE), dtype=np.uint8)
    actions = rng.integers(0, 4, 10)
    returns = rng.normal(size=10).astype(np.float32)
    for _ in range(2):
      logs = graph.update(frames, actions, returns)
      compiled_logs = compiled.update(frames, actions, returns)
      for name, value in logs.items():
        self.assertAllClose(value, compiled_logs[name], rtol=1e-4, atol=1e-6)
    for a, b in zip(
      graph.network.variables, compiled.network.variables, strict=True
    ):
      self.assertAllClose(a, b, rtol=1e-4, atol=1e-6)

  def test_first_policy_is_near_uniform(self):
    teacher = atari.AtariTeacher(6)
    frames = np.random.default_rng(0).integers(
      0, 255, (8, *atari.FRAME_SHAPE), dtype=np.uint8
    )
    probabilities = tf.nn.softmax(teacher.policy_logits(frames))
    self.assertAllClose(probabilities, tf.fill([8, 6], 1 / 6), atol=0.02)

  def test_evaluate_counts_episodes(self):
    scores = a2c.evaluate(
      lambda obs, seed: np.zeros(len(obs), np.int64), FakeEnv(), 6
    )
    self.assertEqual(scores, [10.0] * 6)

  def test_evaluate_does_not_favour_short_episodes(self):
    class Uneven(FakeEnv):
      """Environment i's episodes last and score 2 (i + 1) steps."""

      def step(self, actions):
        self._t += 1
        done = self._t >= 2 * (np.arange(self.num_envs) + 1)
        self._t[done] = 0
        rewards = np.ones(self.num_envs)
        return self._observe(), rewards, done, np.zeros_like(done), {}

    policy = lambda obs, seed: np.zeros(len(obs), np.int64)  # noqa: E731
    # Env order, not finishing order (which would give 2, 4, 2, 6).
    self.assertEqual(a2c.evaluate(policy, Uneven(), 4), [2.0, 4.0, 6.0, 8.0])
    self.assertEqual(
      a2c.evaluate(policy, Uneven(), 6), [2.0, 4.0, 6.0, 8.0, 2.0, 4.0]
    )


class PlayTest(tf.test.TestCase):
  def test_play_samples_the_given_policy(self):
    env = FakeEnv(num_envs=4, num_actions=3, length=10)

    def always_first(frames):
      return tf.tile([[20.0, 0.0, 0.0]], [len(frames), 1])

    # Action 0 earns 1 per step: a sure policy scores the episode length.
    self.assertEqual(a2c.play(always_first, env, 5, seed=2), [10.0] * 5)
    scores = a2c.play(None, env, 40, seed=2)  # uniform: 10/3 expected
    self.assertLen(scores, 40)
    self.assertBetween(np.mean(scores), 2.3, 4.4)  # 3.5 binomial std errors
    self.assertEqual(scores, a2c.play(None, env, 40, seed=2))

  def test_load_teacher_reads_saved_weights(self):
    learner = a2c.A2CLearner(5)
    path = os.path.join(self.get_temp_dir(), "teacher.npz")
    a2c.save_weights(learner.network, path)
    teacher = a2c.load_teacher(path, 5)
    frames = tf.zeros([2, *atari.FRAME_SHAPE], tf.uint8)
    self.assertAllClose(
      teacher.policy_logits(frames),
      learner.network.policy_logits(frames),
      atol=1e-3,
    )
    with self.assertRaisesRegex(ValueError, "Shape mismatch"):
      a2c.load_teacher(path, 4)


class TrainTeacherLauncherTest(tf.test.TestCase):
  def _launch(self, workdir, frames):
    return testing.run_launcher(
      "launch.train_teacher",
      [
        f"--workdir={workdir}",
        "--game=breakout",
        f"--frames={frames}",
        "--num_envs=2",
        "--eval_episodes=1",
        "--log_every=2",
        "--checkpoint_every=2",
      ],
    )

  def test_trains_exports_evaluates_and_resumes(self):
    workdir = tempfile.mkdtemp(dir=self.get_temp_dir())
    self._launch(workdir, 160)  # 4 updates of 2 envs × 5 steps × 4 frames
    with open(os.path.join(workdir, "evaluation.json")) as f:
      summary = json.load(f)
    self.assertEqual(summary["frames"], 160)
    self.assertLen(summary["scores"]["teacher"], 1)
    self.assertLen(summary["scores"]["random"], 1)
    self.assertTrue(tf.io.gfile.glob(os.path.join(workdir, "tensorboard", "*")))
    a2c.load_teacher(os.path.join(workdir, "teacher_breakout.npz"), 4)

    output = self._launch(workdir, 320)
    self.assertIn("Resumed from", output)
    self.assertIn("at 160 frames", output)
    with open(os.path.join(workdir, "evaluation.json")) as f:
      self.assertEqual(json.load(f)["frames"], 320)


class AtariEnvTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.parameters("pong", "breakout", "space_invaders")
  def test_games_run_offline(self, game):
    env = a2c.make_atari_env(game, 2, seed=0)
    observations, *_ = env.step(np.zeros(2, np.int64))
    self.assertEqual(observations.shape, (2, *atari.FRAME_SHAPE))
    self.assertEqual(observations.dtype, np.uint8)
    env.close()


if __name__ == "__main__":
  tf.test.main()
