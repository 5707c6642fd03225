"""The regression experiment's network, model, optimiser and scores.

* `build_network`: the paper's MLP between standardisation layers, so that
  it works in normalised units while mapping original inputs to original
  outputs.
* `build_model` and `build_optimizer`: the `SobolevModel` of a run (the
  paper's L2 terms, the run's balance) and Adam with cosine decay
  (`learning_rate_schedule`).
* `model_key` and `reset`: runs of a sweep whose models have the same
  shapes, objective and optimiser share one model, which `reset` gives
  each run's initial state (weights, standardisation, optimiser, balance),
  so that its compiled programs serve every run: the same numbers as a
  model built anew (tested), without tracing and compiling again.
* `Scorer`: test errors of values and gradients, one compiled program (and
  the values alone, another).
"""

import random
from typing import Dict
from typing import Hashable
from typing import Tuple

import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import derivatives
from sobolev_tf import model as model_lib
from sobolev_tf.tasks import functions
from sobolev_tf.tasks import regression


@keras.saving.register_keras_serializable(package="sobolev_tf")
class Standardize(keras.layers.Layer):
  """`(x - mean) / scale` per feature, or `mean + x * scale` with `invert`.

  Keras's `Normalization` bakes given statistics into its computation;
  here they are non-trainable weights, which a new run assigns.

  Args:
    mean: the features' means, `[features]` or a scalar.
    scale: their standard deviations (floored at 1e-7, as Keras's).
    invert: whether to undo the standardisation.
    **kwargs: `keras.layers.Layer` arguments.
  """

  def __init__(self, mean=0.0, scale=1.0, invert=False, **kwargs):
    super().__init__(**kwargs)
    self.initial_mean = np.asarray(mean, np.float32).reshape(-1).tolist()
    self.initial_scale = np.asarray(scale, np.float32).reshape(-1).tolist()
    self.invert = bool(invert)

  def build(self, input_shape):
    """The mean and the scale, `[features]`."""
    features = input_shape[-1]
    self.mean = self.add_weight(
      shape=(features,),
      initializer=keras.initializers.Constant(self.initial_mean),
      trainable=False,
      name="mean",
    )
    self.scale = self.add_weight(
      shape=(features,),
      initializer=keras.initializers.Constant(self.initial_scale),
      trainable=False,
      name="scale",
    )

  def assign(self, mean, scale) -> None:
    """Sets the statistics."""
    features = self.mean.shape
    self.mean.assign(np.broadcast_to(np.float32(mean), features))
    self.scale.assign(np.broadcast_to(np.float32(scale), features))

  def call(self, inputs):
    """Standardised inputs, or the inverse."""
    scale = keras.ops.maximum(self.scale, 1e-7)
    if self.invert:
      return self.mean + inputs * scale
    return (inputs - self.mean) / scale

  def get_config(self):
    """Keras config."""
    return {
      **super().get_config(),
      "mean": self.initial_mean,
      "scale": self.initial_scale,
      "invert": self.invert,
    }


def _value_statistics(train_targets) -> Tuple[float, float]:
  """The training values' mean and spread (floored)."""
  value_mean = float(np.mean(train_targets["value"]))
  # A floor keeps near-constant samples (1 point) from dividing by zero.
  return value_mean, max(float(np.std(train_targets["value"])), 1e-6)


def _statistics(function, train_targets):
  """Input center and half-width, value mean and spread."""
  center = (function.upper + function.lower) / 2
  half_width = (function.upper - function.lower) / 2
  return (center, half_width, *_value_statistics(train_targets))


def _kernel_initializers(config: regression.RunConfig):
  """One Glorot-uniform initialiser per Dense layer, seeded from the run.

  Seeds drawn from a Python generator seeded with `config.seed`: the draws
  `keras.utils.set_random_seed` would make, so the weights are the ones
  earlier runs started from, without setting any global seed.
  """
  seeds = random.Random(config.seed)
  return [
    keras.initializers.GlorotUniform(seed=seeds.randint(1, 10**9))
    for _ in range(len(config.hidden_sizes) + 1)
  ]


def build_network(
  config: regression.RunConfig,
  function: functions.BenchmarkFunction,
  train_targets: Dict[str, np.ndarray],
) -> keras.Model:
  """The paper's MLP, wrapped in input and output standardisation."""
  center, half_width, value_mean, value_std = _statistics(
    function, train_targets
  )
  initializers = _kernel_initializers(config)
  layers = [keras.Input((config.dim,)), Standardize(center, half_width)]
  layers += [
    keras.layers.Dense(width, config.activation, kernel_initializer=init)
    for width, init in zip(config.hidden_sizes, initializers, strict=False)
  ]
  layers += [
    keras.layers.Dense(1, kernel_initializer=initializers[-1]),
    Standardize(value_mean, value_std, invert=True),
  ]
  return keras.Sequential(layers, name="mlp")


def _objective_options(config, train_targets) -> Dict:
  """The run's `SobolevConfig` options (the paper's L2 terms)."""
  value_std = _value_statistics(train_targets)[1]
  method = regression.METHODS[config.method]
  weights = [1.0] + [config.derivative_weight] * method["order"]
  if config.balance == "none":
    weights = [w / value_std**2 for w in weights]
  return dict(
    order=method["order"],
    mode=method.get("mode", "full"),
    loss_weights=tuple(weights),
    losses=("mean_squared_error",)
    + (regression.GRADIENT_LOSSES[config.gradient_loss],) * method["order"],
    nonfinite_targets=(
      "missing" if config.method == "sobolev_missing" else "raise"
    ),
    balance=config.balance,
    balance_floor=config.balance_floor,
  )


def build_model(
  config: regression.RunConfig,
  function: functions.BenchmarkFunction,
  train_targets: Dict[str, np.ndarray],
) -> model_lib.SobolevModel:
  """`SobolevModel` with the paper's L2 terms and the run's balance."""
  model = model_lib.SobolevModel(
    build_network(config, function, train_targets),
    seed=config.seed,
    **_objective_options(config, train_targets),
  )
  model.build((None, config.dim))
  return model


def learning_rate_schedule(
  config: regression.RunConfig,
) -> keras.optimizers.schedules.LearningRateSchedule:
  """The rate along a cosine to 0 over the run, or over each of its cycles.

  With `config.cycles` above 1 the cosine restarts at every cycle's end
  (`CosineDecayRestarts`; SGDR, Loshchilov and Hutter 2017), so that a long
  run passes through what a run of one cycle ends at. In the budget study
  (50,000 steps, cycles of 2,000) that did not help Sobolev training's
  selected checkpoints, so one cosine (`CosineDecay`) is the default.
  """
  if config.cycles == 1:
    return keras.optimizers.schedules.CosineDecay(
      config.learning_rate, config.steps
    )
  return keras.optimizers.schedules.CosineDecayRestarts(
    config.learning_rate, config.steps / config.cycles, t_mul=1.0
  )


def build_optimizer(config: regression.RunConfig) -> keras.optimizers.Optimizer:
  """Adam on `learning_rate_schedule` with global-norm clipping.

  Clipping matters for Sobolev training of ReLU networks: the input gradient
  is piecewise constant in the weights, so the derivative loss jumps when an
  activation pattern changes. Without clipping, a probe on Styblinski-Tang
  (100 points, seed 0) saw the Sobolev training loss rise from 0.29 to 0.60
  while the learning rate decayed; with it the loss fell to 0.36 and the test
  MSE halved. Regular training was unaffected (test MSE 35.0 against 35.4).
  """
  return keras.optimizers.Adam(
    learning_rate_schedule(config), global_clipnorm=1.0
  )


def model_key(
  config: regression.RunConfig, train_targets: Dict[str, np.ndarray]
) -> Hashable:
  """What two runs must share to share one compiled model.

  The network's shapes, the objective and the optimiser (the schedule
  spans `steps`) and the batch; the seed too where the stochastic
  directions draw from it (it is part of the program).
  """
  options = _objective_options(config, train_targets)
  batch = min(config.batch_size, len(train_targets["value"]))
  return (
    config.dim,
    tuple(config.hidden_sizes),
    config.activation,
    tuple(sorted(options.items())),
    config.steps,
    config.cycles,
    config.learning_rate,
    batch,
    config.seed if options["mode"] == "stochastic" else None,
  )


def reset(
  model: model_lib.SobolevModel,
  config: regression.RunConfig,
  function: functions.BenchmarkFunction,
  train_targets: Dict[str, np.ndarray],
) -> None:
  """Gives a built model of `model_key(config, ...)` the run's first state.

  The weights `build_network` would draw, the run's standardisation, and
  zeros for the optimiser's state, the balance's statistics and the
  model's running metrics and non-finite record.
  """
  center, half_width, value_mean, value_std = _statistics(
    function, train_targets
  )
  inputs, *dense, outputs = model.model.layers
  inputs.assign(center, half_width)
  outputs.assign(value_mean, value_std)
  for layer, initializer in zip(
    dense, _kernel_initializers(config), strict=True
  ):
    layer.kernel.assign(initializer(layer.kernel.shape))
    layer.bias.assign(tf.zeros_like(layer.bias))
  for variable in model.optimizer.variables:
    if variable.name != "learning_rate":
      variable.assign(tf.zeros_like(variable))
  for variable in model.balance.weights:
    variable.assign(tf.zeros_like(variable))
  model.reset_metrics()
  model.guard.cause.assign(0)


class Scorer:
  """Mean squared errors of a network's values and input gradients.

  One compiled program per network, whatever the set and its size: the
  sets are scored in chunks of `batch_size` points, the errors summed.

  Args:
    network: the network, original inputs to original outputs.
    batch_size: points per chunk.
  """

  def __init__(self, network: keras.Model, batch_size: int = 2000):
    self._network = network
    self._batch_size = batch_size
    self._sums = None
    self._values = None

  def values(self, x) -> tf.Tensor:
    """The network's values at points `x` `[N, dim]`, compiled once."""
    if self._values is None:
      self._values = tf.function(
        self._network,
        input_signature=[tf.TensorSpec([None, x.shape[1]], tf.float32)],
      )
    return self._values(x)

  def _sums_fn(self, x, value, gradient):
    y, jacobian = derivatives.value_and_jacobian(self._network, x)
    return (
      tf.reduce_sum(tf.square(y - value)),
      tf.reduce_sum(tf.square(jacobian - gradient)),
    )

  def __call__(
    self, x: np.ndarray, targets: Dict[str, np.ndarray], prefix: str = "test"
  ) -> Dict[str, float]:
    """`{prefix}_mse` and `{prefix}_gradient_mse` on `(x, targets)`.

    Means over points (values) and over points and input dimensions
    (gradients), in original units.
    """
    if self._sums is None:
      dim = x.shape[1]
      self._sums = tf.function(
        self._sums_fn,
        input_signature=[
          tf.TensorSpec([None, dim], tf.float32),
          tf.TensorSpec([None, 1], tf.float32),
          tf.TensorSpec([None, 1, dim], tf.float32),
        ],
      )
    value_sum = gradient_sum = 0.0
    for start in range(0, len(x), self._batch_size):
      chunk = slice(start, start + self._batch_size)
      sums = self._sums(x[chunk], targets["value"][chunk], targets["d1"][chunk])
      value_sum += float(sums[0])
      gradient_sum += float(sums[1])
    return {
      f"{prefix}_mse": value_sum / len(x),
      f"{prefix}_gradient_mse": gradient_sum / targets["d1"].size,
    }


def evaluate(
  network: keras.Model, x: np.ndarray, test_targets: Dict[str, np.ndarray]
) -> Dict[str, float]:
  """Test MSE of values and of gradients, in original units (`Scorer`)."""
  return Scorer(network)(x, test_targets)
