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
code trained the SG module through its own target. Each SG module trains
through the core's step (`training.sobolev_gradients`) on a
`SobolevObjective` (order 0 on the gradient for `direct`, order 0 on the
loss for `critic`, order 1 for `sobolev`, order 1 with value weight 0 for
`vfbn`). A step is applied whole or not at all (`apply_updates`). With
`warmup_steps`, the SG modules train for that many steps before their
gradients reach the lower stages.

A step also logs, per split, the batch's mean cosine between the synthetic
and the true gradient (the top loss backpropagated through the stages).
"""

from typing import Any
from typing import Dict
from typing import List
from typing import NamedTuple
from typing import Tuple

import keras
import sonnet as snt
import tensorflow as tf

from sobolev_tf import distribute_utils
from sobolev_tf import finite_updates
from sobolev_tf import objective as objective_lib
from sobolev_tf import projections
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
  correct = tf.equal(tf.argmax(logits, -1), labels)
  return tf.reduce_mean(tf.cast(correct, tf.float32))


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
    sgs = [
      self._make_sg(config.block_channels[cut], k) for k, cut in enumerate(cuts)
    ]
    self.sg_modules = [module for module, _ in sgs]
    # One objective per module: each split's targets have their own scale.
    self.sg_objectives = [o for _, o in sgs if o is not None]
    self.optimizer = keras.optimizers.Adam(config.learning_rate)
    self.sg_optimizer = keras.optimizers.Adam(config.sg_learning_rate)
    self.guard = finite_updates.StepGuard()
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
    self.sg_optimizer.build(
      [v for m in self.sg_modules if m for v in m.trainable_variables]
    )

  def _make_sg(self, channels: int, index: int) -> Tuple[Any, Any]:
    """The SG module at split `index` and its objective, or `None`s."""
    variant, classes = self.config.variant, self.config.num_classes
    weight, balance = self.config.gradient_weight, self.config.balance
    if variant == "direct":
      # A regression of the synthetic gradient on the true one, as DNI's.
      module = sg_layers.DirectSG(classes, channels, name=f"direct_sg_{index}")
      weights, balance = [weight], "none"
    elif variant == "vfbn":
      module = sg_layers.ScalarCritic(classes, name=f"scalar_critic_{index}")
      weights = [0.0, weight]
    elif variant in ("critic", "sobolev"):
      module = sg_layers.LossCritic(classes, name=f"loss_critic_{index}")
      weights = [1.0] if variant == "critic" else [1.0, weight]
    else:
      return None, None
    return module, objective_lib.SobolevObjective(
      order=len(weights) - 1,
      loss_weights=weights,
      balance=balance,
      balance_floor=self.config.balance_floor,
    )

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
    return projections.vector_jacobian_product(
      lambda a: module(a, labels), h, tf.ones_like(labels, h.dtype)
    )

  def _sg_targets(self, value_target, gradient_target) -> Dict[str, tf.Tensor]:
    """The SG module's targets at a split (detached), by term."""
    variant = self.config.variant
    if variant == "direct":
      return {"value": tf.stop_gradient(gradient_target)}
    targets = {}
    if variant in ("critic", "sobolev"):
      targets["value"] = tf.stop_gradient(value_target)[:, None]
    if variant in ("vfbn", "sobolev"):
      targets["d1"] = tf.stop_gradient(gradient_target)[:, None]
    return targets

  def train_step(self, batch: Tuple[tf.Tensor, tf.Tensor]) -> Dict[str, Any]:
    """One step of every stage and every SG module; returns scalar logs.

    Applied whole or not at all: a batch with NaN or Inf leaves every
    weight and optimiser slot as it was, and `guard` records why.
    """
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
    checks = finite_updates.StepChecks(
      finite_updates.all_finite([images]),
      tf.constant(True),
      tf.math.is_finite(loss),
    )
    variables = self.network.trainable_variables
    sg_updates = []
    if self.config.variant == "backprop":
      gradients = tape.gradient(loss, variables)
    else:
      by_id, sg_updates, checks = self._decoupled_gradients(
        forward, labels, losses, loss, logs, checks
      )
      gradients = [by_id[id(v)] for v in variables]
    del tape, forward
    stages = finite_updates.Update(self.optimizer, gradients, variables)
    finite_updates.apply_updates([stages, *sg_updates], checks, self.guard)
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

  def _true_gradients(self, forward, losses) -> List[tf.Tensor]:
    """The true per-example gradient at every split.

    For the top split's targets and the cosines, by hand across splits.
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
    checks: finite_updates.StepChecks,
  ) -> Tuple[
    Dict[int, tf.Tensor], List[finite_updates.Update], finite_updates.StepChecks
  ]:
    """Gradients of the stages (by variable id) and the SG modules' update.

    The top stage gets the true gradient; from the top split down, each SG
    module trains on its targets and its synthetic gradient trains the
    stage below it, and gives the targets of the split below. Adds each
    split's SG loss and cosine to `logs`, and the SG objectives' checks to
    `checks`.
    """
    true_gradients = self._true_gradients(forward, losses)
    top_variables = _variables(self.stages[-1])
    gradients = _by_id(
      top_variables, forward.tape.gradient(loss, top_variables)
    )
    scale = self._synthetic_scale(
      tf.shape(labels)[0], forward.outputs[-1].dtype
    )
    sg_gradients, sg_variables = [], []
    targets = losses, true_gradients[-1]
    for index in reversed(range(len(self.sg_modules))):
      h_split = tf.stop_gradient(forward.outputs[index])
      synthetic = tf.zeros_like(h_split)
      if self.config.variant != "noprop":
        result, synthetic = self._train_sg_module(
          index, h_split, labels, *targets
        )
        sg_gradients += result.gradients
        sg_variables += result.variables
        checks &= result.checks
        logs[f"sg_loss_{index}"] = (
          result.losses.total / distribute_utils.replica_scale()
        )
        logs[f"cosine_{index}"] = _cosine(synthetic, true_gradients[index])
        targets = self._targets_below(forward, index, labels, synthetic)
      stage_variables = _variables(self.stages[index])
      gradients.update(
        _by_id(
          stage_variables,
          forward.backprop(index, stage_variables, synthetic * scale),
        )
      )
    updates = []
    if sg_variables:
      updates.append(
        finite_updates.Update(self.sg_optimizer, sg_gradients, sg_variables)
      )
    return gradients, updates, checks

  def _targets_below(self, forward, index, labels, synthetic):
    """The value and gradient targets split `index` sends to the one below.

    The gradient is the synthetic one carried through stage `index`; a
    loss critic's value is its own prediction.
    """
    if not index:
      return None, None
    gradient = forward.backprop(index, forward.inputs[index], synthetic)
    value = None
    if self.config.variant in ("critic", "sobolev"):
      value = self.sg_modules[index](
        tf.stop_gradient(forward.outputs[index]), labels
      )
    return value, gradient

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
  ) -> Tuple[training.SobolevGradients, tf.Tensor]:
    """The SG module's step at split `index` (`training.sobolev_gradients`).

    Returns:
      Its losses, gradients and checks, and the module's synthetic gradient
      (detached).
    """
    module = self.sg_modules[index]
    if self.config.variant == "direct":
      fn = lambda h: module(h, labels)  # noqa: E731
    else:
      fn = lambda h: module(h, labels)[:, None]  # noqa: E731  [B, 1]
    result = training.sobolev_gradients(
      self.sg_objectives[index],
      fn,
      h_split,
      self._sg_targets(value_target, gradient_target),
      variables=module.trainable_variables,
    )
    synthetic = tf.stop_gradient(
      self.synthetic_gradient(index, h_split, labels)
    )
    return result, synthetic

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
