"""The Sobolev training objective, written once.

    L = sum_k w_k * normalize_k( l_k(D^k_x m(x), D^k_x f(x)) )

(Czarnecki et al., 2017, eq. 1, with each term made unit-free by a
`balance`). `SobolevObjective` computes every term for a batch: the model's
derivatives with respect to its input (an `estimators` object), the targets
(arrays from the data, checked by `target_data`, or a differentiable teacher
evaluated the same way), a loss per term and the balance between terms
(`balance`). `SobolevModel.train_step` and the Sonnet-based trainers call
it; nothing else computes a Sobolev loss.

Terms are averages over the global batch, as Keras losses are: inside a
`tf.distribute` replica context each replica returns its share, so that
summing gradients across replicas averages them.
"""

import dataclasses
from typing import Any
from typing import Callable
from typing import Dict
from typing import Mapping
from typing import Optional

import numpy as np
import tensorflow as tf

from sobolev_tf import balance as balance_lib
from sobolev_tf import config as config_lib
from sobolev_tf import derivatives
from sobolev_tf import distribute_utils
from sobolev_tf import estimators
from sobolev_tf import losses as losses_lib
from sobolev_tf import nonfinite
from sobolev_tf import target_data
from sobolev_tf import targets as targets_lib

# Public names that moved to `config` and stay importable from here.
FunctionLoss = losses_lib.FunctionLoss
OUTPUT_TRANSFORMS = config_lib.OUTPUT_TRANSFORMS
TARGET_KEYS = config_lib.TERMS
target_key = config_lib.term_key

Teacher = Callable[[tf.Tensor], tf.Tensor]


@dataclasses.dataclass
class SobolevLosses:
  """The terms of the Sobolev objective for one batch.

  Attributes:
    prediction: the model's output after `output_transform`, `[B, out...]`.
    target_value: the value target (the teacher's transformed output in
      teacher mode), or `None` when no value target was given.
    terms: each active term's loss in the user's units, keyed `value`,
      `d1`, `d2` (this replica's share of the global mean).
    normalized: each term after the balance (equal to `terms` without one).
    total: `sum_k loss_weights[k] * normalized[k]`, what training minimises.
    entries: how many target entries each term used in the global batch
      (after dropped examples and missing entries).
    finite: scalar bool, whether the input, the array targets (under
      `nonfinite_targets="raise"`) and the total are finite; a trainer must
      not apply a step where it is false.
    targets_finite: scalar bool, whether the array targets are finite
      (always true under the `drop` and `missing` policies).
    sample_weight: per-example weights of the value term (sample weights
      times kept examples), or `None`.
  """

  prediction: tf.Tensor
  target_value: Optional[tf.Tensor]
  terms: Dict[str, tf.Tensor]
  normalized: Dict[str, tf.Tensor]
  total: tf.Tensor
  entries: Dict[str, tf.Tensor]
  finite: tf.Tensor
  targets_finite: tf.Tensor
  sample_weight: Optional[tf.Tensor]


class SobolevObjective:
  """Values plus input derivatives up to order 2, each with its own loss.

  Targets come as arrays (full derivatives, derivatives along directions,
  with masks for missing entries; see `targets`) or from a `teacher`
  callable, whose derivatives are computed like the model's.

  Args:
    config: a `SobolevConfig`, or `None` to build one from `**kwargs`.
    **kwargs: the `SobolevConfig` options (`order`, `mode`,
      `loss_weights`, `balance`, ...).

  Raises:
    ValueError: for an invalid option.

  Example:
  ```python
  objective = SobolevObjective(order=1, mode="stochastic")
  losses = objective(model, x, {"value": y, "d1": dy}, seed=[0, step])
  losses.total  # differentiable w.r.t. the model's variables.
  ```

  The balance's statistics are Keras variables (`objective.balance`): build
  the objective under the strategy's scope, and checkpoint the balance.
  """

  def __init__(
    self, config: Optional[config_lib.SobolevConfig] = None, **kwargs
  ):
    if config is None:
      config = config_lib.SobolevConfig(**kwargs)
    elif kwargs:
      raise ValueError(
        "Pass either a `config` or options, not both. Received options: "
        f"{sorted(kwargs)}"
      )
    self.config = config
    self._transform = config.transform()
    self._estimator = estimators.ESTIMATORS[config.mode](config)
    self.balance = balance_lib.make(
      config.balance,
      config.active_keys,
      config.balance_decay,
      value_is_unit_free=config.output_transform is not None,
      floor=config.balance_floor,
    )

  @property
  def active_orders(self) -> tuple:
    """The orders whose loss weight is positive."""
    return self.config.active_orders

  @property
  def active_keys(self) -> tuple:
    """The terms of the active orders."""
    return self.config.active_keys

  def transformed(
    self, fn: Teacher, scale: Optional[tf.Tensor] = None
  ) -> Teacher:
    """`fn` with a half-precision output cast to float32, then transformed.

    Args:
      fn: a batched callable.
      scale: optional factor applied last (see `derivative_scale`).

    Returns:
      The wrapped callable (float32 loss terms under mixed precision).
    """

    def wrapped(inputs):
      outputs = fn(inputs)
      if tf.is_tensor(outputs) and outputs.dtype in (tf.float16, tf.bfloat16):
        outputs = tf.cast(outputs, tf.float32)
      if self._transform is not None:
        outputs = self._transform(outputs)
      return (
        outputs if scale is None else outputs * tf.cast(scale, outputs.dtype)
      )

    return wrapped

  def __call__(
    self,
    fn: Teacher,
    x: tf.Tensor,
    targets=None,
    *,
    teacher: Optional[Teacher] = None,
    sample_weight=None,
    seed: Optional[tf.Tensor] = None,
    training: bool = False,
    derivative_scale: Optional[tf.Tensor] = None,
    raise_nonfinite: bool = True,
  ) -> SobolevLosses:
    """Computes every active term for one batch.

    Call it inside the `tf.GradientTape` that watches the model's variables.

    Args:
      fn: the model, a batched callable `[B, in...] -> [B, out...]`.
      x: floating-point input batch `[B, in...]`.
      targets: array targets (a tensor is the value; a tuple `(value, d1,
        d2)`; a dict with the keys of `target_data`), or `None` with a teacher.
      teacher: a batched callable whose values and derivatives are the
        targets; it is not trained through.
      sample_weight: per-example weights `[B]`, or a dict of them by term.
      seed: stateless seed, int `[2]`; required in stochastic mode. Use a new
        one every step.
      training: whether this is a training step (updates the balance's
        running statistics).
      derivative_scale: under float16 mixed precision, the loss scale:
        derivatives of `scale * fn(x)`, divided by it, do not underflow in
        float16 (PyTorch AMP's recipe for gradient penalties).
      raise_nonfinite: whether, eagerly under `nonfinite_targets="raise"`,
        a non-finite target raises at once (else it only clears
        `targets_finite`, for trainers that raise after the step).

    Returns:
      The `SobolevLosses` of the batch.

    Raises:
      ValueError: for targets that do not match the configuration or the
        model, a missing seed in stochastic mode, or (eagerly) non-finite
        targets under `nonfinite_targets="raise"`.
    """
    x = derivatives.check_input(x)
    self.check_input_shape(x.shape)
    parsed = target_data.parse(
      self.config, targets, sample_weight, teacher is not None
    )
    parsed = {key: t.with_batch_of(x) for key, t in parsed.items()}
    y, predictions, matched = self._estimate(
      fn, x, parsed, teacher, seed, derivative_scale
    )
    finite = None
    if teacher is None:
      matched, finite = nonfinite.apply_policy(
        matched, self.config.nonfinite_targets, raise_nonfinite
      )
    finite = tf.constant(True) if finite is None else finite
    return self._losses(x, y, matched, predictions, finite, training)

  def _estimate(self, fn, x, targets, teacher, seed, derivative_scale):
    """The estimator's output, predictions and targets, in the output's dtype.

    Derivatives come in the input's dtype (a float64 batch for a float32
    model, float16 under a half-precision input); the losses compare them
    in the output's, which is float32 under a mixed-precision policy.
    """
    scale = None
    if derivative_scale is not None:
      scale = tf.stop_gradient(tf.cast(derivative_scale, tf.float32))
    y, predictions, targets = self._estimator(
      self.transformed(fn, scale),
      x,
      targets,
      None if teacher is None else self.transformed(teacher, scale),
      seed,
    )
    predictions = {k: tf.cast(v, y.dtype) for k, v in predictions.items()}
    if scale is None:
      return y, predictions, targets
    unscale = lambda t: t / tf.cast(scale, t.dtype)  # noqa: E731
    if teacher is not None:
      targets = {
        k: t.replace(values=unscale(t.values)) for k, t in targets.items()
      }
    return (
      unscale(y),
      {k: unscale(v) for k, v in predictions.items()},
      targets,
    )

  def _losses(self, x, y, terms, predictions, targets_finite, training):
    counts = _global_counts(terms, predictions)
    weights = self.config.loss_weights

    def loss_fn(term, scale=None):
      return self._term_loss(term, predictions[term.key], counts, scale)

    raw = {key: loss_fn(term) for key, term in terms.items()}
    normalized = self.balance.normalized(
      terms, raw, loss_fn, training, x=x, y=y
    )
    total = tf.zeros([], y.dtype)
    for key, value in normalized.items():
      total += weights[config_lib.TERMS.index(key)] * value
    finite = tf.reduce_all(
      [
        tf.reduce_all(tf.math.is_finite(x)),
        targets_finite,
        tf.math.is_finite(total),
      ]
    )
    value = terms.get("value")
    return SobolevLosses(
      prediction=y,
      target_value=None if value is None else value.values,
      terms=raw,
      normalized=normalized,
      total=total,
      entries={key: count[1] for key, count in counts.items()},
      finite=finite,
      targets_finite=targets_finite,
      sample_weight=None if value is None else _example_weight(value),
    )

  def _term_loss(self, term, prediction, counts, scale=None) -> tf.Tensor:
    """The term's loss: sum over used entries divided by the global count."""
    target = tf.cast(term.values, prediction.dtype)
    derivative_scale = self.config.derivative_scales.get(term.key)
    if derivative_scale is not None and term.scaled_per_input:
      derivative_scale = tf.constant(derivative_scale, prediction.dtype)
      target, prediction = (
        target / derivative_scale,
        prediction / derivative_scale,
      )
    if scale is not None:
      scale = tf.cast(scale, prediction.dtype)
      target, prediction = target / scale, prediction / scale
    loss = self.config.losses[term.order]
    flat_target = targets_lib.flatten_batch(target)
    flat_prediction = targets_lib.flatten_batch(prediction)
    weight = _example_weight(term)
    if term.mask is None:
      summed = loss.call(flat_target, flat_prediction)  # [B]
      if weight is not None:
        summed *= tf.cast(weight, summed.dtype)
    else:
      summed = loss.call(flat_target[..., None], flat_prediction[..., None])
      mask = targets_lib.flatten_batch(term.mask)  # [B, D]
      if weight is not None:
        mask *= weight[:, None]
      summed *= tf.cast(mask, summed.dtype)  # [B, D]
    divisor = tf.cast(counts[term.key][0], summed.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(summed), divisor)

  def check_input_shape(self, input_shape) -> None:
    """Raises unless the options tied to the input fit `[B, in...]`."""
    in_shape = tf.TensorShape(input_shape)[1:]
    for key, scale in self.config.derivative_scales.items():
      if in_shape.is_fully_defined() and tuple(in_shape) != scale.shape:
        raise ValueError(
          f"Expected `derivative_scales[{key!r}]` to have the input's "
          f"non-batch shape {in_shape.as_list()}. Received shape "
          f"{list(scale.shape)}."
        )

  def get_config(self) -> Dict[str, Any]:
    """Returns the options, serialisable by Keras."""
    return self.config.get_config()

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> "SobolevObjective":
    """Rebuilds an objective from `get_config`."""
    return cls(config_lib.SobolevConfig.from_config(config))


def _example_weight(term: targets_lib.Target) -> Optional[tf.Tensor]:
  """Sample weight times kept examples, `[B]`, or `None`."""
  parts = [
    tf.cast(p, tf.float32) for p in (term.weight, term.keep) if p is not None
  ]
  if not parts:
    return None
  weight = parts[0]
  for part in parts[1:]:
    weight *= part
  return weight


def _global_counts(terms, predictions) -> Dict[str, tuple]:
  """Per term, `(divisor, entries)` over the global batch.

  The divisor counts examples (entries for a masked term); dropped examples
  and missing entries do not count. Under a strategy both are summed over
  the replicas, so that each replica's share of a term sums to the mean.
  """
  local = []
  for key, term in terms.items():
    prediction = predictions[key]
    size = int(np.prod(prediction.shape[1:].as_list() or [1]))
    if term.mask is not None:
      mask = targets_lib.flatten_batch(term.mask)
      if term.keep is not None:
        mask *= term.keep[:, None]
      divisor = tf.reduce_sum(mask)
      entries = divisor
    else:
      rows = (
        tf.cast(tf.shape(prediction)[0], tf.float32)
        if term.keep is None
        else tf.reduce_sum(term.keep)
      )
      divisor, entries = rows, rows * size
    local += [divisor, entries]
  local = distribute_utils.all_reduce_sum(local)
  return {key: (local[2 * i], local[2 * i + 1]) for i, key in enumerate(terms)}


def derivative_spread(
  derivative: np.ndarray, input_rank: int = 1, floor: float = 1e-12
) -> np.ndarray:
  """Per-input-dimension spread of derivative targets, for normalisation.

  Args:
    derivative: targets `[B, out..., in...]` (or a Hessian, whose last
      `input_rank` axes are the last differentiation).
    input_rank: rank of the input's non-batch shape.
    floor: smallest spread returned, so constant dimensions do not divide by 0.

  Returns:
    The standard deviation over every axis but the last `input_rank` ones,
    shape `[in...]`; pass it as `derivative_scales={"d1": ...}`.
  """
  derivative = np.asarray(derivative, dtype=np.float64)
  axes = tuple(range(derivative.ndim - input_rank))
  return np.maximum(np.std(derivative, axis=axes), floor)
