"""Policy distillation with Sobolev training (paper Sec. 4.2, Figure 4).

* `record`: follows a teacher (sampling from its policy) in a vector
  environment and keeps every visited state (uint8 frame stacks), the
  teacher's action logits there, and the episode each state belongs to.
* `split_by_episode`: a train/test split in which no episode has states in
  both parts.
* `Distiller`: trains an `AtariStudent` on recorded states with the KL
  divergence between the teacher's and the student's policies plus, for
  Sobolev distillation, the stochastic first-order term on
  `∇_s <log π(s), v>` with `v` uniform on the unit sphere over actions. The
  teacher's projected gradient is computed on the fly with the same `v`
  through the core's teacher mode (`SobolevObjective(teacher=...)`), never
  a full Jacobian. Regular distillation is the same code with the
  derivative weight at 0.
* `policy_metrics`: test action prediction error (the student's most
  probable action differs from the teacher's) and the mean KL divergence.

`distillation_task.DistillationTask` is one student of the Figure 4 sweep.
"""

import dataclasses
from typing import Callable
from typing import Dict
from typing import Tuple

import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import checks
from sobolev_tf import config as config_lib
from sobolev_tf import distribute_utils
from sobolev_tf import finite_updates
from sobolev_tf import objective as objective_lib
from sobolev_tf import training
from sobolev_tf.layers import atari
from sobolev_tf.tasks import atari_env

METHODS = ("regular", "sobolev")


def record(
  teacher_logits: Callable[[np.ndarray], np.ndarray],
  env,
  num_states: int,
  seed: int = 0,
) -> Dict[str, np.ndarray]:
  """Records `num_states` states visited by the teacher's policy.

  Args:
    teacher_logits: frames `[N, 84, 84, 4]` uint8 to action logits `[N, A]`.
    env: vector environment (see `atari_env.make_atari_env`).
    num_states: states to keep (rounded up to a multiple of the number of
      environments, then cut).
    seed: seed of the environments and of the action sampling.

  Returns:
    `{"frames": uint8 [S, 84, 84, 4], "logits": float32 [S, A],
    "episodes": int64 [S]}`; episode ids are unique across environments.
  """
  observations, _ = env.reset(seed=seed)
  num_envs = len(observations)
  episode = np.arange(num_envs, dtype=np.int64)
  next_episode = num_envs
  frames, logits, episodes = [], [], []
  while len(frames) * num_envs < num_states:
    step_logits = np.asarray(teacher_logits(observations), np.float32)
    frames.append(observations)
    logits.append(step_logits)
    episodes.append(episode.copy())
    actions = atari_env.sample_actions(step_logits, [seed, len(frames)])
    observations, _, terminated, truncated, _ = env.step(actions.numpy())
    for index in np.flatnonzero(np.logical_or(terminated, truncated)):
      episode[index] = next_episode
      next_episode += 1
  return {
    "frames": np.concatenate(frames)[:num_states],
    "logits": np.concatenate(logits)[:num_states],
    "episodes": np.concatenate(episodes)[:num_states],
  }


def split_by_episode(
  episodes: np.ndarray, test_fraction: float, seed: int = 0
) -> Tuple[np.ndarray, np.ndarray]:
  """Indices of the train and test states; each episode falls in one part.

  Args:
    episodes: episode id of every state, `[S]`.
    test_fraction: share of the episodes that go to the test part.
    seed: seed of the choice of test episodes.

  Returns:
    `(train_indices, test_indices)`, sorted.

  Raises:
    ValueError: if `test_fraction` is not in (0, 1) or there are fewer
      than two episodes.
  """
  checks.fraction("test_fraction", test_fraction)
  unique = np.unique(episodes)
  if len(unique) < 2:
    raise ValueError(
      "Expected states from at least two episodes to split by episode. "
      f"Received: {len(unique)} episode(s)"
    )
  rng = np.random.default_rng(seed)
  num_test = min(len(unique) - 1, max(1, round(test_fraction * len(unique))))
  test_episodes = rng.choice(unique, num_test, replace=False)
  is_test = np.isin(episodes, test_episodes)
  return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _kl_from_log_probs(log_teacher: tf.Tensor, log_student: tf.Tensor):
  """KL(teacher ‖ student) per example, from log-probabilities `[B, A]`."""
  return tf.reduce_sum(tf.exp(log_teacher) * (log_teacher - log_student), -1)


@dataclasses.dataclass(frozen=True)
class Config:
  """Distillation settings.

  Attributes:
    num_actions: size of the action set.
    derivative_weight: weight of the Sobolev term; 0 is regular
      distillation.
    learning_rate: Adam step size.
    balance: the objective's balance between the KL and the Sobolev term
      (`SobolevConfig.balance`); with `target_scale` the term is relative to
      the teacher's gradients, so weight 1 suits any teacher and game.
    balance_floor: `SobolevConfig.balance_floor`.
  """

  num_actions: int
  derivative_weight: float = 1.0
  learning_rate: float = 1e-3
  balance: str = "target_scale"
  balance_floor: float = config_lib.SobolevConfig.balance_floor

  def __post_init__(self):
    checks.positive_ints(num_actions=self.num_actions)
    checks.non_negative_numbers(derivative_weight=self.derivative_weight)
    checks.positive_numbers(learning_rate=self.learning_rate)


class Distiller:
  """A student, its optimiser, and the distillation objective.

  Build it under a strategy's scope to train on several replicas:
  `train_step` runs in a replica context (or without a strategy), each
  replica drawing its own directions.

  Args:
    config: settings.
    teacher: the teacher network; its `policy_logits` is the target.
    seed: seed of the student's initial weights and of the directions.
  """

  def __init__(self, config: Config, teacher: atari.AtariTeacher, seed=0):
    checks.non_negative_ints(seed=seed)
    self.config = config
    self.teacher = teacher
    self.student = atari.AtariStudent(config.num_actions, seed=seed)
    self.student(tf.zeros([1, *atari.FRAME_SHAPE], tf.uint8))
    self.optimizer = keras.optimizers.Adam(config.learning_rate)
    self.optimizer.build(self.student.trainable_variables)
    self.objective = objective_lib.SobolevObjective(
      order=1,
      mode="stochastic",
      output_transform="log_softmax",
      losses=[objective_lib.FunctionLoss(_kl_from_log_probs), "mse"],
      loss_weights=[1.0, config.derivative_weight],
      balance=config.balance,
      balance_floor=config.balance_floor,
    )
    self.guard = finite_updates.StepGuard()
    self._seed = seed

  def train_step(self, frames: tf.Tensor) -> Dict[str, tf.Tensor]:
    """One Adam step on a batch of recorded states; returns the terms.

    The step is `training.sobolev_train_step`'s: a non-finite one is not
    applied, and `guard` says why.
    """
    # Derivatives are taken with respect to the frames as floats (0 to 255).
    step = training.sobolev_train_step(
      self.objective,
      self.student,
      tf.cast(frames, tf.float32),
      teacher=self.teacher.policy_logits,
      seed=distribute_utils.step_seed(self._seed, self.optimizer.iterations),
      optimizer=self.optimizer,
      variables=self.student.trainable_variables,
      guard=self.guard,
    )
    return training.step_logs(
      step.losses, balanced=self.objective.config.balance != "none"
    )


def policy_metrics(
  student_logits: tf.Tensor, teacher_logits: tf.Tensor
) -> Dict[str, float]:
  """Action prediction error and mean KL(teacher ‖ student)."""
  error = tf.reduce_mean(
    tf.cast(
      tf.argmax(student_logits, -1) != tf.argmax(teacher_logits, -1),
      tf.float32,
    )
  )
  kl = tf.reduce_mean(
    _kl_from_log_probs(
      tf.nn.log_softmax(teacher_logits), tf.nn.log_softmax(student_logits)
    )
  )
  return {"action_error": float(error), "kl": float(kl)}
