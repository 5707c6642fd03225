"""Networks of the synthetic-gradient experiment (paper Sec. 4.3), in Sonnet.

A classifier split into parts (`SplitConvNet`), and the modules that produce
a synthetic gradient SG(h, y) ≈ ∂L/∂h at a split activation h (Table 1):

* `DirectSG`: a network whose output is SG(h, y) itself, as in decoupled
  neural interfaces (Jaderberg et al., 2016); its last layer starts at zero,
  so it starts by sending no signal.
* `ScalarCritic`: a learned scalar m(h, y); SG = ∂m/∂h. Used by `vfbn`.
* `LossCritic`: m(h, y) = L(p(h), y), a class predictor p followed by the
  log loss; SG = ∂m/∂h. Used by `critic` and `sobolev`.

Because SG = ∂m/∂h for the critics, their SG has a symmetric Jacobian with
respect to h (it is m's Hessian), a gradient field (the paper's
Proposition 4); a `DirectSG` in general has not.

Shapes: `h` is a conv activation `[B, H, W, C]`; `labels` are class indices
`[B]`; critics return `[B]`, `DirectSG` returns `[B, H, W, C]`.
"""

from typing import List
from typing import Sequence

import sonnet as snt
import tensorflow as tf

from sobolev_tf import checks


class ConvBlock(snt.Module):
  """3×3 convolution, optional batch norm, ReLU: one part of a split net."""

  def __init__(
    self,
    channels: int,
    stride: int = 1,
    batch_norm: bool = False,
    name: str = "conv_block",
  ):
    super().__init__(name=name)
    checks.positive_ints(channels=channels, stride=stride)
    self._conv = snt.Conv2D(channels, 3, stride=stride, name="conv")
    self._batch_norm = (
      snt.BatchNorm(True, True, name="batch_norm") if batch_norm else None
    )

  def __call__(self, x: tf.Tensor, is_training: bool) -> tf.Tensor:
    """`[B, H, W, C_in] -> [B, H / stride, W / stride, channels]`."""
    h = self._conv(x)  # [B, H / stride, W / stride, channels]
    if self._batch_norm is not None:
      h = self._batch_norm(h, is_training=is_training)
    return tf.nn.relu(h)


class Head(snt.Module):
  """Global average pooling and a linear layer to the class logits."""

  def __init__(self, num_classes: int, name: str = "head"):
    super().__init__(name=name)
    checks.positive_ints(num_classes=num_classes)
    self._linear = snt.Linear(num_classes, name="logits")

  def __call__(self, x: tf.Tensor, is_training: bool) -> tf.Tensor:
    """`[B, H, W, C] -> [B, num_classes]` logits."""
    del is_training
    return self._linear(tf.reduce_mean(x, axis=[1, 2]))  # [B, classes]


class SplitConvNet(snt.Module):
  """A convnet as a list of parts: conv blocks, then the head.

  With `channels=(32, 32, 64)` and `strides=(1, 1, 2)` on 8×8 digits the
  parts map `[B, 8, 8, 1] -> [B, 8, 8, 32] -> [B, 8, 8, 32] -> [B, 4, 4, 64]
  -> [B, 10]`, so there are three split points, one after each block.

  Args:
    channels: output channels of each conv block.
    strides: stride of each conv block.
    num_classes: number of classes.
    batch_norm: batch normalisation in the blocks.
  """

  def __init__(
    self,
    channels: Sequence[int],
    strides: Sequence[int],
    num_classes: int,
    batch_norm: bool = False,
    name: str = "split_conv_net",
  ):
    super().__init__(name=name)
    if not channels or len(channels) != len(strides):
      raise ValueError(
        "Expected at least one conv block and one stride per block. "
        f"Received: channels={list(channels)}, strides={list(strides)}"
      )
    self.parts: List[snt.Module] = [
      ConvBlock(c, s, batch_norm, name=f"block_{i}")
      for i, (c, s) in enumerate(zip(channels, strides, strict=True))
    ]
    self.parts.append(Head(num_classes))

  def __call__(self, x: tf.Tensor, is_training: bool) -> tf.Tensor:
    """Images `[B, H, W, C]` to logits `[B, num_classes]`."""
    for part in self.parts:
      x = part(x, is_training=is_training)
    return x


RESNET50_CHANNELS = (256, 512, 1024, 2048)


class _ResNetStem(snt.Module):
  """7×7/2 convolution, batch norm, ReLU, 3×3/2 max pooling, block group 1."""

  def __init__(self, bn_config, name: str = "stem"):
    super().__init__(name=name)
    self._conv = snt.Conv2D(64, 7, stride=2, with_bias=False, name="conv")
    self._batch_norm = snt.BatchNorm(True, True, name="batch_norm", **bn_config)
    self._group = snt.nets.resnet.BlockGroup(
      RESNET50_CHANNELS[0], 3, 1, bn_config, name="block_group_0"
    )

  def __call__(self, x: tf.Tensor, is_training: bool) -> tf.Tensor:
    """`[B, H, W, 3] -> [B, H / 4, W / 4, 256]`."""
    h = tf.nn.relu(self._batch_norm(self._conv(x), is_training=is_training))
    h = tf.nn.max_pool2d(h, ksize=3, strides=2, padding="SAME")
    return self._group(h, is_training=is_training)


class _BlockGroupPart(snt.Module):
  """One ResNet block group as a part with the `(x, is_training)` call."""

  def __init__(self, index: int, num_blocks: int, bn_config):
    super().__init__(name=f"block_group_{index}")
    self._group = snt.nets.resnet.BlockGroup(
      RESNET50_CHANNELS[index], num_blocks, 2, bn_config, name="group"
    )

  def __call__(self, x: tf.Tensor, is_training: bool) -> tf.Tensor:
    """`[B, H, W, C] -> [B, H / 2, W / 2, channels]`."""
    return self._group(x, is_training=is_training)


class SplitResNet50(snt.Module):
  """ResNet-50 (v1, Sonnet's bottleneck blocks) as a list of parts.

  Parts: stem with block group 1 (`[B, 224, 224, 3] -> [B, 56, 56, 256]`),
  block groups 2, 3 and 4 (`-> [B, 28, 28, 512] -> [B, 14, 14, 1024] ->
  [B, 7, 7, 2048]`), and the head (global average pooling, linear to the
  logits). The four block groups give the split points: three modules
  split after groups 1, 2 and 3, one module after group 2.

  Args:
    num_classes: number of classes.
  """

  def __init__(self, num_classes: int, name: str = "split_resnet50"):
    super().__init__(name=name)
    checks.positive_ints(num_classes=num_classes)
    bn_config = {"decay_rate": 0.9, "eps": 1e-5}
    self.parts: List[snt.Module] = [_ResNetStem(bn_config)]
    self.parts += [
      _BlockGroupPart(index, num_blocks, bn_config)
      for index, num_blocks in ((1, 4), (2, 6), (3, 3))
    ]
    self.parts.append(Head(num_classes))

  def __call__(self, x: tf.Tensor, is_training: bool) -> tf.Tensor:
    """Images `[B, H, W, 3]` to logits `[B, num_classes]`."""
    for part in self.parts:
      x = part(x, is_training=is_training)
    return x


class _LabelConditioned(snt.Module):
  """A module of (h, y) that reads the label as constant one-hot channels.

  Args:
    num_classes: number of classes.
    name: the module's name.
    **sizes: the subclass's other sizes, checked positive with
      `num_classes`.
  """

  def __init__(self, num_classes: int, name: str, **sizes: int):
    super().__init__(name=name)
    checks.positive_ints(num_classes=num_classes, **sizes)
    self._num_classes = num_classes

  def _with_labels(self, h: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """`h` with the one-hot labels appended as constant channels."""
    num_classes = self._num_classes
    one_hot = tf.one_hot(labels, num_classes, dtype=h.dtype)  # [B, K]
    planes = tf.broadcast_to(
      one_hot[:, None, None, :], tf.concat([tf.shape(h)[:3], [num_classes]], 0)
    )
    return tf.concat([h, planes], axis=-1)  # [B, H, W, C + K]


class DirectSG(_LabelConditioned):
  """SG(h, y) from a small convnet on h and the label (DNI).

  Args:
    num_classes: number of classes (the label is an input).
    channels: channels of h, and of the output.
    hidden_channels: channels of the hidden conv layer.
  """

  def __init__(
    self,
    num_classes: int,
    channels: int,
    hidden_channels: int = 64,
    name: str = "direct_sg",
  ):
    super().__init__(
      num_classes, name, channels=channels, hidden_channels=hidden_channels
    )
    self._hidden = snt.Conv2D(hidden_channels, 3, name="hidden")
    self._output = snt.Conv2D(
      channels, 3, w_init=tf.zeros_initializer(), name="output"
    )

  def __call__(self, h: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """SG(h, y), shaped like `h`."""
    features = tf.nn.relu(self._hidden(self._with_labels(h, labels)))
    return self._output(features)  # [B, H, W, C]


class ScalarCritic(_LabelConditioned):
  """A learned scalar m(h, y): conv features, the label, an MLP to [B].

  Args:
    num_classes: number of classes (the label is an input).
    hidden_channels: channels of the conv layer.
    hidden_size: width of the hidden linear layer.
  """

  def __init__(
    self,
    num_classes: int,
    hidden_channels: int = 64,
    hidden_size: int = 64,
    name: str = "scalar_critic",
  ):
    super().__init__(
      num_classes,
      name,
      hidden_channels=hidden_channels,
      hidden_size=hidden_size,
    )
    self._conv = snt.Conv2D(hidden_channels, 3, name="conv")
    self._hidden = snt.Linear(hidden_size, name="hidden")
    self._output = snt.Linear(1, name="output")

  def __call__(self, h: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """m(h, y), `[B]`."""
    features = tf.nn.softplus(self._conv(self._with_labels(h, labels)))
    pooled = tf.reduce_mean(features, axis=[1, 2])  # [B, hidden_channels]
    hidden = tf.nn.softplus(self._hidden(pooled))
    return tf.squeeze(self._output(hidden), -1)  # [B]


class LossCritic(snt.Module):
  """m(h, y) = L(p(h), y): a class predictor p followed by the log loss.

  p is a small copy of the rest of a classifier: a conv layer, global
  average pooling and a linear layer to the logits. Softplus keeps m twice
  differentiable (ReLU's second derivative is zero almost everywhere).

  Args:
    num_classes: number of classes.
    hidden_channels: channels of the conv layer.
  """

  def __init__(
    self, num_classes: int, hidden_channels: int = 64, name: str = "loss_critic"
  ):
    super().__init__(name=name)
    checks.positive_ints(
      num_classes=num_classes, hidden_channels=hidden_channels
    )
    self._conv = snt.Conv2D(hidden_channels, 3, name="conv")
    self._logits = snt.Linear(num_classes, name="logits")

  def predict(self, h: tf.Tensor) -> tf.Tensor:
    """p(h): the class logits `[B, num_classes]`."""
    features = tf.nn.softplus(self._conv(h))
    return self._logits(tf.reduce_mean(features, axis=[1, 2]))

  def __call__(self, h: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """The predicted loss L(p(h), y), `[B]`."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels, self.predict(h)
    )  # [B]
