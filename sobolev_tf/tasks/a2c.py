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

The environments come from `atari_env.make_atari_env` (or anything with the
same interface; the tests use `sobolev_tf.testing.FakeAtariEnv`). Rewards
are clipped to [-1, 1] for learning; the episode returns logged and
evaluated are the game's own scores.

`a2c_task.TeacherTask` trains a teacher as a task of `launch/loop.py`.
"""

import dataclasses
from typing import Dict
from typing import List
from typing import Tuple

import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import checks
from sobolev_tf.layers import atari
from sobolev_tf.tasks import atari_env

# `benchmarks/a2c_benchmark.py` makes its environments through this module.
make_atari_env = atari_env.make_atari_env

FRAMES_PER_STEP = 4  # ALE's frame skip


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

  def __post_init__(self):
    checks.positive_ints(
      num_envs=self.num_envs, rollout_length=self.rollout_length
    )
    if not 0 <= self.discount <= 1:
      raise ValueError(
        "Received an invalid value for `discount`, expected a number in "
        f"[0, 1]. Received: discount={self.discount}"
      )
    checks.positive_numbers(
      learning_rate=self.learning_rate, max_grad_norm=self.max_grad_norm
    )
    checks.non_negative_numbers(
      value_weight=self.value_weight, entropy_weight=self.entropy_weight
    )

  @property
  def frames_per_update(self) -> int:
    """Game frames one update consumes: steps × environments × frame skip."""
    return self.rollout_length * self.num_envs * FRAMES_PER_STEP


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


class A2CLearner:
  """An `AtariTeacher` and its optimiser; `update` is one A2C step.

  Args:
    num_actions: size of the action set.
    config: hyperparameters.
    jit_compile: compile acting and updating with XLA (measured no faster
      on a 2-core CPU, where the convolutions dominate:
      `benchmarks/a2c_benchmark.py`).
    seed: seed of the network's initial weights.
  """

  def __init__(
    self,
    num_actions: int,
    config: Config = Config(),
    jit_compile: bool = False,
    seed: int = 0,
  ):
    self.config = config
    self.network = atari.AtariTeacher(num_actions, seed=seed)
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
    self._act = tf.function(self._act_fn, jit_compile=jit_compile)
    self._update = tf.function(self._update_fn, jit_compile=jit_compile)

  def _act_fn(self, frames: tf.Tensor, seed: tf.Tensor):
    logits, values = self.network(frames)
    return atari_env.sample_actions(logits, seed), values

  def act(self, frames: np.ndarray, seed) -> tuple:
    """Sampled actions `[N]` and state values `[N]` (NumPy)."""
    actions, values = self._act(frames, tf.constant(seed, tf.int64))
    return actions.numpy(), values.numpy()

  def _losses(self, frames, actions, returns) -> Dict[str, tf.Tensor]:
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
    return {
      "loss": loss,
      "policy_loss": policy_loss,
      "value_loss": value_loss,
      "entropy": entropy,
    }

  def _update_fn(self, frames, actions, returns):
    with tf.GradientTape() as tape:
      logs = self._losses(frames, actions, returns)
    variables = self.network.trainable_variables
    gradients = tape.gradient(logs["loss"], variables)
    self.optimizer.apply(gradients, variables)
    return {**logs, "gradient_norm": tf.linalg.global_norm(gradients)}

  def update(self, frames, actions, returns) -> Dict[str, float]:
    """One A2C step on a flattened rollout; returns its scalar logs."""
    logs = self._update(
      tf.constant(frames), tf.constant(actions), tf.constant(returns)
    )
    return {name: float(value) for name, value in logs.items()}


class Environments:
  """A vector environment and what A2C tracks about it.

  It keeps the current observations, the running game score of every
  environment, the scores of the finished episodes and the lives left;
  `step` turns one step into clipped rewards and the places where returns
  end (an episode's end or a lost life).

  Args:
    env: the vector environment.
    seed: seed of its `reset`.
  """

  def __init__(self, env, seed: int):
    self.env = env
    self.observations, info = env.reset(seed=seed)
    self._lives = np.asarray(info["lives"]) if "lives" in info else None
    self._scores = np.zeros(env.num_envs)
    self.finished: List[float] = []

  def step(self, actions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Steps every environment with `actions` `[N]`.

    Returns:
      Rewards clipped to [-1, 1] `[N]`, and 1 where the return is cut
      `[N]`: the episode ended, or (Baselines' `EpisodicLifeEnv`) a life
      was lost, so the next state's value is not bootstrapped into it.
    """
    self.observations, reward, terminated, truncated, info = self.env.step(
      actions
    )
    done = np.logical_or(terminated, truncated)
    self._scores += reward
    for index in np.flatnonzero(done):
      self.finished.append(float(self._scores[index]))
      self._scores[index] = 0.0
    lost_life = np.zeros_like(done)
    if "lives" in info:
      if self._lives is not None:
        lost_life = np.asarray(info["lives"]) < self._lives
      self._lives = np.asarray(info["lives"])
    cut = np.logical_or(done, lost_life).astype(np.float32)
    return np.sign(reward).astype(np.float32), cut
