"""Trains an Atari teacher with A2C (`a2c`), as a task of `launch/loop.py`.

Resuming is exact: ALE's vector environment cannot save and restore its
emulators' state, but it is deterministic given its seed and the actions
taken, so the task keeps every action in its checkpoint and, on resuming,
resets the environments with the run's seed and replays them: environment
steps only, no network, about a fifth of the time the training took (an
update's 5 steps of 16 games take about 18 ms of its 95 ms on the
development machine's 2 cores; replaying 400 Pong updates took 0.49 of
their training time while other jobs loaded the CPU). With the actions
drawn from stateless seeds of `(seed, step)`, a run killed and resumed ends
with the weights of one never killed.
"""

import math
import os
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional

from absl import logging
import numpy as np
import tensorflow as tf

from sobolev_tf import checks
from sobolev_tf.layers import atari
from sobolev_tf.tasks import a2c
from sobolev_tf.tasks import atari_env
from sobolev_tf.tasks import base

_DEFAULT_CONFIG = a2c.Config()


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
    config: a2c.Config = _DEFAULT_CONFIG,
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
    self.learner: Optional[a2c.A2CLearner] = None
    self.environments: Optional[a2c.Environments] = None
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
    self.learner = a2c.A2CLearner(
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
    self.environments = a2c.Environments(self._env, self.seed)
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
    returns = a2c.n_step_returns(
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
