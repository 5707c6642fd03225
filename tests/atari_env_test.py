"""Tests for sobolev_tf.tasks.atari_env, on ALE and on the fake env."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from sobolev_tf import testing
from sobolev_tf.layers import atari
from sobolev_tf.tasks import atari_env


def _first_action(obs, seed):
  del seed
  return np.zeros(len(obs), np.int64)


class SampleActionsTest(tf.test.TestCase):
  def test_follows_the_policy(self):
    logits = tf.math.log([[0.7, 0.2, 0.1]] * 20_000)
    actions = atari_env.sample_actions(logits, [3, 4])
    frequencies = np.bincount(actions.numpy(), minlength=3) / 20_000
    # Binomial standard deviations are below 0.0033: a 5-sigma band.
    self.assertAllClose(frequencies, [0.7, 0.2, 0.1], atol=0.016)
    self.assertAllEqual(actions, atari_env.sample_actions(logits, [3, 4]))
    self.assertNotAllEqual(actions, atari_env.sample_actions(logits, [3, 5]))

  def test_is_the_same_in_a_graph(self):
    logits = tf.random.stateless_normal([64, 5], [0, 1])
    self.assertAllEqual(
      atari_env.sample_actions(logits, [2, 9]),
      tf.function(atari_env.sample_actions)(logits, tf.constant([2, 9])),
    )


class EvaluateTest(tf.test.TestCase):
  def test_counts_whole_episodes(self):
    scores = atari_env.evaluate(_first_action, testing.FakeAtariEnv(), 6)
    self.assertEqual(scores, [10.0] * 6)

  def test_does_not_favour_short_episodes(self):
    class Uneven(testing.FakeAtariEnv):
      """Environment i's episodes last and score 2 (i + 1) steps."""

      def reset(self, seed=None):
        observations, info = super().reset(seed)
        self._left = 2 * (np.arange(self.num_envs) + 1)
        return observations, info

      def step(self, actions):
        observations, rewards, done, truncated, info = super().step(actions)
        self._left[done] = 2 * (np.flatnonzero(done) + 1)
        return observations, rewards, done, truncated, info

    # Env order, not finishing order (which would give 2, 4, 2, 6).
    self.assertEqual(
      atari_env.evaluate(_first_action, Uneven(), 4), [2.0, 4.0, 6.0, 8.0]
    )
    self.assertEqual(
      atari_env.evaluate(_first_action, Uneven(), 6),
      [2.0, 4.0, 6.0, 8.0, 2.0, 4.0],
    )

  def test_play_samples_the_given_policy(self):
    env = testing.FakeAtariEnv(num_envs=4, num_actions=3, min_length=10)

    def always_first(frames):
      return tf.tile([[20.0, 0.0, 0.0]], [len(frames), 1])

    # Action 0 earns 1 per step: a sure policy scores the episode length.
    self.assertEqual(atari_env.play(always_first, env, 5, seed=2), [10.0] * 5)
    scores = atari_env.play(None, env, 40, seed=2)  # uniform: 10/3 expected
    self.assertLen(scores, 40)
    self.assertBetween(np.mean(scores), 2.3, 4.4)  # 3.5 binomial std errors
    self.assertEqual(scores, atari_env.play(None, env, 40, seed=2))


class FakeEnvTest(tf.test.TestCase):
  def test_same_seed_and_actions_same_episodes(self):
    runs = []
    for _ in range(2):
      env = testing.FakeAtariEnv(num_envs=3, min_length=2, max_length=5)
      frames, _ = env.reset(seed=4)
      steps = [env.step(np.array([0, 1, 0])) for _ in range(12)]
      runs.append((frames, steps))
    self.assertAllEqual(runs[0][0], runs[1][0])
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
      for x, y in zip(a[:4], b[:4], strict=True):
        self.assertAllEqual(x, y)
    dones = np.stack([step[2] for step in runs[0][1]])
    self.assertGreater(dones.sum(), 3)  # episodes of 2 to 5 steps ended


class AtariEnvTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.parameters(("pong", 6), ("breakout", 4), ("space_invaders", 6))
  def test_games_run_offline(self, game, num_actions):
    self.assertEqual(atari_env.num_actions(game), num_actions)
    env = atari_env.make_atari_env(game, 2, seed=0)
    observations, *_ = env.step(np.zeros(2, np.int64))
    self.assertEqual(observations.shape, (2, *atari.FRAME_SHAPE))
    self.assertEqual(observations.dtype, np.uint8)
    env.close()

  def test_same_seed_and_actions_same_frames(self):
    actions = np.random.default_rng(0).integers(0, 4, (300, 2))
    runs = []
    for _ in range(2):
      env = atari_env.make_atari_env("breakout", 2, seed=5)
      runs.append([env.step(a)[0] for a in actions])
      env.close()
    self.assertAllEqual(np.stack(runs[0]), np.stack(runs[1]))

  def test_unknown_game(self):
    with self.assertRaisesRegex(ValueError, "Received: game='Breakout'"):
      atari_env.check_game("Breakout")
    self.assertEqual(atari_env.check_game("pong"), "pong")


if __name__ == "__main__":
  tf.test.main()
