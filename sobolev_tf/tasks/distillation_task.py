"""One student of the distillation sweep (Figure 4), for `launch/loop.py`.

* `RunConfig`: the student's settings.
* `Recording`: the recorded states (`distillation.record`) split by
  episode, shared by the runs of a sweep.
* `DistillationTask`: batches of the student's share of the training
  states from `input_pipeline.shuffled_batches` (so a killed run resumes at
  the same step and batch), checkpoints, evaluation on the test states, and
  the student's game scores at the end (`play_scores`).
"""

import dataclasses
from typing import Any
from typing import Callable
from typing import Dict
from typing import Optional
from typing import Tuple

import numpy as np
import tensorflow as tf

from sobolev_tf import checks
from sobolev_tf import config as config_lib
from sobolev_tf import finite_updates
from sobolev_tf.layers import atari
from sobolev_tf.tasks import atari_env
from sobolev_tf.tasks import base
from sobolev_tf.tasks import distillation
from sobolev_tf.tasks import input_pipeline


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
    balance: the objective's balance (`distillation.Config.balance`).
    balance_floor: `SobolevConfig.balance_floor`.
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
  balance_floor: float = config_lib.SobolevConfig.balance_floor
  play_episodes: int = 0
  play_seed: int = 1

  def __post_init__(self):
    if self.method not in distillation.METHODS:
      raise ValueError(
        f"Received an invalid value for `method`, expected one of "
        f"{list(distillation.METHODS)}. Received: method={self.method!r}"
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
    if (
      self.method == "sobolev"
      and self.balance_floor != config_lib.SobolevConfig.balance_floor
    ):
      setting += f"-f{self.balance_floor:g}"
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
    validation: indices of the validation states (held-out training
      episodes; empty for none): they select each run's best weights.
  """

  frames: tf.Tensor
  logits: np.ndarray
  train: np.ndarray
  test: np.ndarray
  validation: np.ndarray = dataclasses.field(
    default_factory=lambda: np.zeros([0], np.int64)
  )


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
    self.distiller: Optional[distillation.Distiller] = None
    self._student_fn = None

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
    self.distiller = distillation.Distiller(
      distillation.Config(
        num_actions=num_actions,
        derivative_weight=self.config.weight,
        learning_rate=self.config.learning_rate,
        balance=self.config.balance,
        balance_floor=self.config.balance_floor,
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

  @property
  def guard(self) -> finite_updates.StepGuard:
    """The distiller's: a skipped step is an error."""
    return self.distiller.guard

  def dataset(
    self, context: tf.distribute.InputContext, start_step: int
  ) -> tf.data.Dataset:
    """Frame batches of the chosen training states from `start_step` on."""
    frames = self.recording.frames
    return input_pipeline.shuffled_batches(
      self.chosen, self.config.batch_size, self.config.seed, start_step, context
    ).map(lambda index: tf.gather(frames, index))

  def train_step(self, frames: tf.Tensor) -> Dict[str, tf.Tensor]:
    """`distillation.Distiller.train_step`."""
    return self.distiller.train_step(frames)

  def evaluate(self) -> Dict[str, float]:
    """Action error and KL on the test (and validation) episodes' states."""
    metrics = self._policy_metrics(self.recording.test)
    if len(self.recording.validation):
      validation = self._policy_metrics(self.recording.validation)
      metrics.update({f"val_{k}": v for k, v in validation.items()})
    return metrics

  @property
  def selection(self) -> Optional[Tuple[str, str]]:
    """With validation states, their KL to the teacher's policy."""
    return ("val_kl", "min") if len(self.recording.validation) else None

  def _policy_metrics(self, indices: np.ndarray) -> Dict[str, float]:
    if self._student_fn is None:
      self._student_fn = tf.function(self.distiller.student)
    logits = np.concatenate(
      [
        self._student_fn(
          tf.gather(self.recording.frames, indices[i : i + 256])
        ).numpy()
        for i in range(0, len(indices), 256)
      ]
    )
    return distillation.policy_metrics(logits, self.recording.logits[indices])

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
