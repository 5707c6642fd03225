"""Advantage actor-critic (A2C) for the Atari teachers (paper Sec. 4.2).

A2C is the synchronous form of A3C (Mnih et al., 2016): `num_envs`
environments step together, `rollout_length` steps are collected, and one
update minimises

    -log π(a|s) A + value_weight (R - V(s))² / 2 - entropy_weight H(π(s))

with n-step returns R bootstrapped from V at the rollout's end and cut at
episode ends and at lost lives (as Baselines' `EpisodicLifeEnv` does;
scores still count whole games), advantages A = R - V(s) (not trained
through), RMSProp and global-norm clipping, as in the A3C paper and OpenAI
Baselines' A2C.

The environments are `ale_py.vector_env.AtariVectorEnv` (84×84 grayscale,
4 stacked frames, frame skip 4 with max-pooling, up to 30 no-op starts,
fire on reset) or anything with the same `reset`/`step` interface (the
tests use a small fake). Rewards are clipped to [-1, 1] for learning; the
episode returns logged and evaluated are the game's own scores.
"""

import dataclasses
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from sobolev_tf.layers import atari


@dataclasses.dataclass(frozen=True)
class Config:
  """A2C hyperparameters (the A3C paper's and Baselines' defaults).

  Attributes:
    num_envs: environments stepped together.
    rollout_length: steps per environment per update.
    discount: γ.
    learning_rate: RMSProp step size.
    value_weight: weight of the value loss.
    entropy_weight: weight of the entropy bonus.
    max_grad_norm: global-norm clipping of the gradient.
  """

  num_envs: int = 16
  rollout_length: int = 5
  discount: float = 0.99
  learning_rate: float = 7e-4
  value_weight: float = 0.5
  entropy_weight: float = 0.01
  max_grad_norm: float = 0.5


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


def make_atari_env(game: str, num_envs: int, seed: int = 0, **kwargs):
  """`num_envs` Atari games with the standard preprocessing, seeded.

  Args:
    game: ALE name, e.g. `"pong"`, `"breakout"`, `"space_invaders"`.
    num_envs: number of environments.
    seed: seed of the no-op starts and sticky randomness.
    **kwargs: passed to `AtariVectorEnv`.

  Returns:
    The vector environment; observations are uint8 `[N, 84, 84, 4]`.
  """
  from ale_py import vector_env  # imported here: tests use a fake env

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


def n_step_returns(
  rewards: np.ndarray, dones: np.ndarray, bootstrap: np.ndarray, discount: float
) -> np.ndarray:
  """Discounted returns `[T, N]` of a rollout, cut at episode ends.

  Args:
    rewards: `[T, N]`.
    dones: `[T, N]`, 1 where the step ended an episode.
    bootstrap: `[N]`, the value of the state after the last step.
    discount: γ.

  Returns:
    `R_t = r_t + γ (1 - done_t) R_{t+1}`, with `R_T = bootstrap`.
  """
  returns = np.zeros_like(rewards, dtype=np.float32)
  running = bootstrap.astype(np.float32)
  for t in reversed(range(len(rewards))):
    running = rewards[t] + discount * (1.0 - dones[t]) * running
    returns[t] = running
  return returns


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


class A2CLearner:
  """An `AtariTeacher` and its optimiser; `update` is one A2C step.

  Args:
    num_actions: size of the action set.
    config: hyperparameters.
    jit_compile: compile acting and updating with XLA (measured no faster
      on a 2-core CPU, where the convolutions dominate:
      `benchmarks/a2c_benchmark.py`).
  """

  def __init__(
    self, num_actions: int, config: Config = Config(), jit_compile: bool = False
  ):
    self.config = config
    self.network = atari.AtariTeacher(num_actions)
    self.network(tf.zeros([1, *atari.FRAME_SHAPE], tf.uint8))
    # Keras adds epsilon inside the square root; Baselines' TF1 RMSProp did
    # too, with 1e-5, which for this network's per-weight gradients (~1e-5)
    # turns RMSProp into plain SGD with a small step (a first Breakout run
    # did not learn in 4.5M frames). 1e-10 inside the root is PyTorch's (and
    # Kostrikov's A2C's) 1e-5 outside it.
    self.optimizer = keras.optimizers.RMSprop(
      config.learning_rate,
      rho=0.99,
      epsilon=1e-10,
      global_clipnorm=config.max_grad_norm,
    )
    self.optimizer.build(self.network.trainable_variables)
    self.frames = tf.Variable(0, dtype=tf.int64, name="frames")
    self._act = tf.function(self._act_fn, jit_compile=jit_compile)
    self._update = tf.function(self._update_fn, jit_compile=jit_compile)

  def _act_fn(self, frames: tf.Tensor, seed: tf.Tensor):
    logits, values = self.network(frames)
    return sample_actions(logits, seed), values

  def act(self, frames: np.ndarray, seed) -> tuple:
    """Sampled actions `[N]` and state values `[N]` (NumPy)."""
    actions, values = self._act(frames, tf.constant(seed, tf.int64))
    return actions.numpy(), values.numpy()

  def _update_fn(self, frames, actions, returns):
    with tf.GradientTape() as tape:
      logits, values = self.network(frames)
      log_policy = tf.nn.log_softmax(logits)
      chosen = tf.gather(log_policy, actions, batch_dims=1)
      advantages = tf.stop_gradient(returns - values)
      policy_loss = -tf.reduce_mean(chosen * advantages)
      value_loss = 0.5 * tf.reduce_mean(tf.square(returns - values))
      entropy = -tf.reduce_mean(
        tf.reduce_sum(tf.exp(log_policy) * log_policy, -1)
      )
      loss = (
        policy_loss
        + self.config.value_weight * value_loss
        - self.config.entropy_weight * entropy
      )
    variables = self.network.trainable_variables
    gradients = tape.gradient(loss, variables)
    self.optimizer.apply(gradients, variables)
    return {
      "loss": loss,
      "policy_loss": policy_loss,
      "value_loss": value_loss,
      "entropy": entropy,
      "gradient_norm": tf.linalg.global_norm(gradients),
    }

  def update(self, frames, actions, returns) -> Dict[str, float]:
    """One A2C step on a flattened rollout; returns its scalar logs."""
    logs = self._update(
      tf.constant(frames), tf.constant(actions), tf.constant(returns)
    )
    return {name: float(value) for name, value in logs.items()}


def train(
  learner: A2CLearner,
  env,
  num_frames: int,
  seed: int = 0,
  frames_per_step: int = 4,
  on_log: Optional[Callable[[int, Dict[str, float]], None]] = None,
  on_checkpoint: Optional[Callable[[int], None]] = None,
  log_every: int = 100,
  checkpoint_every: int = 1000,
) -> List[float]:
  """Trains `learner` on `env` until `learner.frames` reaches `num_frames`.

  Args:
    learner: the learner (its `frames` counter says where to resume).
    env: vector environment, already reset.
    num_frames: game frames to train for (steps × frame skip × envs).
    seed: seed of the action sampling, folded with the update number.
    frames_per_step: game frames per environment step (the frame skip).
    on_log: called with `(frames, logs)` every `log_every` updates.
    on_checkpoint: called with `frames` every `checkpoint_every` updates
      and at the end.
    log_every: updates between logs.
    checkpoint_every: updates between checkpoints.

  Returns:
    The game score of every episode finished during training.
  """
  config = learner.config
  num_envs = config.num_envs
  observations, info = env.reset(seed=seed)
  lives = np.asarray(info["lives"]) if "lives" in info else None
  running_returns = np.zeros(num_envs)
  finished: List[float] = []
  update = 0
  start = time.perf_counter()
  start_frames = int(learner.frames.numpy())
  while int(learner.frames.numpy()) < num_frames:
    frames, actions, rewards, dones = [], [], [], []
    for t in range(config.rollout_length):
      step_seed = [seed, start_frames + update * config.rollout_length + t]
      action, _ = learner.act(observations, step_seed)
      frames.append(observations)
      actions.append(action)
      observations, reward, terminated, truncated, info = env.step(action)
      done = np.logical_or(terminated, truncated)
      running_returns += reward
      for index in np.flatnonzero(done):
        finished.append(float(running_returns[index]))
        running_returns[index] = 0.0
      # A lost life ends the return, not the game (Baselines' EpisodicLife):
      # the value of the state after it is not bootstrapped into the return.
      lost_life = np.zeros_like(done)
      if "lives" in info:
        if lives is not None:
          lost_life = np.asarray(info["lives"]) < lives
        lives = np.asarray(info["lives"])
      rewards.append(np.sign(reward).astype(np.float32))
      dones.append(np.logical_or(done, lost_life).astype(np.float32))
    _, bootstrap = learner.act(observations, [seed, -1 - update])
    returns = n_step_returns(
      np.stack(rewards), np.stack(dones), bootstrap, config.discount
    )
    logs = learner.update(
      np.concatenate(frames),
      np.concatenate(actions).astype(np.int64),
      returns.reshape(-1),
    )
    learner.frames.assign_add(
      config.rollout_length * num_envs * frames_per_step
    )
    update += 1
    frames_now = int(learner.frames.numpy())
    if on_log is not None and update % log_every == 0:
      elapsed = time.perf_counter() - start
      logs["frames_per_second"] = (frames_now - start_frames) / elapsed
      if finished:
        logs["episode_return"] = float(np.mean(finished[-20:]))
      on_log(frames_now, logs)
    if on_checkpoint is not None and update % checkpoint_every == 0:
      on_checkpoint(frames_now)
  if on_checkpoint is not None:
    on_checkpoint(int(learner.frames.numpy()))
  return finished


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
    The episodes' scores, in the order they finished.
  """

  def policy(frames, step_seed):
    if logits_fn is None:
      logits = tf.zeros([len(frames), env.single_action_space.n])
    else:
      logits = logits_fn(frames)
    return sample_actions(logits, step_seed).numpy()

  return evaluate(policy, env, num_episodes, seed)


def save_weights(network, path: str) -> None:
  """Writes `network`'s variables to `path` as float16 `.npz` (no pickles)."""
  np.savez_compressed(
    path,
    **{v.name: v.numpy().astype(np.float16) for v in network.variables},
  )


def load_weights(network, path: str) -> None:
  """Assigns the variables saved by `save_weights` (weights only).

  Raises:
    ValueError: if the file's names or shapes differ from `network`'s.
  """
  with np.load(path, allow_pickle=False) as saved:
    names = {v.name for v in network.variables}
    if set(saved.files) != names:
      raise ValueError(
        f"The weights in {path} do not match the network: missing "
        f"{sorted(names - set(saved.files))}, unexpected "
        f"{sorted(set(saved.files) - names)}."
      )
    for variable in network.variables:
      value = saved[variable.name]
      if value.shape != tuple(variable.shape):
        raise ValueError(
          f"Shape mismatch for {variable.name} in {path}: saved "
          f"{value.shape}, expected {tuple(variable.shape)}."
        )
      variable.assign(value.astype(variable.dtype.as_numpy_dtype))


def load_teacher(path: str, num_actions: int) -> atari.AtariTeacher:
  """An `AtariTeacher` with the weights `save_weights` wrote to `path`.

  Reads arrays only (`allow_pickle=False`): loading runs no code.
  """
  teacher = atari.AtariTeacher(num_actions)
  teacher(tf.zeros([1, *atari.FRAME_SHAPE], tf.uint8))
  load_weights(teacher, path)
  return teacher
