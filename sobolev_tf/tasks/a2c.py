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

`TeacherTask` trains a teacher as a task of `launch/loop.py`. Resuming is
exact: ALE's vector environment cannot save and restore its emulators'
state, but it is deterministic given its seed and the actions taken, so the
task keeps every action in its checkpoint and, on resuming, resets the
environments with the run's seed and replays them: environment steps only,
no network, about a fifth of the time the training took (an update's 5
steps of 16 games take about 18 ms of its 95 ms on the development
machine's 2 cores; replaying 400 Pong updates took 0.49 of their training
time while other jobs loaded the CPU). With the actions drawn from
stateless seeds of `(seed, step)`, a run killed and resumed ends with the
weights of one never killed.
"""

import dataclasses
import math
import os
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional
from typing import Tuple

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import checks
from sobolev_tf.layers import atari
from sobolev_tf.tasks import atari_env
from sobolev_tf.tasks import base

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


class TeacherTask(base.HostTask):
  """Trains an `AtariTeacher` with A2C, as a task of `launch/loop.py`.

  A step is one update (`config.rollout_length` steps of every
  environment). The checkpoint holds the network, the optimiser and every
  action taken, `[steps, num_envs]`, which `resume` replays. At the end,
  `evaluate` plays `eval_episodes` games with the weights rounded to
  float16, as they are exported; `finish` exports them to
  `<run_dir>/teacher_<game>.npz` (`atari.save_weights`) and adds uniformly
  random play's scores from the same starts.

  Args:
    game: the ALE game.
    num_frames: game frames to train for, rounded up to whole updates.
    config: hyperparameters.
    seed: seed of the initial weights, the environments and the actions.
    eval_episodes: games played by the teacher and by random play.
    make_env: `num_envs -> vector environment`; by default ALE's, seeded
      by `reset`.
    jit_compile: compile acting and updating with XLA.
  """

  def __init__(
    self,
    game: str,
    num_frames: int,
    config: Config = Config(),
    seed: int = 0,
    eval_episodes: int = 10,
    make_env: Optional[Callable[[int], Any]] = None,
    jit_compile: bool = False,
  ):
    checks.positive_ints(num_frames=num_frames, eval_episodes=eval_episodes)
    checks.non_negative_ints(seed=seed)
    super().__init__(
      f"{game}-s{seed}", math.ceil(num_frames / config.frames_per_update)
    )
    self.game = game
    self.config = config
    self.seed = seed
    self.eval_episodes = eval_episodes
    self._make_env = make_env or (
      lambda num_envs: atari_env.make_atari_env(game, num_envs, seed=seed)
    )
    self._jit_compile = jit_compile
    self._env = self._make_env(config.num_envs)
    self.num_actions = int(self._env.single_action_space.n)
    self.learner: Optional[A2CLearner] = None
    self.environments: Optional[Environments] = None
    self._actions: Optional[tf.Variable] = None
    self._log: List[np.ndarray] = []
    self._teacher_scores: List[float] = []

  def check_strategy(self, strategy: tf.distribute.Strategy) -> None:
    """A2C steps its environments on this host, on one replica."""
    if strategy.num_replicas_in_sync != 1:
      raise ValueError(
        "Received an invalid value for `strategy`: A2C steps its "
        "environments on this host and trains on one replica; use default "
        f"or one_device. Received: {type(strategy).__name__} with "
        f"{strategy.num_replicas_in_sync} replicas"
      )

  def hparams(self) -> Dict[str, base.HParamValue]:
    """The game, frames, seed and every A2C setting."""
    return {
      "game": self.game,
      "frames": self.num_steps * self.config.frames_per_update,
      "seed": self.seed,
      **base.config_hparams(self.config),
    }

  def build(self) -> None:
    """The learner and the (empty) action log."""
    self.learner = A2CLearner(
      self.num_actions, self.config, self._jit_compile, seed=self.seed
    )
    self._actions = tf.Variable(
      tf.zeros([0, self.config.num_envs], tf.uint8),
      shape=tf.TensorShape([None, self.config.num_envs]),
      trainable=False,
      name="actions",
    )

  def checkpoint_items(self) -> Dict[str, Any]:
    """The network, the optimiser and the action log."""
    return {
      "network": self.learner.network,
      "optimizer": self.learner.optimizer,
      "actions": self._actions,
    }

  def resume(self, start_step: int) -> None:
    """Resets the environments and replays the logged actions.

    Raises:
      RuntimeError: if the log does not hold `start_step` updates.
    """
    log = self._actions.numpy()
    expected = start_step * self.config.rollout_length
    if len(log) != expected:
      raise RuntimeError(
        f"The checkpoint of update {start_step} logs {len(log)} environment "
        f"steps; {expected} were expected."
      )
    start = time.perf_counter()
    self.environments = Environments(self._env, self.seed)
    for actions in log:
      self.environments.step(actions.astype(np.int64))
    self._log = [log]
    if len(log):
      logging.info(
        "Replayed %d environment steps in %.1fs.",
        len(log),
        time.perf_counter() - start,
      )

  def _rollout(self, update: int) -> Dict[str, np.ndarray]:
    """`rollout_length` steps of every environment with sampled actions."""
    steps = {"frames": [], "actions": [], "rewards": [], "cuts": []}
    for t in range(self.config.rollout_length):
      step_seed = [self.seed, update * self.config.rollout_length + t]
      actions, _ = self.learner.act(self.environments.observations, step_seed)
      steps["frames"].append(self.environments.observations)
      steps["actions"].append(actions)
      rewards, cuts = self.environments.step(actions)
      steps["rewards"].append(rewards)
      steps["cuts"].append(cuts)
    return {name: np.stack(values) for name, values in steps.items()}

  def _update(self) -> Dict[str, float]:
    """One rollout and one update; logs its actions."""
    update = int(self.step_counter.numpy())
    rollout = self._rollout(update)
    _, bootstrap = self.learner.act(
      self.environments.observations, [self.seed, -1 - update]
    )
    returns = n_step_returns(
      rollout["rewards"], rollout["cuts"], bootstrap, self.config.discount
    )
    self._log.append(rollout["actions"].astype(np.uint8))
    return self.learner.update(
      np.concatenate(rollout["frames"]),  # [T * N, 84, 84, 4]
      np.concatenate(rollout["actions"]).astype(np.int64),
      returns.reshape(-1),
    )

  def train(self, num_steps: int) -> Dict[str, float]:
    """Runs `num_steps` updates and logs their actions in the checkpoint.

    Returns:
      The mean of the updates' logs, the frames so far, frames per second,
      and the mean score of the last 20 finished episodes.
    """
    start = time.perf_counter()
    logs = [self._update() for _ in range(num_steps)]
    seconds = time.perf_counter() - start
    self._log = [np.concatenate(self._log)]
    self._actions.assign(self._log[0])
    result = {name: float(np.mean([e[name] for e in logs])) for name in logs[0]}
    result["frames"] = float(
      int(self.step_counter.numpy()) * self.config.frames_per_update
    )
    result["frames_per_second"] = (
      num_steps * self.config.frames_per_update / seconds
    )
    if self.environments.finished:
      result["episode_return"] = float(
        np.mean(self.environments.finished[-20:])
      )
    return result

  def _float16_teacher(self) -> atari.AtariTeacher:
    """A copy of the network with its weights rounded to float16."""
    teacher = atari.AtariTeacher(self.num_actions)
    teacher(tf.zeros([1, *atari.FRAME_SHAPE], tf.uint8))
    for source, target in zip(
      self.learner.network.variables, teacher.variables, strict=True
    ):
      target.assign(tf.cast(tf.cast(source, tf.float16), tf.float32))
    return teacher

  def _play(self, logits_fn) -> List[float]:
    """`eval_episodes` games from the evaluation starts (seed + 1)."""
    env = self._make_env(self.config.num_envs)
    scores = atari_env.play(logits_fn, env, self.eval_episodes, self.seed + 1)
    env.close()
    return scores

  def evaluate(self) -> Dict[str, float]:
    """Mean and std of the float16 teacher's scores over `eval_episodes`."""
    teacher = self._float16_teacher()
    self._teacher_scores = self._play(tf.function(teacher.policy_logits))
    return {
      "teacher_mean": float(np.mean(self._teacher_scores)),
      "teacher_std": float(np.std(self._teacher_scores)),
    }

  def finish(self, run_dir: str, chief: bool) -> Dict[str, Any]:
    """Exports the weights; adds random play's and the teacher's scores."""
    random_scores = self._play(None)
    path = os.path.join(run_dir, f"teacher_{self.game}.npz")
    extra = {
      "random_mean": float(np.mean(random_scores)),
      "random_std": float(np.std(random_scores)),
      "scores": {"teacher": self._teacher_scores, "random": random_scores},
      "weights": path,
    }
    if chief:
      atari.save_weights(self.learner.network, path)
      extra["weights_bytes"] = tf.io.gfile.stat(path).length
    return extra
