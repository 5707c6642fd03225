"""Tests for the A2C teacher trainer, on the fake Atari environment."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from sobolev_tf import testing
from sobolev_tf.layers import atari
from sobolev_tf.tasks import a2c

testing.configure_logical_cpus(2)


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


class ConfigTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.parameters(
    dict(num_envs=0),
    dict(rollout_length=-1),
    dict(discount=1.5),
    dict(learning_rate=0.0),
    dict(max_grad_norm=-1.0),
  )
  def test_invalid(self, **kwargs):
    ((name, value),) = kwargs.items()
    with self.assertRaisesRegex(ValueError, f"Received: {name}={value}"):
      a2c.Config(**kwargs)

  def test_frames_per_update(self):
    self.assertEqual(a2c.Config().frames_per_update, 5 * 16 * 4)


class EnvironmentsTest(tf.test.TestCase):
  def test_returns_are_cut_at_episode_ends_and_lost_lives(self):
    class WithLives(testing.FakeAtariEnv):
      """Two lives per episode: the second is lost after 2 steps."""

      def reset(self, seed=None):
        observations, _ = super().reset(seed)
        self._steps = np.zeros(self.num_envs, int)
        return observations, {"lives": np.full(self.num_envs, 2)}

      def step(self, actions):
        observations, rewards, done, truncated, _ = super().step(actions)
        self._steps = np.where(done, 0, self._steps + 1)
        lives = np.where(self._steps >= 2, 1, 2)
        return observations, 3 * rewards, done, truncated, {"lives": lives}

    environments = a2c.Environments(WithLives(2, min_length=4), seed=0)
    cuts, clipped = [], []
    for _ in range(8):
      rewards, cut = environments.step(np.array([0, 1]))
      clipped.append(rewards)
      cuts.append(cut)
    # Steps 2 (a life lost) and 4 (the episode's end) of every 4 cut.
    self.assertAllEqual(np.stack(cuts)[:, 0], [0, 1, 0, 1, 0, 1, 0, 1])
    self.assertAllEqual(np.stack(clipped), [[1.0, 0.0]] * 8)
    self.assertEqual(environments.finished, [12.0, 0.0, 12.0, 0.0])


class LearnerTest(tf.test.TestCase):
  def test_update_is_the_same_with_xla(self):
    graph = a2c.A2CLearner(4, a2c.Config(num_envs=2))
    compiled = a2c.A2CLearner(4, a2c.Config(num_envs=2), jit_compile=True)
    for a, b in zip(
      graph.network.variables, compiled.network.variables, strict=True
    ):
      self.assertAllEqual(a, b)  # the same seed
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


if __name__ == "__main__":
  tf.test.main()
