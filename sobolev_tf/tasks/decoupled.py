"""A classifier trained in decoupled stages with synthetic gradients.

A classifier (`SplitConvNet` or `SplitResNet50`) is cut into stages at the
split points of its `synthetic_gradients.Config`. Every stage reads its
input through `tf.stop_gradient`, so no true gradient crosses a split. The
top stage learns from the true loss; every lower stage `i` is updated with
the synthetic gradient SG_i(h_i, y) produced at its output h_i by the SG
module at that split: its parameter gradient is `mean_b J_b^T SG_i[b]`. SG
modules predict per-example gradients, `∂ℓ_b/∂h_b`; the variants are
described in `synthetic_gradients`.

Every target is detached (`tf.stop_gradient`): a known bug of public DNI
code trained the SG module through its own target. The critics' gradients
and the SG modules' losses come from the core: `SobolevObjective` (order 0
for `critic`, order 1 for `sobolev`, order 1 with value weight 0 for `vfbn`)
and `derivatives.vector_jacobian_product`. With `warmup_steps`, the SG
modules train for that many steps before their gradients reach the lower
stages.

Each training step also logs, per split, the cosine between the synthetic
gradient and the true gradient (the top stage's loss backpropagated through
every stage above the split), averaged over the batch.
"""

from typing import Any
from typing import Dict
from typing import List
from typing import NamedTuple
from typing import Optional
from typing import Tuple

import keras
import sonnet as snt
import tensorflow as tf

from sobolev_tf import derivatives
from sobolev_tf import distribute_utils
from sobolev_tf import objective as objective_lib
from sobolev_tf import training
from sobolev_tf.layers import synthetic_gradients as sg_layers
from sobolev_tf.tasks import synthetic_gradients as sg


def _cosine(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
  """Mean over the batch of the cosine between per-example tensors."""
  a = tf.reshape(a, [tf.shape(a)[0], -1])
  b = tf.reshape(b, [tf.shape(b)[0], -1])
  return tf.reduce_mean(
    tf.reduce_sum(a * b, -1)
    / tf.maximum(tf.norm(a, axis=-1) * tf.norm(b, axis=-1), 1e-12)
  )


def _accuracy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
  return tf.reduce_mean(
    tf.cast(tf.equal(tf.argmax(logits, -1), labels), tf.float32)
  )


class _ForwardPass(NamedTuple):
  """A training forward pass through the stages, on a persistent tape.

  Attributes:
    tape: the tape that watched it.
    inputs: every stage's input (detached where the stage is decoupled).
    outputs: every stage's output; the last one is the logits.
  """

  tape: tf.GradientTape
  inputs: List[tf.Tensor]
  outputs: List[tf.Tensor]

  def backprop(self, index: int, sources: Any, output_gradients: tf.Tensor):
    """`output_gradients` at stage `index`'s output, carried to `sources`."""
    return self.tape.gradient(
      self.outputs[index], sources, output_gradients=output_gradients
    )


class DecoupledClassifier(snt.Module):
  """A split classifier, its SG modules and their optimisers.

  Build it under the strategy's scope; `train_step` runs in a replica
  context (inside `strategy.run`) or without a strategy.

  Args:
    config: the run's `synthetic_gradients.Config`.
    input_shape: shape of one image, e.g. `(8, 8, 1)`.
  """

  def __init__(self, config: sg.Config, input_shape: Tuple[int, ...]):
    super().__init__(name="decoupled_classifier")
    self.config = config
    if config.architecture == "resnet50":
      self.network = sg_layers.SplitResNet50(config.num_classes)
    else:
      self.network = sg_layers.SplitConvNet(
        config.channels, config.strides, config.num_classes, config.batch_norm
      )
    cuts = sg.split_points(len(config.block_channels), config.num_modules)
    bounds = [0, *(c + 1 for c in cuts), len(self.network.parts)]
    # Stage s runs parts[bounds[s]:bounds[s + 1]]; split s follows stage s.
    self.stages = [
      self.network.parts[start:end]
      for start, end in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    self.sg_modules = [
      self._make_sg_module(config.block_channels[cut], k)
      for k, cut in enumerate(cuts)
    ]
    weights = {
      "vfbn": [0.0, config.gradient_weight],
      "critic": [1.0],
      "sobolev": [1.0, config.gradient_weight],
    }.get(config.variant)
    # One objective per module: each split's targets have their own scale.
    self.sg_objectives = (
      [
        objective_lib.SobolevObjective(
          order=len(weights) - 1, loss_weights=weights, balance=config.balance
        )
        for _ in self.sg_modules
      ]
      if weights
      else []
    )
    self.optimizer = keras.optimizers.Adam(config.learning_rate)
    self.sg_optimizer = keras.optimizers.Adam(config.sg_learning_rate)
    # Build every variable now, so that checkpoints restore before training.
    images = tf.zeros([1, *input_shape])
    labels = tf.zeros([1], tf.int64)
    h = images
    for stage, sg_module in zip(
      self.stages, [*self.sg_modules, None], strict=True
    ):
      h = self._run(stage, h, False)
      if sg_module is not None:
        sg_module(h, labels)
    self.optimizer.build(self.network.trainable_variables)
    if self.sg_modules:
      self.sg_optimizer.build(self.sg_variables)

  def _make_sg_module(self, channels: int, index: int) -> Optional[snt.Module]:
    variant, classes = self.config.variant, self.config.num_classes
    if variant == "direct":
      return sg_layers.DirectSG(classes, channels, name=f"direct_sg_{index}")
    if variant == "vfbn":
      return sg_layers.ScalarCritic(classes, name=f"scalar_critic_{index}")
    if variant in ("critic", "sobolev"):
      return sg_layers.LossCritic(classes, name=f"loss_critic_{index}")
    return None

  @property
  def sg_variables(self) -> List[tf.Variable]:
    """The SG modules' trainable variables."""
    return [v for m in self.sg_modules if m for v in m.trainable_variables]

  @staticmethod
  def _run(stage, x: tf.Tensor, is_training: bool) -> tf.Tensor:
    for part in stage:
      x = part(x, is_training=is_training)
    return x

  def __call__(self, images: tf.Tensor, is_training: bool = False):
    """Class logits `[B, num_classes]`."""
    return self.network(images, is_training=is_training)

  def synthetic_gradient(
    self, index: int, h: tf.Tensor, labels: tf.Tensor
  ) -> tf.Tensor:
    """SG at split `index`, `[B, H, W, C]` (differentiable in `h`)."""
    module = self.sg_modules[index]
    if self.config.variant == "direct":
      return module(h, labels)
    return derivatives.vector_jacobian_product(
      lambda a: module(a, labels), h, tf.ones_like(labels, h.dtype)
    )

  def _sg_loss(
    self,
    index: int,
    h: tf.Tensor,
    labels: tf.Tensor,
    value_target: tf.Tensor,
    gradient_target: tf.Tensor,
  ) -> tf.Tensor:
    """The SG module's training loss at split `index` (targets detached)."""
    module = self.sg_modules[index]
    value_target = tf.stop_gradient(value_target)
    gradient_target = tf.stop_gradient(gradient_target)
    if self.config.variant == "direct":
      error = tf.square(module(h, labels) - gradient_target)
      return (
        self.config.gradient_weight
        * tf.reduce_mean(error)
        * distribute_utils.replica_scale()
      )
    targets = {"value": value_target[:, None], "d1": gradient_target[:, None]}
    if self.config.variant == "critic":
      targets.pop("d1")
    if self.config.variant == "vfbn":
      targets.pop("value")
    return self.sg_objectives[index](
      lambda a: module(a, labels)[:, None], h, targets, training=True
    ).total

  @training.xla_cpu_matmul_gradients()
  def train_step(self, batch: Tuple[tf.Tensor, tf.Tensor]) -> Dict[str, Any]:
    """One step of every stage and every SG module; returns scalar logs."""
    images, labels = batch
    with tf.GradientTape(persistent=True) as tape:
      forward = self._forward(tape, images)
      losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, forward.outputs[-1]
      )  # [B]
      loss = tf.reduce_mean(losses) * distribute_utils.replica_scale()
    logs = {
      "loss": tf.reduce_mean(losses),
      "accuracy": _accuracy(forward.outputs[-1], labels),
    }
    variables = self.network.trainable_variables
    if self.config.variant == "backprop":
      self.optimizer.apply(tape.gradient(loss, variables), variables)
      return logs
    gradients, sg_gradients = self._decoupled_gradients(
      forward, labels, losses, loss, logs
    )
    del tape, forward
    self.optimizer.apply([gradients[id(v)] for v in variables], variables)
    if sg_gradients:
      grads, sg_vars = zip(*sg_gradients, strict=True)
      self.sg_optimizer.apply(list(grads), list(sg_vars))
    return logs

  def _forward(self, tape: tf.GradientTape, images: tf.Tensor) -> _ForwardPass:
    """Every stage's input and output; decoupled stages stop the gradient."""
    inputs, outputs = [], []
    h = images
    for stage in self.stages:
      x = h if self.config.variant == "backprop" else tf.stop_gradient(h)
      tape.watch(x)
      inputs.append(x)
      h = self._run(stage, x, True)
      outputs.append(h)
    return _ForwardPass(tape, inputs, outputs)

  def _true_gradients(
    self, forward: _ForwardPass, losses: tf.Tensor
  ) -> List[tf.Tensor]:
    """The true per-example gradient at every split.

    Backpropagated by hand across the boundaries, for the top split's
    targets and the cosines.
    """
    true_gradients = [None] * len(self.sg_modules)
    upstream = forward.tape.gradient(losses, forward.inputs[-1])  # of their sum
    for index in reversed(range(len(self.sg_modules))):
      true_gradients[index] = upstream
      if index:
        upstream = forward.backprop(index, forward.inputs[index], upstream)
    return true_gradients

  def _decoupled_gradients(
    self,
    forward: _ForwardPass,
    labels: tf.Tensor,
    losses: tf.Tensor,
    loss: tf.Tensor,
    logs: Dict[str, tf.Tensor],
  ) -> Tuple[Dict[int, tf.Tensor], List[Tuple[tf.Tensor, tf.Variable]]]:
    """Gradients of the stages (by variable id) and of the SG modules.

    The top stage gets the true gradient; from the top split down, each SG
    module trains on its targets and its synthetic gradient trains the
    stage below it, and gives the targets of the split below. Adds each
    split's SG loss and cosine to `logs`.
    """
    true_gradients = self._true_gradients(forward, losses)
    top_variables = _variables(self.stages[-1])
    gradients = _by_id(
      top_variables, forward.tape.gradient(loss, top_variables)
    )
    scale = self._synthetic_scale(
      tf.shape(labels)[0], forward.outputs[-1].dtype
    )
    sg_gradients = []
    value_target, gradient_target = losses, true_gradients[-1]
    for index in reversed(range(len(self.sg_modules))):
      h_split = tf.stop_gradient(forward.outputs[index])
      synthetic = tf.zeros_like(h_split)
      if self.config.variant != "noprop":
        sg_loss, module_gradients, synthetic = self._train_sg_module(
          index, h_split, labels, value_target, gradient_target
        )
        sg_gradients += module_gradients
        logs[f"sg_loss_{index}"] = sg_loss / distribute_utils.replica_scale()
        logs[f"cosine_{index}"] = _cosine(synthetic, true_gradients[index])
        if index:  # The signal this split sends down to the one below.
          gradient_target = forward.backprop(
            index, forward.inputs[index], synthetic
          )
          if self.config.variant in ("critic", "sobolev"):
            value_target = self.sg_modules[index](h_split, labels)
      stage_variables = _variables(self.stages[index])
      gradients.update(
        _by_id(
          stage_variables,
          forward.backprop(index, stage_variables, synthetic * scale),
        )
      )
    return gradients, sg_gradients

  def _synthetic_scale(self, batch_size: tf.Tensor, dtype: tf.DType):
    """What a synthetic gradient is multiplied by to train its stage.

    A lower stage's gradient is its output's synthetic gradient averaged
    over the batch (and the replicas), once the SG modules have warmed up.
    """
    applied = tf.cast(
      self.optimizer.iterations >= self.config.warmup_steps, dtype
    )
    return (
      applied / tf.cast(batch_size, dtype) * distribute_utils.replica_scale()
    )

  def _train_sg_module(
    self,
    index: int,
    h_split: tf.Tensor,
    labels: tf.Tensor,
    value_target: tf.Tensor,
    gradient_target: tf.Tensor,
  ) -> Tuple[tf.Tensor, List[Tuple[tf.Tensor, tf.Variable]], tf.Tensor]:
    """The SG module's loss at split `index`, with its gradients.

    Returns:
      The loss, its gradients paired with the module's variables, and the
      module's synthetic gradient (detached).
    """
    with tf.GradientTape() as sg_tape:
      sg_loss = self._sg_loss(
        index, h_split, labels, value_target, gradient_target
      )
    module_variables = self.sg_modules[index].trainable_variables
    module_gradients = list(
      zip(
        sg_tape.gradient(sg_loss, module_variables),
        module_variables,
        strict=True,
      )
    )
    synthetic = tf.stop_gradient(
      self.synthetic_gradient(index, h_split, labels)
    )
    return sg_loss, module_gradients, synthetic

  def gradient_cosines(
    self, images: tf.Tensor, labels: tf.Tensor
  ) -> List[tf.Tensor]:
    """Per split, the mean cosine of the synthetic to the true gradient.

    In inference mode; the true gradient is the per-example loss's gradient
    by ordinary backprop. Empty for `backprop` and `noprop`, which have no
    synthetic gradients.
    """
    if self.config.variant in ("backprop", "noprop"):
      return []
    with tf.GradientTape() as tape:
      activations, h = [], images
      for stage in self.stages:
        h = self._run(stage, h, False)
        activations.append(h)
      losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, h)
    true_gradients = tape.gradient(losses, activations[:-1])
    return [
      _cosine(self.synthetic_gradient(index, h_split, labels), true)
      for index, (h_split, true) in enumerate(
        zip(activations[:-1], true_gradients, strict=True)
      )
    ]


def _variables(stage) -> List[tf.Variable]:
  return [v for part in stage for v in part.trainable_variables]


def _by_id(
  variables: List[tf.Variable], gradients: List[tf.Tensor]
) -> Dict[int, tf.Tensor]:
  return dict(zip(map(id, variables), gradients, strict=True))
