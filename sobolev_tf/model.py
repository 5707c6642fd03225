"""`SobolevModel`: Sobolev Training with `compile`, `fit` and `evaluate`."""

from typing import Any
from typing import Callable
from typing import Dict
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import config as config_lib
from sobolev_tf import distribute_utils
from sobolev_tf import execution
from sobolev_tf import objective as objective_lib
from sobolev_tf import targets as targets_lib
from sobolev_tf import training as training_lib

# The test step draws its directions from this step number, so that
# evaluating twice gives the same numbers.
_TEST_SEED_STEP = -1


@keras.saving.register_keras_serializable(package="sobolev_tf")
class SobolevModel(keras.Model):
  """Trains a Keras model on its values and its input derivatives.

  Wraps any Keras model `m` (Sequential, functional or subclassed) with one
  floating-point input and one output. `fit` minimises the Sobolev
  objective (`SobolevObjective`), `evaluate` reports its terms and
  `predict` returns `m(x)`.

  Args:
    model: the Keras model to train; its single input is differentiated.
    teacher: optional differentiable callable (a Keras model, Sonnet module
      or function) that supplies all targets. A Keras teacher is frozen
      (`trainable = False`) and saved with the model; any other is not
      saved: set `model.teacher` again after loading.
    seed: base seed of the random directions in stochastic mode.
    **kwargs: the options of `SobolevConfig` (`order`, `mode`,
      `num_projections`, `loss_weights`, `losses`, `output_transform`,
      `jacobian_mode`, `nonfinite_targets`, `derivative_scales`,
      `balance`, `balance_decay`), and `keras.Model` arguments (`name`).

  Raises:
    ValueError: for an invalid option, a `model` that is not a Keras layer,
      has several outputs or normalises over the batch while training.

  Data: `x` is the input batch `[B, in...]`; `y` is a tensor (the value
  target), a tuple `(value, d1[, d2])` or a dict with the keys of
  `sobolev_tf.targets` (full derivatives, derivatives along given
  directions, masks of missing entries). With a `teacher`, only `x` is
  given. Sample weights go in as usual, or as a dict keyed by term.

  Metrics: `loss` (the weighted, balanced total), each term in the data's
  units (`value_loss`, `d1_loss`, `d2_loss`), the balanced terms beside
  them (`*_normalized_loss`), with `nonfinite_targets` `"drop"` or
  `"missing"` the entries each derivative term used (`d1_entries`), plus
  any metric given to `compile`, on the value. Callbacks that monitor a
  term need `mode="min"`.

  Non-finite steps: a training step whose input, targets (under
  `nonfinite_targets="raise"`), loss or gradients hold NaN or Inf is not
  applied, in every execution mode, XLA included; `fit` and `evaluate`
  then raise a `ValueError` naming the cause.

  Example:
  ```python
  net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(256, "relu"),
                          keras.layers.Dense(256, "relu"),
                          keras.layers.Dense(1)])
  model = sobolev_tf.SobolevModel(net, order=1)
  model.compile(optimizer="adam")
  model.fit(x, {"value": f_x, "d1": grad_f_x}, epochs=10)
  ```

  Execution: compiled with `jit_compile=True` and `steps_per_execution=K`
  on one device, each execution's K steps run as one XLA program rather
  than K programs (the same steps, weights and metrics; much faster for
  small networks). `compile(fuse_steps=...)` chooses: `"auto"` (the
  default) fuses except for convolutional networks on a CPU, which XLA:CPU
  runs slower inside a loop; `True` always, `False` never.

  Distribution: create it under `strategy.scope()`. Each term is averaged
  over the global batch as a Keras loss would be; in stochastic mode each
  replica draws its own directions.
  """

  def __init__(
    self,
    model: keras.Model,
    *,
    teacher: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
    seed: int = 0,
    **kwargs,
  ):
    options = {
      name: kwargs.pop(name)
      for name in config_lib.SobolevConfig.field_names()
      if name in kwargs
    }
    super().__init__(**kwargs)
    _check_inner_model(model)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
      raise ValueError(
        "Received an invalid value for `seed`, expected an integer. "
        f"Received: seed={seed!r}"
      )
    self.model = model
    self.objective = objective_lib.SobolevObjective(**options)
    self.balance = self.objective.balance
    self.teacher = teacher
    self.seed = int(seed)
    self._make_trackers()
    # A tf.Module, not a Keras weight: a transient record, not saved.
    self.guard = training_lib.StepGuard()

  def _make_trackers(self) -> None:
    config = self.objective.config
    keys = config.active_keys
    self.term_trackers = {
      key: keras.metrics.Mean(name=f"{key}_loss") for key in keys
    }
    self.normalized_trackers = {}
    if config.balance != "none":
      self.normalized_trackers = {
        key: keras.metrics.Mean(name=f"{key}_normalized_loss") for key in keys
      }
    self.entry_trackers = {}
    if config.nonfinite_targets != "raise":
      self.entry_trackers = {
        key: keras.metrics.Sum(name=f"{key}_entries")
        for key in keys
        if key != "value"
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
    self.objective.check_input_shape(input_shape)
    if not self.model.built:
      self.model.build(input_shape)
    if isinstance(self.teacher, keras.layers.Layer) and not self.teacher.built:
      self.teacher.build(input_shape)
    self.built = True

  @property
  def _loss_scale(self) -> Optional[tf.Variable]:
    """The loss scale of a float16 mixed-precision optimiser, or `None`."""
    optimizer = getattr(self, "optimizer", None)
    if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
      return None
    if optimizer.built:
      return optimizer.dynamic_scale
    return tf.constant(optimizer.initial_scale, tf.float32)

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
      seed=distribute_utils.step_seed(self.seed, step),
      training=training,
      derivative_scale=self._loss_scale,
    )

  @training_lib.xla_cpu_matmul_gradients()
  def train_step(self, data):
    """One optimiser step on the Sobolev objective, skipped if not finite."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    with tf.GradientTape() as tape:
      losses = self._sobolev_losses(
        x, y, sample_weight, self.optimizer.iterations, training=True
      )
      scaled_total = self.optimizer.scale_loss(losses.total)
    gradients, variables = training_lib.connected(
      tape.gradient(scaled_total, self.trainable_weights),
      self.trainable_weights,
    )
    x_finite = training_lib.all_finite([x])
    loss_finite = tf.math.is_finite(losses.total)
    # An overflow of the scaled float16 passes is the loss-scale optimiser's
    # to handle: it skips the step and halves the scale.
    if self._loss_scale is not None:
      loss_finite = tf.constant(True)
    finite, gradients_finite = training_lib.apply_if_finite(
      self.optimizer,
      gradients,
      variables,
      x_finite & losses.targets_finite & loss_finite,
      check_gradients=self._loss_scale is None,
    )
    self.guard.record(
      finite, x_finite, losses.targets_finite, loss_finite, gradients_finite
    )
    return self._update_metrics(
      x, losses, finite & tf.math.is_finite(losses.total)
    )

  def compile(self, *args, fuse_steps: Any = "auto", **kwargs):
    """`keras.Model.compile`, and whether XLA executions run fused.

    Args:
      *args: `keras.Model.compile`'s.
      fuse_steps: `"auto"`, `True` or `False`: whether, with
        `jit_compile=True` and `steps_per_execution > 1` on one device,
        each execution's steps run as one XLA program (see the class
        docstring).
      **kwargs: `keras.Model.compile`'s.
    """
    execution.check_fuse_steps(fuse_steps)
    self.fuse_steps = fuse_steps
    super().compile(*args, **kwargs)

  def get_compile_config(self) -> Optional[Dict[str, Any]]:
    """Keras's compile config, with `fuse_steps`."""
    config = super().get_compile_config()
    if config is not None:
      config["fuse_steps"] = getattr(self, "fuse_steps", "auto")
    return config

  def compile_from_config(self, config: Dict[str, Any]) -> None:
    """Compiles as `get_compile_config` recorded, `fuse_steps` included.

    Keras's own skips a subclass whose `compile` is overridden.
    """
    config = dict(config)
    fuse_steps = config.pop("fuse_steps", "auto")
    self.compile(
      **keras.saving.deserialize_keras_object(config), fuse_steps=fuse_steps
    )
    if self.built:
      self.optimizer.build(self.trainable_variables)

  def make_train_function(self, force=False):
    """Keras's train function, fused by `execution.FusedSteps` if chosen."""
    if self.train_function is not None and not force:
      return self.train_function
    super().make_train_function(force=True)
    if not self.run_eagerly:
      self.train_function = _FusedOnFirstCall(self, self.train_function)
    return self.train_function

  def test_step(self, data):
    """Updates the metrics with the objective's terms on one batch."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    losses = self._sobolev_losses(
      x, y, sample_weight, _TEST_SEED_STEP, training=False
    )
    x_finite = training_lib.all_finite([x])
    loss_finite = tf.math.is_finite(losses.total)
    if self._loss_scale is not None:
      loss_finite = tf.constant(True)
    finite = training_lib.finite_everywhere(
      x_finite & losses.targets_finite & loss_finite
    )
    self.guard.record(
      finite, x_finite, losses.targets_finite, loss_finite, tf.constant(True)
    )
    return self._update_metrics(
      x, losses, finite & tf.math.is_finite(losses.total)
    )

  def _update_metrics(self, x, losses, finite) -> Dict[str, tf.Tensor]:
    keys = list(losses.terms)
    values = distribute_utils.all_reduce_sum(
      [losses.total]
      + [losses.terms[k] for k in keys]
      + [losses.normalized[k] for k in keys]
    )
    total, terms, normalized = (
      values[0],
      values[1 : 1 + len(keys)],
      values[1 + len(keys) :],
    )
    replicas = float(distribute_utils.num_replicas())
    examples = tf.cast(tf.shape(x)[0], tf.float32)
    used = tf.cast(finite, tf.float32)
    if keys:
      used *= tf.cast(
        tf.reduce_any([losses.entries[k] > 0 for k in keys]), tf.float32
      )
    for metric in self.metrics:
      if metric.name == "loss":
        metric.update_state(_where(used, total), sample_weight=examples * used)
    for index, key in enumerate(keys):
      weight = used * tf.cast(losses.entries[key], tf.float32) / replicas
      self.term_trackers[key].update_state(
        _where(used, terms[index]), sample_weight=weight
      )
      if key in self.normalized_trackers:
        self.normalized_trackers[key].update_state(
          _where(used, normalized[index]), sample_weight=weight
        )
      if key in self.entry_trackers:
        self.entry_trackers[key].update_state(
          used * tf.cast(losses.entries[key], tf.float32) / replicas
        )
    if losses.target_value is None:
      return self.get_metrics_result()
    return self.compute_metrics(
      x,
      losses.target_value,
      losses.prediction,
      sample_weight=_example_weight_or_skip(losses.sample_weight, used, x),
    )

  def fit(self, x=None, y=None, *args, **kwargs):
    """`keras.Model.fit`, with in-memory data checked and steps guarded."""
    _check_arrays(x, y, "y", self.objective.config)
    validation_data = kwargs.get("validation_data")
    if isinstance(validation_data, tuple) and len(validation_data) > 1:
      _check_arrays(
        validation_data[0],
        validation_data[1],
        "validation_data",
        self.objective.config,
      )
    kwargs["callbacks"] = _with_guard(kwargs.get("callbacks"))
    return super().fit(x, y, *args, **kwargs)

  def evaluate(self, x=None, y=None, *args, **kwargs):
    """`keras.Model.evaluate`, with in-memory data checked."""
    _check_arrays(x, y, "y", self.objective.config)
    kwargs["callbacks"] = _with_guard(kwargs.get("callbacks"))
    return super().evaluate(x, y, *args, **kwargs)

  def raise_if_nonfinite(self, when: str = "") -> None:
    """Raises a `ValueError` if a step was skipped for NaN or Inf.

    The launchers' loop calls it after each `tf.function` call; `fit` and
    `evaluate` through a callback (see `training.StepGuard`).

    Args:
      when: where in training, for the message (e.g. `"after step 40 "`).

    Raises:
      ValueError: naming the cause.
    """
    self.guard.raise_if_skipped(when)

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
    names = config_lib.SobolevConfig.field_names()
    options = config_lib.SobolevConfig.from_config(
      {k: config.pop(k) for k in list(config) if k in names}
    )
    instance = cls(
      model,
      teacher=teacher,
      **config,
      **{name: getattr(options, name) for name in names},
    )
    instance.trainable = trainable
    return instance


class _FusedOnFirstCall:
  """A train function that picks fused or Keras's steps on its first batch.

  The choice needs the data's element spec, known at the first call.
  """

  def __init__(self, model: SobolevModel, keras_function):
    self._model = model
    self._keras_function = keras_function
    self._function = None

  def __call__(self, iterator):
    if not isinstance(
      iterator, (tf.data.Iterator, tf.distribute.DistributedIterator)
    ):
      return self._keras_function(iterator)
    if self._function is None:
      model = self._model
      fused = execution.fused_steps(
        getattr(model, "fuse_steps", "auto"),
        lambda batch: model.distribute_strategy.run(
          model.train_step, args=(batch,)
        ),
        model.steps_per_execution,
        iterator.element_spec,
        model.distribute_strategy.num_replicas_in_sync,
        bool(model.jit_compile),
      )
      self._function = fused or self._keras_function
    return self._function(iterator)


def _where(condition: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
  """`value` where `condition` (0/1 float), else 0 (never NaN times 0)."""
  value = tf.cast(value, tf.float32)
  return tf.where(condition > 0, value, tf.zeros_like(value))


def _example_weight_or_skip(weight, used, x):
  if weight is None:
    return tf.fill(tf.shape(x)[:1], used)
  return weight * used


class _NonfiniteGuard(keras.callbacks.Callback):
  """Raises from the host after a step that was not applied."""

  def on_train_batch_end(self, batch, logs=None):
    self.model.raise_if_nonfinite(f"in training batch {batch} ")

  def on_test_batch_end(self, batch, logs=None):
    self.model.raise_if_nonfinite(f"in evaluation batch {batch} ")


def _with_guard(callbacks):
  if isinstance(callbacks, keras.callbacks.CallbackList):
    return callbacks  # fit's own list, passed on to its validation
  callbacks = list(callbacks or [])
  if not any(isinstance(c, _NonfiniteGuard) for c in callbacks):
    callbacks.append(_NonfiniteGuard())
  return callbacks


def _check_inner_model(model) -> None:
  if not isinstance(model, keras.layers.Layer):
    raise ValueError(
      "Received an invalid value for `model`, expected a Keras model or "
      f"layer. Received: model={model!r}"
    )
  outputs = getattr(model, "outputs", None)
  if outputs is not None and len(outputs) > 1:
    raise ValueError(
      "Received a `model` with several outputs "
      f"({len(outputs)}); SobolevModel differentiates one output tensor. "
      "Concatenate them into one (keras.layers.Concatenate)."
    )
  batch_norms = [
    layer.name
    for layer in model._flatten_layers(include_self=True, recursive=True)
    if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
  ]
  if batch_norms:
    raise ValueError(
      f"Received a `model` with trainable BatchNormalization layers "
      f"{batch_norms}: in training they normalise over the batch, so an "
      "example's output depends on the others and its input derivatives "
      "are not its own. Freeze them (`layer.trainable = False` runs them in "
      "inference mode) or use a per-example normalisation "
      "(LayerNormalization, GroupNormalization)."
    )


def _check_arrays(x, y, argument: str, config: config_lib.SobolevConfig):
  """Fails early on empty or non-finite in-memory data.

  Inside the compiled step, non-finite data skips the step and raises from
  the host after it; NumPy data can be checked before training starts. Only
  what counts is checked: targets of active terms, outside masked entries.
  """
  if isinstance(x, np.ndarray):
    if x.size == 0 or len(x) == 0:
      raise ValueError(
        f"Received empty inputs x of shape {x.shape}; expected at least one "
        "example."
      )
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
      bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
      raise ValueError(
        f"Inputs x hold NaN or Inf in {bad.size} of {len(x)} examples "
        f"(first at index {bad[0]}); derivatives there are undefined."
      )
  if config.nonfinite_targets != "raise" or y is None:
    return
  targets = targets_lib.as_dict(y)
  for k in config.active_orders:
    for key in (
      config_lib.term_key(k),
      targets_lib.DIRECTIONAL.get(k),
      targets_lib.DIRECTIONS.get(k),
    ):
      _check_finite(targets, key, targets_lib.MASKS[k], argument)


def _check_finite(targets, key, mask_key, argument) -> None:
  value = targets.get(key)
  if not isinstance(value, np.ndarray) or not np.issubdtype(
    value.dtype, np.floating
  ):
    return
  if value.ndim == 0 or len(value) == 0:
    return
  finite = np.isfinite(value)
  mask = targets.get(mask_key)
  if (
    key != mask_key
    and isinstance(mask, np.ndarray)
    and mask.shape == value.shape
  ):
    finite |= mask == 0
  finite = finite.reshape(len(value), -1).all(axis=1)
  if not finite.all():
    bad = np.flatnonzero(~finite)
    raise ValueError(
      f"Target {argument}[{key!r}] holds NaN or Inf in {bad.size} of "
      f"{finite.size} examples (first at index {bad[0]}). Clean the "
      "data or pass nonfinite_targets='drop' (skip those examples) or "
      "'missing' (skip those entries) to SobolevModel."
    )
