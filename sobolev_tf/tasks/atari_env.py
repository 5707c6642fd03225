"""Atari environments and playing policies in them (paper Sec. 4.2).

* `make_atari_env`: `ale_py`'s vector environment with the standard
  preprocessing (84×84 grayscale, 4 stacked frames, frame skip 4 with
  max-pooling, up to 30 no-op starts, fire on reset), channels last.
* `num_actions`: the size of a game's action set, checked before anything
  trains.
* `sample_actions`: actions drawn from logits with a stateless seed.
* `evaluate` and `play`: game scores of a policy, by environment.

Any object with the vector environment's `reset`/`step` interface and
`num_envs`, `single_action_space` works here; the tests use
`sobolev_tf.testing.FakeAtariEnv`. The same seed and actions give the same
frames: ALE's emulator is deterministic, and its no-op starts draw from
generators seeded by `reset`.
"""

from typing import Any
from typing import Callable
from typing import List
from typing import Optional

import numpy as np
import tensorflow as tf


class ChannelsLast:
  """A vector env whose `[N, 4, 84, 84]` frame stacks become `[N, 84, 84, 4]`.

  ALE's vector env stacks frames first; Sonnet's convolutions want channels
  last.
  """

  def __init__(self, env):
    self.env = env
    self.single_action_space = env.single_action_space
    self.num_envs = env.num_envs

  def reset(self, seed=None):
    """Resets every environment; returns `(observations, info)`."""
    observations, info = self.env.reset(seed=seed)
    return np.transpose(observations, (0, 2, 3, 1)), info

  def step(self, actions):
    """Steps every environment; observations channels-last."""
    observations, *rest = self.env.step(actions)
    return (np.transpose(observations, (0, 2, 3, 1)), *rest)

  def close(self):
    """Closes the environments."""
    self.env.close()


def check_game(game: str) -> str:
  """Returns `game` if ALE has its ROM.

  Raises:
    ValueError: naming the game, if ALE has no ROM of that name.
  """
  from ale_py import roms  # imported here: the fake env needs no ALE

  if game not in roms.get_all_rom_ids():
    raise ValueError(
      "Received an invalid value for `game`, expected an ALE game such as "
      "pong, breakout or space_invaders (snake_case). Received: "
      f"game={game!r}"
    )
  return game


def num_actions(game: str) -> int:
  """The size of the minimal action set of `game` (checked by `check_game`)."""
  env = make_atari_env(check_game(game), 1)
  count = int(env.single_action_space.n)
  env.close()
  return count


def make_atari_env(game: str, num_envs: int, seed: int = 0, **kwargs):
  """`num_envs` Atari games with the standard preprocessing, seeded.

  Args:
    game: ALE name, e.g. `"pong"`, `"breakout"`, `"space_invaders"`.
    num_envs: number of environments.
    seed: seed of the no-op starts.
    **kwargs: passed to `AtariVectorEnv`.

  Returns:
    The vector environment; observations are uint8 `[N, 84, 84, 4]`.
    Episodes restart by themselves (`autoreset_mode="SameStep"`): the
    observation returned with a finished episode's last reward is the
    first of the next episode.
  """
  from ale_py import vector_env  # imported here: the fake env needs no ALE

  env = ChannelsLast(
    vector_env.AtariVectorEnv(
      game,
      num_envs,
      reward_clipping=False,
      autoreset_mode="SameStep",
      **kwargs,
    )
  )
  env.reset(seed=seed)
  return env


def sample_actions(logits, seed) -> tf.Tensor:
  """Actions `[N]` (int64) drawn from the policies `softmax(logits)`, `[N, A]`.

  Gumbel-max sampling from a stateless seed `[2]`: the same seed gives the
  same actions, eagerly and in a `tf.function` (and it compiles with XLA,
  which has no kernel for `tf.random.stateless_categorical`, though with
  another random stream).
  """
  logits = tf.convert_to_tensor(logits, tf.float32)
  uniform = tf.random.stateless_uniform(
    tf.shape(logits),
    tf.cast(seed, tf.int64),
    minval=1e-20,
    maxval=1.0,
    alg="philox",
  )
  return tf.argmax(logits - tf.math.log(-tf.math.log(uniform)), -1)


def evaluate(
  policy: Callable[[np.ndarray, Any], np.ndarray],
  env,
  num_episodes: int,
  seed: int = 0,
) -> List[float]:
  """Game scores of `num_episodes` episodes played by `policy`.

  Every environment plays the same number of whole episodes,
  `ceil(num_episodes / env.num_envs)`, and the scores are taken by
  environment index, not by finishing order: taking the first episodes to
  finish would favour short, usually low-scoring, games.

  Args:
    policy: `(observations, seed) -> actions`.
    env: vector environment.
    num_episodes: episodes to score.
    seed: seed of the environments and of the policy's sampling.

  Returns:
    The scores: every environment's first episode, in environment order,
    then every environment's second, and so on, `num_episodes` in all.
  """
  observations, _ = env.reset(seed=seed)
  num_envs = len(observations)
  per_env = -(-num_episodes // num_envs)
  running = np.zeros(num_envs)
  scores: List[List[float]] = [[] for _ in range(num_envs)]
  step = 0
  while min(len(own) for own in scores) < per_env:
    actions = policy(observations, [seed, step])
    observations, reward, terminated, truncated, _ = env.step(actions)
    running += reward
    for index in np.flatnonzero(np.logical_or(terminated, truncated)):
      if len(scores[index]) < per_env:
        scores[index].append(float(running[index]))
      running[index] = 0.0
    step += 1
  ordered = [own[k] for k in range(per_env) for own in scores]
  return ordered[:num_episodes]


def play(
  logits_fn: Optional[Callable[[np.ndarray], Any]],
  env,
  num_episodes: int,
  seed: int = 0,
) -> List[float]:
  """Scores of `num_episodes` games sampled from `softmax(logits_fn(frames))`.

  Args:
    logits_fn: frames `[N, 84, 84, 4]` to action logits `[N, A]`; `None`
      plays uniformly at random over `env.single_action_space`.
    env: vector environment.
    num_episodes: episodes to finish.
    seed: seed of the environments and of the action sampling.

  Returns:
    The episodes' scores in `evaluate`'s order: by environment index, not
    by the order the games finished.
  """

  def policy(frames, step_seed):
    if logits_fn is None:
      logits = tf.zeros([len(frames), env.single_action_space.n])
    else:
      logits = logits_fn(frames)
    return sample_actions(logits, step_seed).numpy()

  return evaluate(policy, env, num_episodes, seed)
