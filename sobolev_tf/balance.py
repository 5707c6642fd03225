"""Unit-free balance between the value and derivative terms.

A Sobolev objective adds errors in different units: the value's in units of
`y²`, the order-k derivative's in units of `(y / x^k)²`. With plain weights
their ratio, and so the right weights, move with the units of `x` and `y`
(a derivative with respect to pixels in 0-255 is ~1e-7 of the KL term of
policy distillation at weight 1). The schemes here make every term unit-free,
so that weight 1 on each term means "relative errors of equal importance":

* `TargetScale` (statistics of the targets): each term compares target and
  prediction divided by the target's scale, a running standard deviation of
  the value targets and a running root mean square of each derivative's
  targets, as differential machine learning normalises by the targets'
  spread (Huge & Savine 2020) and DINO reports the Jacobian error relative
  to the Jacobian's norm (O'Leary-Roseberry et al. 2024). The value term of
  an output transform (probabilities, log-probabilities) is unit-free
  already and is left alone.
* `RunningLoss` (adaptive): each term is divided by a running mean of its
  own value, so the gradient is that of `sum_k w_k log L_k` at equilibrium:
  the fixed point of homoscedastic-uncertainty weighting (Kendall et al.
  2018), and the relative form of ReLoBRaLo (Bischof & Kraus 2021).

Both are invariant to rescaling `x` and `y`: multiply the inputs by `a`
and the outputs by `b` and every normalised term is unchanged, so the
training trajectory of a network working in normalised units is too.

Statistics are running means over training batches, reduced across the
replicas of a `tf.distribute` strategy (one device and several replicas
agree), kept in non-trainable variables that `.keras` files and
checkpoints save. They update only in training steps; evaluation uses them
as they are (or a batch's own statistics before any training step).
"""

from typing import Callable
from typing import Dict
from typing import Optional
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import distribute_utils
from sobolev_tf import targets as targets_lib

LossFn = Callable[[targets_lib.Target, Optional[tf.Tensor]], tf.Tensor]


def _blend(old, new, decay, seen):
  """Exponential moving average that starts at the first value."""
  return tf.where(seen > 0, decay * old + (1 - decay) * new, new)


class Balance(keras.layers.Layer):
  """No balance: each term as its loss gives it. Base of the schemes.

  Args:
    keys: the active terms, e.g. `("value", "d1")`.
    decay: decay of the running statistics, in [0, 1).
    **kwargs: `keras.layers.Layer` arguments.
  """

  def __init__(self, keys: Sequence[str], decay: float = 0.99, **kwargs):
    super().__init__(**kwargs)
    self.keys = tuple(keys)
    self.decay = float(decay)

  def _state(self, name: str) -> keras.Variable:
    """A scalar statistic, an attribute of its own.

    A direct attribute, not a dict entry: TensorFlow checkpoints track
    attributes, not Keras's tracked dicts.
    """
    variable = self.add_weight(
      shape=(),
      initializer="zeros",
      trainable=False,
      aggregation="only_first_replica",
      name=name,
    )
    setattr(self, name, variable)
    return variable

  def _stat(self, key: str, statistic: str) -> keras.Variable:
    return getattr(self, f"{key}_{statistic}")

  def normalized(
    self,
    terms: Dict[str, targets_lib.Target],
    raw: Dict[str, tf.Tensor],
    loss_fn: LossFn,
    update: bool,
    x: Optional[tf.Tensor] = None,
    y: Optional[tf.Tensor] = None,
  ) -> Dict[str, tf.Tensor]:
    """Each term made unit-free.

    Args:
      terms: the active terms with their targets, masks and weights.
      raw: each term's loss as configured (this replica's share of the
        global mean).
      loss_fn: `(term, scale)` to the term's loss with target and
        prediction divided by `scale`.
      update: whether to update the running statistics (training steps).
      x: the input batch (for schemes with an input statistic).
      y: the model's output (likewise).

    Returns:
      The normalised terms, keyed like `raw`.
    """
    del terms, loss_fn, update, x, y
    return dict(raw)

  def get_config(self):
    """Keras config."""
    return {**super().get_config(), "keys": self.keys, "decay": self.decay}


@keras.saving.register_keras_serializable(package="sobolev_tf")
class TargetScale(Balance):
  """Divides each term's target and prediction by the target's scale.

  The scale of the value is the running standard deviation of its targets,
  that of a derivative the running root mean square of its targets' entries
  (a projected term's: of the projections; its mean is part of its
  magnitude). Masked and dropped entries do not count; sample weights weigh
  the statistics. A target that is zero everywhere has no scale and its
  term is left as it is.

  With a `floor`, the scale of an order-`k` derivative (full or projected)
  is at least `floor * sigma_y / (sigma_x * sqrt(D))^k`: the size of an
  entry of the derivative of a function that varies by `sigma_y` over
  inputs of `D` entries spread by `sigma_x`. `sigma_x` is the running
  standard deviation of the inputs' entries and `sigma_y` the value's: of
  its targets where the value term is normalised, else of the model's
  output. The floor is in the derivative's own units, so it keeps the
  balance invariant to the units of `x` and `y`, and bounds a divisor that
  a batch or a phase of training with tiny derivative targets (near a
  minimum, bootstrapped targets that start at zero) would make tiny.

  Args:
    keys: the active terms.
    decay: decay of the running statistics.
    normalize_value: whether the value term is normalised (`False` when an
      output transform makes it unit-free).
    floor: the derivative scales' lower bound, as a fraction of the value's
      spread over the input's; 0 for none.
    **kwargs: `keras.layers.Layer` arguments.
  """

  def __init__(
    self,
    keys: Sequence[str],
    decay: float = 0.99,
    normalize_value: bool = True,
    floor: float = 0.0,
    **kwargs,
  ):
    super().__init__(keys, decay, **kwargs)
    self.normalize_value = bool(normalize_value)
    self.floor = float(floor)
    self.scaled_keys = tuple(
      k for k in self.keys if k != "value" or self.normalize_value
    )
    self._stats = list(self.scaled_keys)
    if self.floor:
      self._stats.append("inputs")
      if "value" not in self.scaled_keys:
        self._stats.append("outputs")
    # A value's variance is about its running mean; a derivative's
    # second moment (mean square) about zero.
    for name in self._stats:
      self._state(f"{name}_count")
      self._state(f"{name}_moment")
      if name in _CENTERED:
        self._state(f"{name}_mean")

  def normalized(self, terms, raw, loss_fn, update, x=None, y=None):
    """See `Balance.normalized`."""
    samples = {key: _weighted(terms[key]) for key in self.scaled_keys}
    if self.floor:
      samples["inputs"] = (x, None)
      if "outputs" in self._stats:
        samples["outputs"] = (y, None)
    batch = self._batch_moments([samples[name] for name in self._stats])
    moments = {
      name: self._running(name, *stats, update)
      for name, stats in zip(self._stats, batch, strict=True)
    }
    normalized = dict(raw)
    for key in self.scaled_keys:
      scale = tf.sqrt(moments[key])
      if self.floor and key != "value" and terms[key].scaled_per_input:
        scale = tf.maximum(scale, self._floor(moments, terms[key].order, x))
      scale = tf.where(scale > 0, scale, tf.ones_like(scale))
      normalized[key] = loss_fn(terms[key], tf.stop_gradient(scale))
    return normalized

  def _floor(self, moments, order: int, x: tf.Tensor) -> tf.Tensor:
    """`floor * sigma_y / (sigma_x * sqrt(D))^order`, 0 without spreads."""
    value = moments.get("value", moments.get("outputs"))
    entries = float(np.prod(x.shape[1:].as_list()))
    spread = tf.sqrt(moments["inputs"] * entries) ** order
    return self.floor * tf.math.divide_no_nan(tf.sqrt(value), spread)

  def _batch_moments(self, samples) -> list:
    """Global `(count, center, moment)` of each statistic's batch.

    Args:
      samples: per statistic, in `self._stats`' order, `(tensor, weight)`.
    """
    sums = []
    for name, (tensor, weight) in zip(self._stats, samples, strict=True):
      tensor = tf.cast(tf.stop_gradient(tensor), tf.float32)
      weight = tf.ones_like(tensor) if weight is None else weight
      if name in _CENTERED:
        # Shifted by the running mean: fewer cancellations in the variance.
        tensor -= getattr(self, f"{name}_mean")
      sums += [
        tf.reduce_sum(weight),
        tf.reduce_sum(weight * tensor),
        tf.reduce_sum(weight * tf.square(tensor)),
      ]
    sums = distribute_utils.all_reduce_sum(sums) if sums else sums
    moments = []
    for index, name in enumerate(self._stats):
      count, first, second = sums[3 * index : 3 * index + 3]
      mean_square = tf.math.divide_no_nan(second, count)
      if name not in _CENTERED:
        moments.append((count, None, mean_square))
        continue
      shift = tf.math.divide_no_nan(first, count)
      variance = tf.maximum(mean_square - tf.square(shift), 0.0)
      moments.append((count, shift + getattr(self, f"{name}_mean"), variance))
    return moments

  def _running(self, name, count, center, moment, update) -> tf.Tensor:
    """The running moment including this batch (evaluation: excluding)."""
    seen = self._stat(name, "count")
    stored = self._stat(name, "moment")
    if not update:
      # Evaluation: the running statistic, or this batch's before training.
      return tf.where(seen > 0, stored, moment)
    has_data = count > 0
    old = stored
    if name in _CENTERED:
      # The variance of the blend of two distributions.
      mean = self._stat(name, "mean")
      old = old + (1 - self.decay) * tf.square(center - mean)
      mean.assign(
        tf.where(has_data, _blend(mean, center, self.decay, seen), mean)
      )
    new = tf.where(has_data, _blend(old, moment, self.decay, seen), stored)
    seen.assign(seen + count)
    stored.assign(new)
    return new

  def get_config(self):
    """Keras config."""
    return {
      **super().get_config(),
      "normalize_value": self.normalize_value,
      "floor": self.floor,
    }


# Statistics kept as a variance about a running mean.
_CENTERED = ("value", "inputs", "outputs")


def _weighted(term: targets_lib.Target):
  """A term's targets and the weight of each entry in its statistics."""
  target = tf.cast(term.values, tf.float32)
  weight = tf.ones_like(target)
  if term.mask is not None:
    weight *= term.mask
  for per_example in (term.weight, term.keep):
    if per_example is not None:
      weight *= tf.reshape(
        tf.cast(per_example, tf.float32), [-1] + [1] * (target.shape.rank - 1)
      )
  return target, weight


@keras.saving.register_keras_serializable(package="sobolev_tf")
class RunningLoss(Balance):
  """Divides each term by a running mean of its own value (adaptive).

  Args:
    keys: the active terms.
    decay: decay of the running means.
    **kwargs: `keras.layers.Layer` arguments.
  """

  def __init__(self, keys: Sequence[str], decay: float = 0.99, **kwargs):
    super().__init__(keys, decay, **kwargs)
    self._state("steps")
    for key in self.keys:
      self._state(f"{key}_running_loss")

  def normalized(self, terms, raw, loss_fn, update, x=None, y=None):
    """See `Balance.normalized`."""
    del terms, loss_fn, x, y
    keys = list(raw)
    values = distribute_utils.all_reduce_sum(
      [tf.cast(tf.stop_gradient(raw[k]), tf.float32) for k in keys]
    )
    seen = self.steps
    normalized = {}
    for key, value in zip(keys, values, strict=True):
      old = self._stat(key, "running_loss")
      usable = tf.math.is_finite(value)
      new = tf.where(usable, _blend(old, value, self.decay, seen), old)
      if update:
        old.assign(new)
      else:
        new = tf.where(seen > 0, old, value)
      divisor = tf.where(new > 0, new, tf.ones_like(new))
      normalized[key] = raw[key] / tf.cast(divisor, raw[key].dtype)
    if update:
      self.steps.assign_add(1.0)
    return normalized


SCHEMES = {
  "none": Balance,
  "target_scale": TargetScale,
  "running_loss": RunningLoss,
}


def make(
  scheme: str,
  keys: Sequence[str],
  decay: float,
  value_is_unit_free: bool,
  floor: float = 0.0,
) -> Balance:
  """The balance layer of `scheme` for the active terms `keys`."""
  if scheme == "target_scale":
    return TargetScale(
      keys, decay, normalize_value=not value_is_unit_free, floor=floor
    )
  return SCHEMES[scheme](keys, decay)
