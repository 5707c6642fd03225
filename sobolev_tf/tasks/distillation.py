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
* `DistillationTask`: one student of the Figure 4 sweep as a task of
  `launch/loop.py`: batches of its share of the training states from
  `input_pipeline.shuffled_batches` (so a killed run resumes at the same
  step and batch), checkpoints, evaluation on the test states, and the
  student's game scores at the end.
"""

import dataclasses
from typing import Any
from typing import Callable
from typing import Dict
from typing import Optional
from typing import Tuple

import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import checks
from sobolev_tf import config as config_lib
from sobolev_tf import distribute_utils
from sobolev_tf import objective as objective_lib
from sobolev_tf import training
from sobolev_tf.layers import atari
from sobolev_tf.tasks import atari_env
from sobolev_tf.tasks import base
from sobolev_tf.tasks import input_pipeline

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
  """

  num_actions: int
  derivative_weight: float = 1.0
  learning_rate: float = 1e-3
  balance: str = "target_scale"

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
    )
    self.guard = training.StepGuard()
    self._seed = seed

  def train_step(self, frames: tf.Tensor) -> Dict[str, tf.Tensor]:
    """One Adam step on a batch of recorded states; returns the terms."""
    # Derivatives are taken with respect to the frames as floats (0 to 255).
    x = tf.cast(frames, tf.float32)
    with tf.GradientTape() as tape:
      losses = self.objective(
        self.student,
        x,
        teacher=self.teacher.policy_logits,
        seed=distribute_utils.step_seed(self._seed, self.optimizer.iterations),
        training=True,
      )
    variables = self.student.trainable_variables
    gradients = tape.gradient(losses.total, variables)
    loss_finite = tf.math.is_finite(losses.total)
    gradients_finite = training.all_finite(gradients)
    finite = training.finite_everywhere(loss_finite & gradients_finite)
    training.apply_if_finite(self.optimizer, gradients, variables, finite)
    self.guard.record(
      finite,
      tf.constant(True),
      tf.constant(True),
      loss_finite,
      gradients_finite,
    )
    scale = distribute_utils.replica_scale()
    return {
      "loss": losses.total / scale,
      **{name: term / scale for name, term in losses.terms.items()},
      **{
        f"{name}_normalized": term / scale
        for name, term in losses.normalized.items()
        if self.objective.config.balance != "none"
      },
    }


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


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """One student of the sweep.

  Attributes:
    game: the ALE game of the teacher.
    fraction: share of the training states the student learns from.
    method: `regular` (KL only) or `sobolev` (KL + the Sobolev term).
    seed: seed of the share, the initial weights, batches and directions.
    steps: training steps.
    batch_size: global batch size.
    learning_rate: Adam step size.
    derivative_weight: weight of the Sobolev term of `sobolev`.
    balance: the objective's balance (`Config.balance`).
    play_episodes: games the trained student plays (0: none).
    play_seed: seed of those games' starts, shared by every player.
  """

  game: str
  fraction: float
  method: str
  seed: int
  steps: int = 2000
  batch_size: int = 32
  learning_rate: float = 1e-3
  derivative_weight: float = 1.0
  balance: str = "target_scale"
  play_episodes: int = 0
  play_seed: int = 1

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(
        f"Received an invalid value for `method`, expected one of "
        f"{list(METHODS)}. Received: method={self.method!r}"
      )
    checks.fraction("fraction", self.fraction, include_one=True)
    checks.positive_ints(steps=self.steps, batch_size=self.batch_size)
    checks.positive_numbers(learning_rate=self.learning_rate)
    checks.non_negative_numbers(derivative_weight=self.derivative_weight)
    if self.balance not in config_lib.BALANCES:
      raise ValueError(
        f"Received an invalid value for `balance`, expected one of "
        f"{config_lib.BALANCES}. Received: balance={self.balance!r}"
      )
    checks.non_negative_ints(
      seed=self.seed, play_episodes=self.play_episodes, play_seed=self.play_seed
    )

  @property
  def run_id(self) -> str:
    """A name unique within a sweep, usable as a directory name."""
    setting = ""
    if self.method == "sobolev" and (
      self.balance != "target_scale" or self.derivative_weight != 1
    ):
      setting = f"-{self.balance}-w{self.derivative_weight:g}"
    return f"{self.game}-f{self.fraction:g}-{self.method}{setting}-s{self.seed}"

  @property
  def weight(self) -> float:
    """The Sobolev term's weight: 0 for `regular`."""
    return self.derivative_weight if self.method == "sobolev" else 0.0


@dataclasses.dataclass(frozen=True)
class Recording:
  """Recorded states split by episode, shared by the runs of a sweep.

  Attributes:
    frames: uint8 `[S, 84, 84, 4]`, a tensor made once for every run.
    logits: the teacher's logits there, float32 `[S, A]`.
    train: indices of the training states.
    test: indices of the test states.
  """

  frames: tf.Tensor
  logits: np.ndarray
  train: np.ndarray
  test: np.ndarray


class DistillationTask(base.DatasetTask):
  """One student of the Figure 4 sweep, as a task of `launch/loop.py`.

  Args:
    config: the run.
    teacher_path: the teacher's weights (`atari.save_weights`), loaded
      under the strategy's scope.
    recording: the recorded states and their split.
  """

  def __init__(
    self, config: RunConfig, teacher_path: str, recording: Recording
  ):
    super().__init__(config.run_id, config.steps)
    self.config = config
    self.teacher_path = teacher_path
    self.recording = recording
    count = max(
      config.batch_size, round(config.fraction * len(recording.train))
    )
    rng = np.random.default_rng(config.seed)
    self.chosen = rng.choice(
      recording.train, min(count, len(recording.train)), replace=False
    )
    self.distiller: Optional[Distiller] = None

  def check_strategy(self, strategy: tf.distribute.Strategy) -> None:
    """The global batch must divide among the replicas."""
    base.check_global_batch(self.config.batch_size, strategy)

  def hparams(self) -> Dict[str, base.HParamValue]:
    """Every setting of the run but the play seed."""
    return base.config_hparams(self.config, "play_seed")

  def record(self, metrics: Dict[str, float]) -> Dict[str, Any]:
    """The base record with the number of training states."""
    return {**super().record(metrics), "train_states": int(len(self.chosen))}

  def build(self) -> None:
    """The teacher (loaded), the student and its optimiser."""
    num_actions = self.recording.logits.shape[-1]
    teacher = atari.load_teacher(self.teacher_path, num_actions)
    self.distiller = Distiller(
      Config(
        num_actions=num_actions,
        derivative_weight=self.config.weight,
        learning_rate=self.config.learning_rate,
        balance=self.config.balance,
      ),
      teacher,
      seed=self.config.seed,
    )

  def checkpoint_items(self) -> Dict[str, Any]:
    """The student, its optimiser and the balance's statistics."""
    return {
      "student": self.distiller.student,
      "optimizer": self.distiller.optimizer,
      "balance": self.distiller.objective.balance,
    }

  def check_steps(self) -> None:
    """A skipped (non-finite) step is an error, raised from the host."""
    self.distiller.guard.raise_if_skipped(f"in run {self.run_id} ")

  def dataset(
    self, context: tf.distribute.InputContext, start_step: int
  ) -> tf.data.Dataset:
    """Frame batches of the chosen training states from `start_step` on."""
    frames = self.recording.frames
    return input_pipeline.shuffled_batches(
      self.chosen, self.config.batch_size, self.config.seed, start_step, context
    ).map(lambda index: tf.gather(frames, index))

  def train_step(self, frames: tf.Tensor) -> Dict[str, tf.Tensor]:
    """`Distiller.train_step`."""
    return self.distiller.train_step(frames)

  def evaluate(self) -> Dict[str, float]:
    """Test action error and KL on the held-out episodes' states."""
    student = tf.function(self.distiller.student)
    test = self.recording.test
    logits = np.concatenate(
      [
        student(tf.gather(self.recording.frames, test[i : i + 256])).numpy()
        for i in range(0, len(test), 256)
      ]
    )
    return policy_metrics(logits, self.recording.logits[test])

  def finish(self, run_dir: str, chief: bool) -> Dict[str, Any]:
    """The trained student's game scores (`scores`), played by the chief."""
    del run_dir
    if not chief or not self.config.play_episodes:
      return {"scores": []}
    return {
      "scores": play_scores(
        tf.function(self.distiller.student),
        self.config.game,
        self.config.play_episodes,
        self.config.play_seed,
      )
    }


def play_scores(
  logits_fn: Optional[Callable[[Any], Any]],
  game: str,
  num_episodes: int,
  seed: int,
) -> list:
  """Scores of `num_episodes` whole games of `game`, one per environment.

  Args:
    logits_fn: frames to action logits; `None` plays uniformly at random.
    game: the ALE game.
    num_episodes: games to play.
    seed: seed of the games' starts and of the action sampling.

  Returns:
    The scores, by environment.
  """
  env = atari_env.make_atari_env(game, num_episodes, seed=seed)
  scores = atari_env.play(logits_fn, env, num_episodes, seed)
  env.close()
  return scores
