"""The TensorFlow side of the benchmarks: `SobolevModel` on Keras's train path.

A `TfTrainer` compiles a `SobolevModel` with `steps_per_execution=N` (and XLA
on or off) and runs `model.train_function(iterator)` on
`iter(Dataset.from_tensors(batch).repeat())`: the call `fit` makes per
execution, minus callbacks and progress bar. It runs N
`SobolevModel.train_step`s inside a TF `while_loop` that pulls the next batch
from the iterator: one Python call per N steps, the least Python overhead
that still goes through Keras's `train_step`, metric trackers and optimizer.
"""

import dataclasses
from typing import Dict
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from benchmarks import workloads
import sobolev_tf


@dataclasses.dataclass(frozen=True)
class TfVariant:
  """How the TensorFlow side runs a step: full-Jacobian mode and XLA."""

  jacobian_mode: str = "auto"
  xla: bool = True

  def __post_init__(self):
    if self.jacobian_mode not in workloads.JACOBIAN_MODES:
      raise ValueError(
        "Received an invalid value for `jacobian_mode`, expected one of "
        f"{workloads.JACOBIAN_MODES}. "
        f"Received: jacobian_mode={self.jacobian_mode!r}"
      )

  @property
  def label(self) -> str:
    """E.g. `forward, no XLA`; empty for the default (auto, XLA)."""
    parts = []
    if self.jacobian_mode != "auto":
      parts.append(self.jacobian_mode)
    if not self.xla:
      parts.append("no XLA")
    return ", ".join(parts)


def keras_net(
  workload: workloads.Workload, activation: str, seed: int
) -> keras.Model:
  """The workload's network as a Keras `Sequential`, `[B, in...] -> [B, out]`.

  Args:
    workload: gives the input shape and the layers.
    activation: Keras name of the hidden activation.
    seed: seed of the (Glorot uniform) initialisation.

  Returns:
    A built Keras model.
  """
  keras.utils.set_random_seed(seed)
  layers = [keras.Input(workload.input_shape)]
  last = len(workload.layers) - 1
  for index, spec in enumerate(workload.layers):
    hidden_activation = None if index == last else activation
    if spec[0] == "dense":
      layers.append(keras.layers.Dense(spec[1], activation=hidden_activation))
    elif spec[0] == "conv":
      _, filters, kernel_size, stride = spec
      layers.append(
        keras.layers.Conv2D(
          filters, kernel_size, strides=stride, activation=hidden_activation
        )
      )
    else:
      layers.append(keras.layers.Flatten())
  return keras.Sequential(layers)


def sobolev_model(
  net: keras.Model,
  kind: workloads.StepKind,
  variant: TfVariant,
  teacher: Optional[keras.Model],
  seed: int,
) -> sobolev_tf.SobolevModel:
  """`net` wrapped for `kind`, configured by `workloads.objective_kwargs`."""
  return sobolev_tf.SobolevModel(
    net,
    **workloads.objective_kwargs(kind),
    jacobian_mode=variant.jacobian_mode,
    teacher=teacher,
    seed=seed,
  )


class TfTrainer:
  """A compiled `SobolevModel` and the batch iterator it trains on."""

  def __init__(
    self,
    net: keras.Model,
    kind: workloads.StepKind,
    x: np.ndarray,
    targets: Optional[Dict[str, np.ndarray]],
    teacher: Optional[keras.Model],
    steps: int,
    seed: int,
    variant: Optional[TfVariant] = None,
  ):
    """Wraps and compiles `net`.

    Args:
      net: the Keras network to train.
      kind: the step kind.
      x: the input batch, `[B, in...]`.
      targets: full array targets, or None with a teacher.
      teacher: a frozen Keras teacher, or None.
      steps: training steps per `run` (Keras `steps_per_execution`).
      seed: seed of the random directions.
      variant: full-Jacobian mode and XLA; default `TfVariant()`.
    """
    variant = variant or TfVariant()
    self.kind = kind
    self.net = net
    self.x = x
    self.targets = targets
    self.teacher = teacher
    self.seed = seed
    self.model = sobolev_model(net, kind, variant, teacher, seed)
    self.model.compile(
      optimizer=keras.optimizers.Adam(workloads.LEARNING_RATE),
      jit_compile=variant.xla,
      steps_per_execution=steps,
    )
    batch = x if targets is None else (x, targets)
    self.iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())

  def initial_loss(self) -> float:
    """The objective on the batch with the current weights, eagerly."""
    objective = sobolev_tf.SobolevObjective(
      **workloads.objective_kwargs(self.kind)
    )
    targets = None
    if self.targets is not None:
      targets = {key: tf.constant(value) for key, value in self.targets.items()}
    losses = objective(
      lambda inputs: self.net(inputs, training=True),
      tf.constant(self.x),
      targets,
      teacher=self.teacher,
      seed=tf.constant([self.seed, 0], tf.int64),
    )
    return float(losses.total)

  def run(self) -> None:
    """Runs `steps` training steps: one `train_function` call."""
    if self.model.train_function is None:
      self.model.make_train_function()
    logs = self.model.train_function(self.iterator)
    logs["loss"].numpy()  # Waits for the step.
