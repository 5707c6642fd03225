"""The shipped Atari teachers (`teachers/*.npz`) load and beat random play."""

import os

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from sobolev_tf.layers import atari
from sobolev_tf.tasks import atari_env

_TEACHERS = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "teachers"
)
# The shipped games and their action counts (teachers/README.md).
_GAMES = {"breakout": 4, "pong": 6, "space_invaders": 6}


class ShippedTeachersTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.parameters(*_GAMES.items())
  def test_weights_are_small_float16_arrays(self, game, num_actions):
    path = os.path.join(_TEACHERS, f"{game}.npz")
    atari.load_teacher(path, num_actions)  # names and shapes match
    self.assertLess(os.path.getsize(path), 5 * 2**20)
    with np.load(path, allow_pickle=False) as saved:  # arrays only
      for name in saved.files:
        self.assertEqual(saved[name].dtype, np.float16, name)


# Ten games of each teacher and of random play per Atari game: an experiment
# run of about a minute of both cores, kept out of `make test` (`make
# test-all` and `pytest -m slow` run it).
@pytest.mark.slow
class ShippedTeachersPlayTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.parameters(*_GAMES.items())
  def test_teacher_beats_random_play(self, game, num_actions):
    teacher = atari.load_teacher(
      os.path.join(_TEACHERS, f"{game}.npz"), num_actions
    )
    env = atari_env.make_atari_env(game, 10, seed=3)
    scores = {
      "teacher": atari_env.play(
        tf.function(teacher.policy_logits), env, 10, seed=3
      ),
      "random": atari_env.play(None, env, 10, seed=3),
    }
    env.close()
    mean = {who: np.mean(values) for who, values in scores.items()}
    # A margin of three standard errors of the difference of the means.
    margin = 3 * np.sqrt(
      sum(np.var(values, ddof=1) / len(values) for values in scores.values())
    )
    self.assertGreater(mean["teacher"] - mean["random"], margin, scores)


if __name__ == "__main__":
  tf.test.main()
