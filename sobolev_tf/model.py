"""`SobolevModel`: Sobolev Training with `compile`, `fit` and `evaluate`."""

from typing import Any
from typing import Callable
from typing import Dict
from typing import List
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Union

import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import objective as objective_lib

# The test step draws its directions from this step number, so that
# evaluating twice gives the same numbers.
_TEST_SEED_STEP = -1


def _replica_id() -> Union[int, tf.Tensor]:
  context = tf.distribute.get_replica_context()
  return 0 if context is None else context.replica_id_in_sync_group


def _clip_across_replicas(
  optimizer: keras.optimizers.Optimizer, gradients: List[tf.Tensor]
) -> List[tf.Tensor]:
  """Clips the sum of the replicas' gradients, as one replica would.

  Keras 3's TensorFlow optimiser clips each replica's gradient and then sums
  them, so with several replicas a clipping optimiser (`clipnorm`,
  `global_clipnorm` or `clipvalue`) steps differently than on one device.
  With several replicas and clipping on, this sums the gradients first,
  clips the sum with the optimiser's own setting and gives each replica a
  `1 / num_replicas` share: the optimiser's clipping leaves the shares alone
  (each is within the limit divided by the number of replicas) and its sum
  restores the clipped total.

  Args:
    optimizer: the model's optimiser.
    gradients: this replica's gradients.

  Returns:
    This replica's share of the clipped total, or `gradients` unchanged
    with one replica or no clipping.
  """
  context = tf.distribute.get_replica_context()
  replicas = context.num_replicas_in_sync if context else 1
  if replicas == 1 or not (
    optimizer.clipnorm or optimizer.global_clipnorm or optimizer.clipvalue
  ):
    return gradients
  total = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
  # The order of keras.optimizers.Optimizer._clip_gradients.
  if optimizer.clipnorm:
    total = [tf.clip_by_norm(g, optimizer.clipnorm) for g in total]
  elif optimizer.global_clipnorm:
    total, _ = tf.clip_by_global_norm(total, optimizer.global_clipnorm)
  else:
    limit = optimizer.clipvalue
    total = [tf.clip_by_value(g, -limit, limit) for g in total]
  return [g / replicas for g in total]


def _unscale_for_distribution(value: tf.Tensor) -> tf.Tensor:
  """Undoes the `1 / num_replicas` a Keras loss applies inside a replica."""
  return value * tf.cast(
    tf.distribute.get_strategy().num_replicas_in_sync, value.dtype
  )


@keras.saving.register_keras_serializable(package="sobolev_tf")
class SobolevModel(keras.Model):
  """Trains a Keras model on its values and its input derivatives.

  Wraps any Keras model `m` (Sequential, functional or subclassed) with one
  floating-point input. `fit` minimises

      w0 l0(m(x), f(x)) + w1 l1(D_x m(x), D_x f(x)) + w2 l2(D2_x m, D2_x f)

  (see `SobolevObjective` for every option), `evaluate` reports the same terms
  and `predict` returns `m(x)`.

  Data: `x` is the input batch `[B, in...]`; `y` is a dict with keys among
  `"value"` `[B, out...]`, `"d1"` `[B, out..., in...]` and `"d2"`
  `[B, out..., in..., in...]` (a bare array is the value), holding the
  target's values and full derivatives. With a `teacher`, only `x` is given
  and the teacher supplies every target, in stochastic mode projected on the
  same random directions as the model, so that no full Jacobian is built.
  Sample weights go in as usual: `fit(x, y, sample_weight=w)`.

  Metrics: `loss` (the weighted total), and `value_loss`, `d1_loss`,
  `d2_loss` for each active term, plus any metric given to `compile`, which
  compares the value target with the (transformed) prediction. They reach the
  `fit` history and, through `keras.callbacks.TensorBoard`, TensorBoard.
  Callbacks that monitor a term need `mode="min"` (Keras infers the direction
  only for `loss` and compiled metrics).

  Example:
  ```python
  net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(256, "relu"),
                          keras.layers.Dense(256, "relu"),
                          keras.layers.Dense(1)])
  model = sobolev_tf.SobolevModel(net, order=1)
  model.compile(optimizer="adam")
  model.fit(x, {"value": f_x, "d1": grad_f_x}, epochs=10)
  ```

  Distribution: create it under `strategy.scope()`. Each term is averaged
  over the global batch as a Keras loss would be; in stochastic mode each
  replica draws its own directions.
  """

  def __init__(
    self,
    model: keras.Model,
    *,
    order: int = 1,
    mode: str = "full",
    num_projections: int = 1,
    loss_weights: Optional[Sequence[float]] = None,
    losses: Any = "mean_squared_error",
    output_transform: Union[None, str, Callable[[tf.Tensor], tf.Tensor]] = None,
    jacobian_mode: str = "auto",
    nonfinite_targets: str = "raise",
    derivative_scales: Optional[Mapping[str, Any]] = None,
    teacher: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
    seed: int = 0,
    **kwargs,
  ):
    """Wraps `model` for Sobolev Training.

    Args:
      model: the Keras model to train; its single input is differentiated.
      order: highest derivative order, 0, 1 or 2.
      mode: `"full"` or `"stochastic"` (random projections).
      num_projections: directions per example and step in stochastic mode.
      loss_weights: weight of the value, d1 and d2 terms (default ones).
      losses: one loss or one per order (default mean squared error).
      output_transform: applied to outputs before the loss and derivatives,
        e.g. `"log_softmax"`.
      jacobian_mode: `"auto"`, `"reverse"` or `"forward"` (full mode).
      nonfinite_targets: `"raise"` or `"drop"` for NaN/Inf array targets.
      derivative_scales: optional per-input-dimension scales `{"d1": s}`.
      teacher: optional differentiable callable (a Keras model, Sonnet
        module or function) that supplies all targets. A Keras teacher is
        frozen (`trainable = False`) and saved with the model; any other is
        not saved: set `model.teacher` again after loading.
      seed: base seed of the random directions in stochastic mode.
      **kwargs: `keras.Model` arguments such as `name`.

    Raises:
      ValueError: for an invalid configuration (see `SobolevObjective`) or a
        `model` that is not a Keras layer.
    """
    super().__init__(**kwargs)
    if not isinstance(model, keras.layers.Layer):
      raise ValueError(
        "Received an invalid value for `model`, expected a Keras model or "
        f"layer. Received: model={model!r}"
      )
    self.model = model
    self.objective = objective_lib.SobolevObjective(
      order=order,
      mode=mode,
      num_projections=num_projections,
      loss_weights=loss_weights,
      losses=losses,
      output_transform=output_transform,
      jacobian_mode=jacobian_mode,
      nonfinite_targets=nonfinite_targets,
      derivative_scales=derivative_scales,
    )
    self.teacher = teacher
    self.seed = int(seed)
    self.term_trackers = {
      key: keras.metrics.Mean(name=f"{key}_loss")
      for key in self.objective.active_keys
    }

  @property
  def teacher(self) -> Optional[Callable[[tf.Tensor], tf.Tensor]]:
    """The callable that supplies the targets, or `None` for array targets."""
    return self._teacher

  @teacher.setter
  def teacher(self, value: Optional[Callable[[tf.Tensor], tf.Tensor]]):
    if value is not None and not callable(value):
      raise ValueError(
        "Received an invalid value for `teacher`, expected a callable "
        f"[B, in...] -> [B, out...] or None. Received: teacher={value!r}"
      )
    if isinstance(value, keras.layers.Layer):
      value.trainable = False
    self._teacher = value

  def call(self, inputs, training=None):
    """Returns the wrapped model's output."""
    return self.model(inputs, training=training)

  def build(self, input_shape):
    """Builds the wrapped model and a Keras teacher."""
    if not self.model.built:
      self.model.build(input_shape)
    if isinstance(self.teacher, keras.layers.Layer) and not self.teacher.built:
      self.teacher.build(input_shape)
    self.built = True

  def _step_seed(self, step: tf.Tensor) -> tf.Tensor:
    seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
    return tf.random.experimental.stateless_fold_in(seed, _replica_id())

  def _sobolev_losses(self, x, y, sample_weight, step, training):
    if not tf.is_tensor(x):
      raise ValueError(
        "SobolevModel differentiates with respect to a single input tensor. "
        f"Received: x={x!r}"
      )
    return self.objective(
      lambda inputs: self(inputs, training=training),
      x,
      y,
      teacher=self.teacher,
      sample_weight=sample_weight,
      seed=self._step_seed(step),
    )

  def train_step(self, data):
    """One optimiser step on the Sobolev objective."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    with tf.GradientTape() as tape:
      losses = self._sobolev_losses(
        x, y, sample_weight, self.optimizer.iterations, training=True
      )
      scaled_total = self.optimizer.scale_loss(losses.total)
    gradients = tape.gradient(
      scaled_total, self.trainable_weights, unconnected_gradients="zero"
    )
    gradients = _clip_across_replicas(self.optimizer, gradients)
    self.optimizer.apply(gradients, self.trainable_weights)
    return self._update_metrics(x, losses)

  def test_step(self, data):
    """Updates the metrics with the objective's terms on one batch."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    losses = self._sobolev_losses(
      x, y, sample_weight, _TEST_SEED_STEP, training=False
    )
    return self._update_metrics(x, losses)

  def _update_metrics(self, x, losses) -> Dict[str, tf.Tensor]:
    batch_size = tf.shape(x)[0]
    for metric in self.metrics:
      if metric.name == "loss":
        metric.update_state(
          _unscale_for_distribution(losses.total), sample_weight=batch_size
        )
    for key, tracker in self.term_trackers.items():
      tracker.update_state(
        _unscale_for_distribution(losses.terms[key]), sample_weight=batch_size
      )
    if losses.target_value is None:
      return self.get_metrics_result()
    return self.compute_metrics(
      x,
      losses.target_value,
      losses.prediction,
      sample_weight=losses.sample_weight,
    )

  def fit(self, x=None, y=None, *args, **kwargs):
    """`keras.Model.fit`, after checking in-memory targets for NaN/Inf."""
    self._check_array_targets(y, "y")
    validation_data = kwargs.get("validation_data")
    if isinstance(validation_data, tuple) and len(validation_data) > 1:
      self._check_array_targets(validation_data[1], "validation_data")
    return super().fit(x, y, *args, **kwargs)

  def evaluate(self, x=None, y=None, *args, **kwargs):
    """`keras.Model.evaluate`, after checking in-memory targets for NaN/Inf."""
    self._check_array_targets(y, "y")
    return super().evaluate(x, y, *args, **kwargs)

  def _check_array_targets(self, y, argument: str) -> None:
    """Fails early on NaN/Inf in NumPy targets when the policy is `raise`.

    Inside the compiled step the check is a graph assertion, which XLA
    drops; in-memory data can be checked here, before training starts.
    """
    if self.objective.nonfinite_targets != "raise" or y is None:
      return
    targets = y if isinstance(y, Mapping) else {"value": y}
    for key, value in targets.items():
      if not isinstance(value, np.ndarray) or not np.issubdtype(
        value.dtype, np.floating
      ):
        continue
      finite = np.isfinite(value.reshape(len(value), -1)).all(axis=1)
      if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
          f"Target {argument}[{key!r}] holds NaN or Inf in {bad.size} of "
          f"{finite.size} examples (first at index {bad[0]}). Clean the "
          "data or pass nonfinite_targets='drop' to SobolevModel to give "
          "such examples zero weight."
        )

  def get_config(self) -> Dict[str, Any]:
    """The wrapped model, a Keras teacher, the seed and the objective."""
    teacher = None
    if isinstance(self.teacher, keras.layers.Layer):
      teacher = keras.saving.serialize_keras_object(self.teacher)
    return {
      "name": self.name,
      "trainable": self.trainable,
      "model": keras.saving.serialize_keras_object(self.model),
      "teacher": teacher,
      "seed": self.seed,
      **self.objective.get_config(),
    }

  @classmethod
  def from_config(cls, config: Dict[str, Any], custom_objects=None):
    """Rebuilds a model saved with `get_config`."""
    config = dict(config)
    model = keras.saving.deserialize_keras_object(
      config.pop("model"), custom_objects=custom_objects
    )
    teacher = config.pop("teacher", None)
    if teacher is not None:
      teacher = keras.saving.deserialize_keras_object(
        teacher, custom_objects=custom_objects
      )
    trainable = config.pop("trainable", True)
    model_kwargs = {key: config.pop(key) for key in ("name", "seed")}
    instance = cls(
      model,
      teacher=teacher,
      **model_kwargs,
      **objective_lib.SobolevObjective.kwargs_from_config(config),
    )
    instance.trainable = trainable
    return instance
