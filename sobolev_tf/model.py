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
from sobolev_tf import finite_updates
from sobolev_tf import inputs as inputs_lib
from sobolev_tf import nonfinite
from sobolev_tf import objective as objective_lib
from sobolev_tf import training as training_lib

# The test step draws its directions from this step number, so that
# evaluating twice gives the same numbers.
_TEST_SEED_STEP = -1


@keras.saving.register_keras_serializable(package="sobolev_tf")
class SobolevModel(keras.Model):
  """Trains a Keras model on its values and its input derivatives.

  Wraps any Keras model `m` (Sequential, functional or subclassed) with one
  output. `fit` minimises the Sobolev objective (`SobolevObjective`),
  `evaluate` reports its terms and `predict` returns `m(x)`.

  Args:
    model: the Keras model to train.
    teacher: optional differentiable callable (a Keras model, Sonnet module
      or function) of the model's inputs that supplies all targets. A Keras
      teacher is frozen (`trainable = False`) and saved with the model; any
      other is not saved: set `model.teacher` again after loading.
    seed: base seed of the random directions in stochastic mode.
    derivative_inputs: for a model of several inputs (a dict or a tuple),
      the key or index of the input to differentiate, or a list of them
      (inputs `[B, n_i]`, differentiated as one `[B, sum n_i]`); the other
      inputs pass through. `None` (the default): the model's one input.
    **kwargs: the options of `SobolevConfig` (`order`, `mode`,
      `num_projections`, `loss_weights`, `losses`, `output_transform`,
      `jacobian_mode`, `nonfinite_targets`, `derivative_scales`,
      `balance`, `balance_decay`, `balance_floor`), and `keras.Model`
      arguments (`name`).

  Raises:
    ValueError: for an invalid option, a `model` that is not a Keras layer,
      has several outputs or normalises over the batch while training.

  Data: `x` is the input batch `[B, in...]` (or the model's dict or tuple
  of inputs); `y` is a tensor (the value target), a tuple `(value, d1[,
  d2])` or a dict with the keys of `sobolev_tf.target_data` (full
  derivatives, derivatives along given directions, masks of missing
  entries), derivatives being with respect to the differentiated input.
  With a `teacher`, only `x` is given. Sample weights go in as usual, or
  as a dict keyed by term.

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
    derivative_inputs: inputs_lib.Names = None,
    **kwargs,
  ):
    options = {
      name: kwargs.pop(name)
      for name in config_lib.SobolevConfig.field_names()
      if name in kwargs
    }
    super().__init__(**kwargs)
    inputs_lib.check_model(model)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
      raise ValueError(
        "Received an invalid value for `seed`, expected an integer. "
        f"Received: seed={seed!r}"
      )
    self.model = model
    self.derivative_inputs = inputs_lib.DerivativeInputs(derivative_inputs)
    self.objective = objective_lib.SobolevObjective(**options)
    self.balance = self.objective.balance
    self.teacher = teacher
    self.seed = int(seed)
    self._make_trackers()
    # A tf.Module, not a Keras weight: a transient record, not saved.
    self.guard = finite_updates.StepGuard()

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
    self.objective.check_input_shape(
      self.derivative_inputs.input_shape(input_shape)
    )
    if not self.model.built:
      self.model.build(input_shape)
    if isinstance(self.teacher, keras.layers.Layer) and not self.teacher.built:
      self.teacher.build(input_shape)
    self.built = True

  def _step_arguments(self, data, step, training: bool) -> Dict[str, Any]:
    """The objective's arguments for a batch: the differentiated input."""
    inputs, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x, rebuild = self.derivative_inputs.split(inputs)
    teacher = None
    if self.teacher is not None:
      teacher = lambda z: self.teacher(rebuild(z))  # noqa: E731
    return {
      "fn": lambda z: self(rebuild(z), training=training),
      "x": x,
      "targets": y,
      "inputs": inputs,
      "teacher": teacher,
      "sample_weight": sample_weight,
      "seed": distribute_utils.step_seed(self.seed, step),
    }

  def train_step(self, data):
    """One optimiser step on the Sobolev objective, skipped if not finite."""
    arguments = self._step_arguments(data, self.optimizer.iterations, True)
    step = training_lib.sobolev_train_step(
      self.objective,
      **arguments,
      optimizer=self.optimizer,
      variables=self.trainable_weights,
      guard=self.guard,
    )
    return self._update_metrics(arguments, step)

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
      self.train_function = execution.FusedOnFirstCall(
        self, self.train_function, getattr(self, "fuse_steps", "auto")
      )
    return self.train_function

  def test_step(self, data):
    """Updates the metrics with the objective's terms on one batch."""
    arguments = self._step_arguments(data, _TEST_SEED_STEP, False)
    step = training_lib.sobolev_test_step(
      self.objective,
      **arguments,
      guard=self.guard,
      optimizer=getattr(self, "optimizer", None),
    )
    return self._update_metrics(arguments, step)

  def _update_metrics(self, arguments, step) -> Dict[str, tf.Tensor]:
    losses = step.losses
    keys = list(losses.terms)
    logs = training_lib.step_logs(losses, balanced=True)
    used = tf.cast(step.finite & tf.math.is_finite(losses.total), tf.float32)
    if keys:
      used *= tf.cast(
        tf.reduce_any([losses.entries[k] > 0 for k in keys]), tf.float32
      )
    replicas = float(distribute_utils.num_replicas())
    examples = tf.cast(tf.shape(arguments["x"])[0], tf.float32)
    for metric in self.metrics:
      if metric.name == "loss":
        metric.update_state(
          _where(used, logs["loss"]), sample_weight=examples * used
        )
    for key in keys:
      weight = used * tf.cast(losses.entries[key], tf.float32) / replicas
      self.term_trackers[key].update_state(
        _where(used, logs[f"{key}_loss"]), sample_weight=weight
      )
      if key in self.normalized_trackers:
        self.normalized_trackers[key].update_state(
          _where(used, logs[f"{key}_normalized_loss"]), sample_weight=weight
        )
      if key in self.entry_trackers:
        self.entry_trackers[key].update_state(weight)
    if losses.target_value is None:
      return self.get_metrics_result()
    return self.compute_metrics(
      arguments["inputs"],
      losses.target_value,
      losses.prediction,
      sample_weight=_example_weight_or_skip(
        losses.sample_weight, used, arguments["x"]
      ),
    )

  def fit(self, x=None, y=None, *args, **kwargs):
    """`keras.Model.fit`, with in-memory data checked and steps guarded."""
    validation = kwargs.get("validation_data")
    if not isinstance(validation, tuple) or len(validation) < 2:
      validation = None
    nonfinite.check_data(self.objective.config, x, y, validation)
    kwargs["callbacks"] = finite_updates.with_guard_callback(
      kwargs.get("callbacks"), self.guard
    )
    return super().fit(x, y, *args, **kwargs)

  def evaluate(self, x=None, y=None, *args, **kwargs):
    """`keras.Model.evaluate`, with in-memory data checked."""
    nonfinite.check_data(self.objective.config, x, y)
    kwargs["callbacks"] = finite_updates.with_guard_callback(
      kwargs.get("callbacks"), self.guard
    )
    return super().evaluate(x, y, *args, **kwargs)

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
      "derivative_inputs": self.derivative_inputs.get_config(),
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


def _where(condition: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
  """`value` where `condition` (0/1 float), else 0 (never NaN times 0)."""
  value = tf.cast(value, tf.float32)
  return tf.where(condition > 0, value, tf.zeros_like(value))


def _example_weight_or_skip(weight, used, x):
  if weight is None:
    return tf.fill(tf.shape(x)[:1], used)
  return weight * used
