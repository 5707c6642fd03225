"""Atari policy networks of the distillation experiment (paper Sec. 4.2).

Inputs are stacks of 4 preprocessed frames, uint8 `[B, 84, 84, 4]`, scaled
to [0, 1] inside the network.

* `AtariTeacher`: the paper's teacher, 3 convolutional layers and 2 fully
  connected layers (the DQN torso of Mnih et al., 2015): conv 32 8×8/4,
  conv 64 4×4/2, conv 64 3×3/1, linear 512, then the action logits; plus a
  value head on the 512 features for actor-critic training: 1,687,719
  parameters with 6 actions. Initialised as actor-critic agents usually
  are (OpenAI Baselines, Kostrikov's A2C): orthogonal weights with gain √2
  under ReLUs, 0.01 for the logits (a near-uniform first policy) and 1 for
  the value, zero biases.
* `AtariStudent`: the smaller student, 2 convolutional layers and 1 smaller
  fully connected layer: conv 16 8×8/4, conv 32 4×4/2, linear 256, then the
  action logits: 677,686 parameters with 6 actions. Initialised as Sonnet
  initialises by default (truncated normal, standard deviation
  `1 / sqrt(fan_in)`, zero biases).

Both draw their initial weights from stateless generators keyed by `seed`.
Module names are fixed, so checkpoints and exported weights keep their
keys. `save_weights`, `load_weights` and `load_teacher` export and import
weights as float16 `.npz` arrays (no pickles) on any `tf.io.gfile` path.
"""

import io
import math
from typing import Callable
from typing import Sequence
from typing import Tuple

import numpy as np
import sonnet as snt
import tensorflow as tf

from sobolev_tf import checks
from sobolev_tf.layers import initializers

FRAME_SHAPE = (84, 84, 4)


def _scale(frames: tf.Tensor) -> tf.Tensor:
  return tf.cast(frames, tf.float32) / 255.0  # [B, 84, 84, 4] in [0, 1]


# A convolution of a torso: output channels, kernel size, stride.
ConvSpec = Tuple[int, int, int]
# The initialiser of a network's layer, by the layer's index.
Initializers = Callable[[int], snt.initializers.Initializer]


class _ConvPolicy(snt.Module):
  """Frames to features to action logits, the shape of teacher and student.

  The frames are scaled to [0, 1], go through VALID convolutions
  (`conv_0`, `conv_1`, ...) and one linear layer (`linear_0`), each
  followed by a ReLU: the features; a linear layer (`logits`) maps them to
  the action logits. Layer `i` in that order takes `initializers(i)`.

  Args:
    num_actions: size of the action set.
    seed: seed of the initial weights (checked here; the subclass's
      `initializers` use it).
    torso: the convolutions.
    hidden_size: width of the features.
    initializers: a layer's index to its weight initialiser.
    name: the module's name.
  """

  def __init__(
    self,
    num_actions: int,
    seed: int,
    torso: Sequence[ConvSpec],
    hidden_size: int,
    initializers: Initializers,
    name: str,
  ):
    super().__init__(name=name)
    checks.positive_ints(num_actions=num_actions)
    checks.non_negative_ints(seed=seed)
    self._torso = [
      snt.Conv2D(
        channels,
        kernel,
        stride=stride,
        padding="VALID",
        w_init=initializers(index),
        name=f"conv_{index}",
      )
      for index, (channels, kernel, stride) in enumerate(torso)
    ]
    self._flat = snt.Flatten()
    self._hidden = snt.Linear(
      hidden_size, w_init=initializers(len(torso)), name="linear_0"
    )
    self._logits = snt.Linear(
      num_actions, w_init=initializers(len(torso) + 1), name="logits"
    )

  def features(self, frames: tf.Tensor) -> tf.Tensor:
    """The features `[B, hidden_size]` of frames `[B, 84, 84, 4]`."""
    h = _scale(frames)
    for conv in self._torso:
      h = tf.nn.relu(conv(h))  # [B, H', W', channels]
    return tf.nn.relu(self._hidden(self._flat(h)))  # [B, hidden_size]

  def policy_logits(self, frames: tf.Tensor) -> tf.Tensor:
    """Action logits `[B, num_actions]` (a teacher's: distillation targets)."""
    return self._logits(self.features(frames))


class AtariTeacher(_ConvPolicy):
  """Teacher policy and value: 3 conv + 2 fully connected layers.

  The torso's shapes: `[B, 20, 20, 32]`, `[B, 9, 9, 64]`, `[B, 7, 7, 64]`,
  then 512 features shared by the policy and the value.

  Args:
    num_actions: size of the action set.
    seed: seed of the initial weights.
  """

  def __init__(
    self, num_actions: int, seed: int = 0, name: str = "atari_teacher"
  ):
    relu_gain = math.sqrt(2.0)
    # Layer 3 is the hidden layer, 4 the logits, 5 the value.
    gains = (relu_gain, relu_gain, relu_gain, relu_gain, 0.01, 1.0)

    def orthogonal(index: int) -> initializers.Orthogonal:
      return initializers.Orthogonal(gains[index], (seed, index))

    super().__init__(
      num_actions,
      seed,
      torso=((32, 8, 4), (64, 4, 2), (64, 3, 1)),
      hidden_size=512,
      initializers=orthogonal,
      name=name,
    )
    self._value = snt.Linear(1, w_init=orthogonal(5), name="value")

  def __call__(self, frames: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Action logits `[B, num_actions]` and state values `[B]`."""
    h = self.features(frames)
    return self._logits(h), tf.squeeze(self._value(h), -1)


class AtariStudent(_ConvPolicy):
  """Student policy: 2 conv + 1 smaller fully connected layer.

  The torso's shapes: `[B, 20, 20, 16]`, `[B, 9, 9, 32]`, then 256
  features.

  Args:
    num_actions: size of the action set.
    seed: seed of the initial weights.
  """

  def __init__(
    self, num_actions: int, seed: int = 0, name: str = "atari_student"
  ):
    super().__init__(
      num_actions,
      seed,
      torso=((16, 8, 4), (32, 4, 2)),
      hidden_size=256,
      initializers=lambda index: initializers.FanInTruncatedNormal(
        (seed, index)
      ),
      name=name,
    )

  def __call__(self, frames: tf.Tensor) -> tf.Tensor:
    """Action logits `[B, num_actions]`."""
    return self.policy_logits(frames)


def num_parameters(module: snt.Module) -> int:
  """Number of trainable parameters of a built module."""
  return sum(int(tf.size(v)) for v in module.trainable_variables)


def save_weights(module: snt.Module, path: str) -> None:
  """Writes `module`'s variables to `path` as float16 `.npz` (no pickles).

  Args:
    module: a built module.
    path: a `tf.io.gfile` path; written whole or not at all.
  """
  buffer = io.BytesIO()
  np.savez_compressed(
    buffer,
    **{v.name: v.numpy().astype(np.float16) for v in module.variables},
  )
  temporary = f"{path}.tmp"
  with tf.io.gfile.GFile(temporary, "wb") as f:
    f.write(buffer.getvalue())
  tf.io.gfile.rename(temporary, path, overwrite=True)


def load_weights(module: snt.Module, path: str) -> None:
  """Assigns the variables `save_weights` wrote to `path` (weights only).

  Reads arrays only (`allow_pickle=False`): loading runs no code.

  Raises:
    ValueError: if the file's names or shapes differ from `module`'s.
  """
  with tf.io.gfile.GFile(path, "rb") as f:
    saved = dict(np.load(io.BytesIO(f.read()), allow_pickle=False))
  names = {v.name for v in module.variables}
  if set(saved) != names:
    raise ValueError(
      f"The weights in {path} do not match the network: missing "
      f"{sorted(names - set(saved))}, unexpected "
      f"{sorted(set(saved) - names)}."
    )
  for variable in module.variables:
    value = saved[variable.name]
    if value.shape != tuple(variable.shape):
      raise ValueError(
        f"Shape mismatch for {variable.name} in {path}: saved "
        f"{value.shape}, expected {tuple(variable.shape)}."
      )
    variable.assign(value.astype(variable.dtype.as_numpy_dtype))


def load_teacher(path: str, num_actions: int) -> AtariTeacher:
  """An `AtariTeacher` with the weights `save_weights` wrote to `path`."""
  teacher = AtariTeacher(num_actions)
  teacher(tf.zeros([1, *FRAME_SHAPE], tf.uint8))
  load_weights(teacher, path)
  return teacher
