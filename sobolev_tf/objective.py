"""The Sobolev training objective, written once.

    L = w0 * l0(m(x), f(x)) + sum_{k=1..K} wk * lk(D^k_x m(x), D^k_x f(x))

(Czarnecki et al., 2017, eq. 1). `SobolevObjective` computes every term of it
for a batch: the model's derivatives with respect to its input, the targets'
derivatives (arrays from the data, or a differentiable teacher evaluated on the
same random directions), and a Keras loss per order. `SobolevModel.train_step`
and the Sonnet-based trainers call it; nothing else computes a Sobolev loss.

Terms are returned as Keras losses return them: averaged over the local batch
and, inside a `tf.distribute` replica context, divided by the number of
replicas, so that summing gradients across replicas averages them.
"""

import dataclasses
import re
from typing import Any
from typing import Callable
from typing import Dict
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Union

import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import derivatives

MODES = ("full", "stochastic")
NONFINITE_POLICIES = ("raise", "drop")
MAX_ORDER = 2
TARGET_KEYS = ("value", "d1", "d2")

OUTPUT_TRANSFORMS = {
  "log_softmax": tf.nn.log_softmax,
  "softmax": tf.nn.softmax,
  "sigmoid": tf.math.sigmoid,
}

LossSpec = Union[str, keras.losses.Loss, Callable[..., tf.Tensor]]
Teacher = Callable[[tf.Tensor], tf.Tensor]


def target_key(order: int) -> str:
  """The data key of the order-`order` target: `value`, `d1` or `d2`."""
  return TARGET_KEYS[order]


@keras.saving.register_keras_serializable(package="sobolev_tf")
class FunctionLoss(keras.losses.Loss):
  """A Keras `Loss` around a function `(y_true, y_pred) -> [B]`.

  Keras's own wrapper is private; this one gives plain functions the
  reduction, sample weighting and distribution scaling of a Keras loss.
  """

  def __init__(
    self, fn: Callable[..., tf.Tensor], name: Optional[str] = None, **kwargs
  ):
    # A valid TensorFlow name scope: "<lambda>" and "_private" are not.
    default = re.sub(r"[^A-Za-z0-9_.]", "_", fn.__name__).strip("_")
    super().__init__(name=name or default or "loss", **kwargs)
    self.fn = fn

  def call(self, y_true, y_pred):
    """Per-example loss, `[B]`."""
    return self.fn(y_true, y_pred)

  def get_config(self):
    """The base config plus the serialised function."""
    return {
      **super().get_config(),
      "fn": keras.saving.serialize_keras_object(self.fn),
    }

  @classmethod
  def from_config(cls, config):
    """Rebuilds the loss, deserialising its function."""
    config = dict(config)
    config["fn"] = keras.saving.deserialize_keras_object(config["fn"])
    return cls(**config)


def _to_loss(spec: LossSpec, order: int) -> keras.losses.Loss:
  if isinstance(spec, keras.losses.Loss):
    return spec
  if isinstance(spec, (str, dict)):
    loss = keras.losses.get(spec)
    return loss if isinstance(loss, keras.losses.Loss) else FunctionLoss(loss)
  if callable(spec):
    return FunctionLoss(spec)
  raise ValueError(
    f"Received an invalid value for `losses[{order}]`, expected a Keras "
    f"loss, its name or a callable(y_true, y_pred). Received: {spec!r}"
  )


def _to_transform(
  spec: Union[None, str, Callable[[tf.Tensor], tf.Tensor]],
) -> Optional[Callable[[tf.Tensor], tf.Tensor]]:
  if spec is None or callable(spec):
    return spec
  if spec in OUTPUT_TRANSFORMS:
    return OUTPUT_TRANSFORMS[spec]
  raise ValueError(
    "Received an invalid value for `output_transform`, expected None, a "
    f"callable or one of {sorted(OUTPUT_TRANSFORMS)}. "
    f"Received: output_transform={spec!r}"
  )


def _flatten_batch(tensor: tf.Tensor) -> tf.Tensor:
  return tf.reshape(tensor, tf.stack([tf.shape(tensor)[0], -1]))


@dataclasses.dataclass
class SobolevLosses:
  """The terms of the Sobolev objective for one batch.

  Attributes:
    prediction: the model's output after `output_transform`, `[B, out...]`.
    target_value: the value target (the teacher's transformed output in
      teacher mode), or `None` when no value target was given.
    terms: loss per active term, keyed `value`, `d1`, `d2`; scaled for
      distribution like a Keras loss.
    total: `sum_k loss_weights[k] * terms[k]`.
    sample_weight: per-example weights used, after dropping non-finite
      targets; `None` when none were given or dropped.
  """

  prediction: tf.Tensor
  target_value: Optional[tf.Tensor]
  terms: Dict[str, tf.Tensor]
  total: tf.Tensor
  sample_weight: Optional[tf.Tensor]


class SobolevObjective:
  """Values plus input derivatives up to order 2, each with its own loss.

  Targets come either as arrays, `{"value": [B, out...], "d1": [B, out...,
  in...], "d2": [B, out..., in..., in...]}`, with the derivatives always full
  (in stochastic mode they are projected on the fly), or from a `teacher`
  callable, whose derivatives are computed like the model's.

  Example:
  ```python
  objective = SobolevObjective(order=1, mode="stochastic")
  losses = objective(model, x, {"value": y, "d1": dy}, seed=[0, step])
  losses.total  # differentiable w.r.t. the model's variables.
  ```
  """

  def __init__(
    self,
    order: int = 1,
    mode: str = "full",
    num_projections: int = 1,
    loss_weights: Optional[Sequence[float]] = None,
    losses: Union[LossSpec, Sequence[LossSpec]] = "mean_squared_error",
    output_transform: Union[None, str, Callable[[tf.Tensor], tf.Tensor]] = None,
    jacobian_mode: str = "auto",
    nonfinite_targets: str = "raise",
    derivative_scales: Optional[Mapping[str, Any]] = None,
  ):
    """Configures the objective.

    Args:
      order: highest derivative order K, 0, 1 or 2.
      mode: `"full"` matches whole Jacobians/Hessians; `"stochastic"` matches
        random projections (Stochastic Sobolev Training).
      num_projections: directions per example and step in stochastic mode.
      loss_weights: `K + 1` non-negative weights for value, d1, d2; defaults
        to all ones. A zero weight removes the term: it is not computed and
        its target is not needed.
      losses: one loss for every order, or `K + 1` of them: Keras losses,
        their names, or callables `(y_true, y_pred) -> [B]`. Each term sees
        tensors flattened to `[B, D]`.
      output_transform: applied to the model's (and teacher's) output before
        the value loss and before differentiating, e.g. `"log_softmax"` for
        policy distillation. A name from `OUTPUT_TRANSFORMS` or a callable.
      jacobian_mode: `"auto"`, `"reverse"` or `"forward"`, for full mode.
        Eagerly, `"reverse"` is used whatever is asked (see
        `derivatives.choose_jacobian_mode`).
      nonfinite_targets: `"raise"` fails on NaN/Inf in array targets,
        `"drop"` gives such examples zero weight.
      derivative_scales: optional `{"d1": s1, "d2": s2}`, each of the input's
        non-batch shape; the order-k error along input dimension i is divided
        by `s[i]` (see `derivative_spread`), so that dimensions whose
        derivatives differ by orders of magnitude weigh alike.

    Raises:
      ValueError: for any argument outside the ranges above.
    """
    if not isinstance(order, (int, np.integer)) or not 0 <= order <= MAX_ORDER:
      raise ValueError(
        f"Received an invalid value for `order`, expected an integer in "
        f"[0, {MAX_ORDER}]. Received: order={order!r}"
      )
    if mode not in MODES:
      raise ValueError(
        f"Received an invalid value for `mode`, expected one of {MODES}. "
        f"Received: mode={mode!r}"
      )
    if (
      not isinstance(num_projections, (int, np.integer)) or num_projections < 1
    ):
      raise ValueError(
        "Received an invalid value for `num_projections`, expected a "
        f"positive integer. Received: num_projections={num_projections!r}"
      )
    if jacobian_mode not in derivatives.JACOBIAN_MODES:
      raise ValueError(
        "Received an invalid value for `jacobian_mode`, expected one of "
        f"{derivatives.JACOBIAN_MODES}. "
        f"Received: jacobian_mode={jacobian_mode!r}"
      )
    if nonfinite_targets not in NONFINITE_POLICIES:
      raise ValueError(
        "Received an invalid value for `nonfinite_targets`, expected one of "
        f"{NONFINITE_POLICIES}. "
        f"Received: nonfinite_targets={nonfinite_targets!r}"
      )
    if loss_weights is None:
      loss_weights = (1.0,) * (order + 1)
    loss_weights = tuple(float(w) for w in loss_weights)
    if len(loss_weights) != order + 1:
      raise ValueError(
        f"Expected {order + 1} `loss_weights` (value and each derivative "
        f"order up to order={order}). Received: loss_weights={loss_weights}"
      )
    if not all(np.isfinite(w) and w >= 0 for w in loss_weights):
      raise ValueError(
        "Received an invalid value for `loss_weights`, expected finite "
        f"non-negative numbers. Received: loss_weights={loss_weights}"
      )
    if isinstance(losses, (list, tuple)):
      if len(losses) != order + 1:
        raise ValueError(
          f"Expected one loss or {order + 1} `losses` (one per order up "
          f"to order={order}). Received {len(losses)}: losses={losses!r}"
        )
      loss_specs = tuple(losses)
    else:
      loss_specs = (losses,) * (order + 1)
    derivative_scales = dict(derivative_scales or {})
    for key, scale in derivative_scales.items():
      if key not in TARGET_KEYS[1 : order + 1]:
        raise ValueError(
          "Received an invalid key in `derivative_scales`, expected keys "
          f"among {TARGET_KEYS[1 : order + 1]} for order={order}. "
          f"Received: {key!r}"
        )
      scale = np.asarray(scale, dtype=np.float64)
      if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError(
          f"Expected `derivative_scales[{key!r}]` to be finite and "
          f"positive. Received: {scale}"
        )
      derivative_scales[key] = scale

    self.order = int(order)
    self.mode = mode
    self.num_projections = int(num_projections)
    self.loss_weights = loss_weights
    self.losses = tuple(_to_loss(spec, k) for k, spec in enumerate(loss_specs))
    self.output_transform = output_transform
    self._transform = _to_transform(output_transform)
    self.jacobian_mode = jacobian_mode
    self.nonfinite_targets = nonfinite_targets
    self.derivative_scales = derivative_scales

  @property
  def active_orders(self) -> tuple:
    """The orders whose loss weight is positive, in increasing order."""
    return tuple(k for k, w in enumerate(self.loss_weights) if w > 0)

  @property
  def active_keys(self) -> tuple:
    """The target keys of the active orders."""
    return tuple(target_key(k) for k in self.active_orders)

  @property
  def derivative_order(self) -> int:
    """The highest derivative order that has to be computed."""
    return max(self.active_orders, default=0)

  def transformed(self, fn: Teacher) -> Teacher:
    """`fn` followed by the output transform."""
    if self._transform is None:
      return fn
    return lambda inputs: self._transform(fn(inputs))

  def __call__(
    self,
    fn: Teacher,
    x: tf.Tensor,
    targets: Union[None, tf.Tensor, Mapping[str, tf.Tensor]] = None,
    *,
    teacher: Optional[Teacher] = None,
    sample_weight: Optional[tf.Tensor] = None,
    seed: Optional[tf.Tensor] = None,
  ) -> SobolevLosses:
    """Computes every active term for one batch.

    Call it inside the `tf.GradientTape` that watches the model's variables.

    Args:
      fn: the model, a batched callable `[B, in...] -> [B, out...]`.
      x: floating-point input batch `[B, in...]`.
      targets: array targets keyed by `TARGET_KEYS` (a bare tensor is the
        value target), or `None` in teacher mode.
      teacher: a batched callable whose values and derivatives are the
        targets; it is not trained through.
      sample_weight: optional per-example weights, `[B]`.
      seed: stateless seed, int `[2]`; required in stochastic mode. Use a new
        one every step.

    Returns:
      The `SobolevLosses` of the batch.

    Raises:
      ValueError: for targets that do not match the configuration or the
        model's derivatives, or a missing seed in stochastic mode.
    """
    targets = self._check_targets(targets, teacher)
    model_fn = self.transformed(fn)
    order = self.derivative_order
    if self.mode == "full" or order == 0:
      jacobian_mode = (
        "reverse" if tf.executing_eagerly() else self.jacobian_mode
      )
      predictions = derivatives.value_and_derivatives(
        model_fn, x, order, jacobian_mode
      )
      if teacher is not None:
        targets = dict(
          zip(
            TARGET_KEYS,
            derivatives.value_and_derivatives(
              self.transformed(teacher), x, order, jacobian_mode
            ),
            strict=False,
          )
        )
      self._check_shapes(targets, predictions, x)
    else:
      if seed is None:
        raise ValueError(
          "`mode='stochastic'` needs a `seed` (int tensor of shape [2]), "
          "new at every step. Received: seed=None"
        )
      predictions, directions = self._projected(model_fn, x, order, seed)
      if teacher is not None:
        teacher_values = self._projected(
          self.transformed(teacher), x, order, seed, directions=directions
        )[0]
        targets = dict(zip(TARGET_KEYS, teacher_values, strict=False))
      else:
        targets = self._project_targets(targets, predictions, x, directions)
    if teacher is not None:
      targets = {key: tf.stop_gradient(value) for key, value in targets.items()}
    else:
      targets, sample_weight = self._handle_nonfinite(targets, sample_weight)

    terms = {}
    for k in self.active_orders:
      key = target_key(k)
      target, prediction = targets[key], predictions[k]
      if k > 0 and key in self.derivative_scales:
        scale = tf.constant(self.derivative_scales[key], prediction.dtype)
        target, prediction = target / scale, prediction / scale
      terms[key] = self.losses[k](
        _flatten_batch(target),
        _flatten_batch(prediction),
        sample_weight=sample_weight,
      )
    total = (
      tf.add_n(
        [
          self.loss_weights[k] * terms[target_key(k)]
          for k in self.active_orders
        ]
      )
      if terms
      else tf.zeros([], predictions[0].dtype)
    )
    return SobolevLosses(
      prediction=predictions[0],
      target_value=targets.get("value"),
      terms=terms,
      total=total,
      sample_weight=sample_weight,
    )

  def _check_targets(self, targets, teacher) -> Dict[str, tf.Tensor]:
    if teacher is not None:
      if targets is not None and (not isinstance(targets, Mapping) or targets):
        raise ValueError(
          "With a `teacher`, the targets come from the teacher: pass no "
          f"targets (y=None). Received targets: {targets!r}"
        )
      return {}
    if targets is None:
      raise ValueError(
        "Expected targets keyed by "
        f"{self.active_keys} or a `teacher`. Received: targets=None"
      )
    if not isinstance(targets, Mapping):
      targets = {"value": targets}
    unknown = sorted(set(targets) - set(TARGET_KEYS))
    if unknown:
      raise ValueError(
        f"Received unknown target keys {unknown}; expected keys among "
        f"{TARGET_KEYS}."
      )
    beyond = sorted(set(targets) - set(TARGET_KEYS[: self.order + 1]))
    if beyond:
      raise ValueError(
        f"Received targets {beyond} for derivative orders above the "
        f"configured order={self.order}. Raise `order` or drop them."
      )
    missing = [key for key in self.active_keys if targets.get(key) is None]
    if missing:
      raise ValueError(
        f"Missing targets {missing}: order={self.order} with loss_weights="
        f"{self.loss_weights} needs {self.active_keys}. Received keys: "
        f"{sorted(targets)}"
      )
    return {key: tf.convert_to_tensor(targets[key]) for key in self.active_keys}

  def _check_shapes(self, targets, predictions, x) -> None:
    for k in self.active_orders:
      key = target_key(k)
      expected = predictions[k].shape[1:]
      received = targets[key].shape[1:]
      if not expected.is_compatible_with(received):
        raise ValueError(self._shape_message(key, k, received, expected, x))

  def _shape_message(self, key, k, received, expected, x) -> str:
    layout = (
      "[B, out...]"
      if k == 0
      else "[B, out..., in...]"
      if k == 1
      else "[B, out..., in..., in...]"
    )
    return (
      f"Target y[{key!r}] does not match the model's "
      f"{'output' if k == 0 else f'order-{k} derivative'}: expected "
      f"shape [B, {', '.join(map(str, expected.as_list()))}] "
      f"({layout}, input shape {x.shape[1:].as_list()}). Received: "
      f"[B, {', '.join(map(str, received.as_list()))}]."
    )

  def _projected(self, fn, x, order, seed, directions=None):
    """Value and projected derivatives, on `directions` or fresh ones."""
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)

    def sample(y):
      if directions is not None:
        return directions
      output_directions = derivatives.sample_directions(
        self.num_projections,
        y,
        tf.random.experimental.stateless_fold_in(seed, 1),
      )
      input_directions = None
      if order == 2:
        input_directions = tf.unstack(
          derivatives.sample_directions(
            self.num_projections,
            x,
            tf.random.experimental.stateless_fold_in(seed, 2),
          )
        )
      return tf.unstack(output_directions), input_directions

    y, first, second, used = derivatives.projected_derivatives_with_sampler(
      fn, x, sample
    )
    values = [y]
    for projections in (first, second)[:order]:
      values.append(tf.stack(projections, axis=1))  # [B, P, in...]
    return values, used

  def _project_targets(self, targets, predictions, x, directions):
    output_directions, input_directions = directions
    projected = {}
    for k in self.active_orders:
      key = target_key(k)
      if k == 0:
        if (
          not predictions[0]
          .shape[1:]
          .is_compatible_with(targets[key].shape[1:])
        ):
          raise ValueError(
            self._shape_message(
              key, 0, targets[key].shape[1:], predictions[0].shape[1:], x
            )
          )
        projected[key] = targets[key]
        continue
      expected = tf.TensorShape(
        predictions[0].shape[1:].as_list() + x.shape[1:].as_list() * k
      )
      if not expected.is_compatible_with(targets[key].shape[1:]):
        raise ValueError(
          self._shape_message(key, k, targets[key].shape[1:], expected, x)
        )
      if k == 1:
        parts = [
          derivatives.project_jacobian(targets[key], v1)
          for v1 in output_directions
        ]
      else:
        parts = [
          derivatives.project_hessian(targets[key], v1, v2)
          for v1, v2 in zip(output_directions, input_directions, strict=True)
        ]
      projected[key] = tf.stack(parts, axis=1)  # [B, P, in...]
    return projected

  def _handle_nonfinite(self, targets, sample_weight):
    if self.nonfinite_targets == "raise":
      for key, value in targets.items():
        if value.dtype.is_floating:
          tf.debugging.assert_all_finite(
            value,
            f"Target y[{key!r}] holds NaN or Inf; clean the data or "
            "pass nonfinite_targets='drop' to give such examples zero "
            "weight.",
          )
      return targets, sample_weight
    finite = None
    cleaned = {}
    for key, value in targets.items():
      is_finite = tf.math.is_finite(value)
      example_finite = tf.reduce_all(_flatten_batch(is_finite), axis=1)
      finite = example_finite if finite is None else finite & example_finite
      # tf.where, not a multiplication: a zero weight times NaN is still NaN.
      cleaned[key] = tf.where(is_finite, value, tf.zeros_like(value))
    keep = tf.cast(finite, next(iter(cleaned.values())).dtype)
    if sample_weight is not None:
      keep = keep * tf.cast(sample_weight, keep.dtype)
    return cleaned, keep

  def get_config(self) -> Dict[str, Any]:
    """Returns the constructor arguments, serialisable by Keras."""
    transform = self.output_transform
    if callable(transform):
      transform = keras.saving.serialize_keras_object(transform)
    return {
      "order": self.order,
      "mode": self.mode,
      "num_projections": self.num_projections,
      "loss_weights": list(self.loss_weights),
      "losses": [keras.losses.serialize(loss) for loss in self.losses],
      "output_transform": transform,
      "jacobian_mode": self.jacobian_mode,
      "nonfinite_targets": self.nonfinite_targets,
      "derivative_scales": {
        key: scale.tolist() for key, scale in self.derivative_scales.items()
      },
    }

  @staticmethod
  def kwargs_from_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """Constructor arguments from `get_config`, losses deserialised."""
    kwargs = dict(config)
    kwargs["losses"] = [keras.losses.deserialize(c) for c in kwargs["losses"]]
    if isinstance(kwargs.get("output_transform"), dict):
      kwargs["output_transform"] = keras.saving.deserialize_keras_object(
        kwargs["output_transform"]
      )
    return kwargs

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> "SobolevObjective":
    """Rebuilds an objective from `get_config`."""
    return cls(**cls.kwargs_from_config(config))


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
