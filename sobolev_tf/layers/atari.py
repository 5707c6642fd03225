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
  action logits: 677,686 parameters with 6 actions.

Module names are fixed, so checkpoints and exported weights keep their
keys.
"""

import math
from typing import Tuple

import sonnet as snt
import tensorflow as tf

FRAME_SHAPE = (84, 84, 4)


def _scale(frames: tf.Tensor) -> tf.Tensor:
  return tf.cast(frames, tf.float32) / 255.0  # [B, 84, 84, 4] in [0, 1]


class AtariTeacher(snt.Module):
  """Teacher policy and value: 3 conv + 2 fully connected layers.

  Args:
    num_actions: size of the action set.
  """

  def __init__(self, num_actions: int, name: str = "atari_teacher"):
    super().__init__(name=name)
    relu_init = snt.initializers.Orthogonal(gain=math.sqrt(2.0))
    self._torso = [
      snt.Conv2D(
        32, 8, stride=4, padding="VALID", w_init=relu_init, name="conv_0"
      ),
      snt.Conv2D(
        64, 4, stride=2, padding="VALID", w_init=relu_init, name="conv_1"
      ),
      snt.Conv2D(
        64, 3, stride=1, padding="VALID", w_init=relu_init, name="conv_2"
      ),
    ]
    self._hidden = snt.Linear(512, w_init=relu_init, name="linear_0")
    self._logits = snt.Linear(
      num_actions, w_init=snt.initializers.Orthogonal(0.01), name="logits"
    )
    self._value = snt.Linear(
      1, w_init=snt.initializers.Orthogonal(1.0), name="value"
    )

  def features(self, frames: tf.Tensor) -> tf.Tensor:
    """The 512 features `[B, 512]` shared by the policy and the value."""
    h = _scale(frames)
    for conv in self._torso:
      h = tf.nn.relu(conv(h))  # [B, 20, 20, 32] [B, 9, 9, 64] [B, 7, 7, 64]
    return tf.nn.relu(self._hidden(snt.Flatten()(h)))  # [B, 512]

  def __call__(self, frames: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Action logits `[B, num_actions]` and state values `[B]`."""
    h = self.features(frames)
    return self._logits(h), tf.squeeze(self._value(h), -1)

  def policy_logits(self, frames: tf.Tensor) -> tf.Tensor:
    """Action logits only, `[B, num_actions]` (the distillation target)."""
    return self._logits(self.features(frames))


class AtariStudent(snt.Module):
  """Student policy: 2 conv + 1 smaller fully connected layer.

  Args:
    num_actions: size of the action set.
  """

  def __init__(self, num_actions: int, name: str = "atari_student"):
    super().__init__(name=name)
    self._torso = [
      snt.Conv2D(16, 8, stride=4, padding="VALID", name="conv_0"),
      snt.Conv2D(32, 4, stride=2, padding="VALID", name="conv_1"),
    ]
    self._hidden = snt.Linear(256, name="linear_0")
    self._logits = snt.Linear(num_actions, name="logits")

  def __call__(self, frames: tf.Tensor) -> tf.Tensor:
    """Action logits `[B, num_actions]`."""
    h = _scale(frames)
    for conv in self._torso:
      h = tf.nn.relu(conv(h))  # [B, 20, 20, 16] [B, 9, 9, 32]
    h = tf.nn.relu(self._hidden(snt.Flatten()(h)))  # [B, 256]
    return self._logits(h)


def num_parameters(module: snt.Module) -> int:
  """Number of trainable parameters of a built module."""
  return sum(int(tf.size(v)) for v in module.trainable_variables)
