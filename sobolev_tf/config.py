"""`SobolevConfig`: what a Sobolev objective computes, validated once.

`SobolevObjective` and `SobolevModel` take the same options; both build a
`SobolevConfig`, which checks every argument, names the one that is wrong,
and serialises itself for `.keras` files.
"""

import dataclasses
import numbers
from typing import Any
from typing import Callable
from typing import Dict
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Tuple
from typing import Union

import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import derivatives
from sobolev_tf import losses as losses_lib

MODES = ("full", "stochastic")
NONFINITE_POLICIES = ("raise", "drop", "missing")
BALANCES = ("none", "target_scale", "running_loss")
MAX_ORDER = 2
TERMS = ("value", "d1", "d2")

OUTPUT_TRANSFORMS = {
  "log_softmax": tf.nn.log_softmax,
  "softmax": tf.nn.softmax,
  "sigmoid": tf.math.sigmoid,
}

LossSpec = Union[str, keras.losses.Loss, Callable[..., tf.Tensor]]
PerTerm = Union[Any, Sequence[Any], Mapping[str, Any]]


def term_key(order: int) -> str:
  """The data key of the order-`order` term: `value`, `d1` or `d2`."""
  return TERMS[order]


def _per_term(name: str, value: PerTerm, order: int, default: Any) -> tuple:
  """One entry per term from a single value, a sequence or a dict by term."""
  keys = TERMS[: order + 1]
  if isinstance(value, Mapping):
    unknown = sorted(set(value) - set(keys), key=str)
    if unknown:
      raise ValueError(
        f"Received an invalid key in `{name}`, expected keys among {keys} "
        f"for order={order}. Received: {unknown}"
      )
    return tuple(value.get(key, default) for key in keys)
  if isinstance(value, (list, tuple)):
    if len(value) != order + 1:
      raise ValueError(
        f"Expected {order + 1} `{name}` (value and each derivative order up "
        f"to order={order}), or a dict keyed by {keys}. Received "
        f"{len(value)}: {name}={value!r}"
      )
    return tuple(value)
  return (value,) * (order + 1)


def _check_int(name: str, value: Any, low: int, high: int) -> int:
  # bool is an int subclass: order=True would silently mean order=1.
  if (
    isinstance(value, (bool, np.bool_))
    or not isinstance(value, (int, np.integer))
    or not low <= value <= high
  ):
    bound = f"in [{low}, {high}]" if high < 2**31 else f">= {low}"
    raise ValueError(
      f"Received an invalid value for `{name}`, expected an integer {bound}. "
      f"Received: {name}={value!r}"
    )
  return int(value)


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
  if not isinstance(value, str) or value not in choices:
    raise ValueError(
      f"Received an invalid value for `{name}`, expected one of "
      f"{tuple(choices)}. Received: {name}={value!r}"
    )
  return value


def _check_real(name: str, value: Any, below: float, expected: str) -> float:
  """`value` as a float in `[0, below)`, else a `ValueError`."""
  if (
    isinstance(value, (bool, np.bool_))
    or not isinstance(value, numbers.Real)
    or not 0 <= value < below
  ):
    raise ValueError(
      f"Received an invalid value for `{name}`, expected a number "
      f"{expected}. Received: {name}={value!r}"
    )
  return float(value)


def _as_number(value: Any) -> float:
  # float() would read "1" and True as 1.0.
  if isinstance(value, (str, bytes, bool, np.bool_)):
    raise TypeError(f"Not a number: {value!r}")
  return float(value)


def _check_weights(weights: tuple) -> Tuple[float, ...]:
  try:
    weights = tuple(_as_number(w) for w in weights)
  except (TypeError, ValueError):
    raise ValueError(
      "Received an invalid value for `loss_weights`, expected numbers. "
      f"Received: loss_weights={weights!r}"
    ) from None
  if not all(np.isfinite(w) and w >= 0 for w in weights):
    raise ValueError(
      "Received an invalid value for `loss_weights`, expected finite "
      f"non-negative numbers. Received: loss_weights={weights}"
    )
  return weights


def _check_scales(scales: Optional[Mapping[str, Any]], order: int) -> dict:
  if scales is not None and not isinstance(scales, Mapping):
    raise ValueError(
      "Received an invalid value for `derivative_scales`, expected None or a "
      f"dict keyed by {TERMS[1 : order + 1]}. Received: "
      f"derivative_scales={scales!r}"
    )
  checked = {}
  for key, scale in dict(scales or {}).items():
    if key not in TERMS[1 : order + 1]:
      raise ValueError(
        "Received an invalid key in `derivative_scales`, expected keys "
        f"among {TERMS[1 : order + 1]} for order={order}. Received: {key!r}"
      )
    try:
      array = np.asarray(scale)
    except ValueError:  # A ragged sequence.
      array = None
    # Integers and floats only: a float cast would read True and "2".
    if (
      array is None
      or array.dtype.kind not in "iuf"
      or array.ndim == 0
      or not np.all(np.isfinite(array))
      or np.any(array <= 0)
    ):
      raise ValueError(
        f"Expected `derivative_scales[{key!r}]` to be an array of the "
        f"input's non-batch shape, finite and positive. Received: {scale!r}"
      )
    checked[key] = array.astype(np.float64)
  return checked


@dataclasses.dataclass(frozen=True, eq=False)
class SobolevConfig:
  """The options of a Sobolev objective, checked at construction.

  Attributes:
    order: highest derivative order K, 0, 1 or 2.
    mode: `"full"` matches whole Jacobians/Hessians; `"stochastic"` matches
      random projections (Stochastic Sobolev Training).
    num_projections: directions per example and step in stochastic mode.
    loss_weights: weight of each term: one number for all, `K + 1` numbers
      (value, d1, d2) or a dict keyed by term (missing keys weigh 1). A zero
      weight removes the term: it is not computed and its target is not
      needed. With a `balance`, weight 1 on every term means "relative
      errors of equal importance".
    losses: one loss for every term, `K + 1` of them or a dict keyed by
      term: Keras losses, their names (plus `"sum_squared_error"`, the
      paper's gradient loss), or callables `(y_true, y_pred) -> [B]`. Each
      term sees tensors flattened to `[B, D]` (`[B, D, 1]` with missing
      entries, so those losses must be elementwise).
    output_transform: applied to the model's (and teacher's) output before
      the value loss and before differentiating, e.g. `"log_softmax"` for
      policy distillation. A name from `OUTPUT_TRANSFORMS` or a callable.
    jacobian_mode: `"auto"`, `"reverse"` or `"forward"`, for full mode.
    nonfinite_targets: what NaN/Inf in array targets mean. `"raise"`: an
      error (the step is skipped first). `"drop"`: the example carries no
      loss in any term and does not count in the means. `"missing"`: the
      entry is unknown (a partial the simulator does not give): it carries
      no loss and does not count in its term's mean; the other entries
      train. Explicit masks (`"d1_mask"`) work with every policy. A
      direction (`"d1_directions"`) with NaN or Inf makes the derivatives
      along it non-finite targets.
    derivative_scales: optional `{"d1": s1, "d2": s2}`, each of the input's
      non-batch shape; the order-k error along input dimension i is divided
      by `s[i]` (see `derivative_spread`).
    balance: how terms in different units are made comparable. `"none"`:
      the plain weighted sum. `"target_scale"`: each term compares target
      and prediction divided by the target's running scale (standard
      deviation for values, root mean square for derivatives), so that
      every term is a relative error; the value term is left alone when an
      `output_transform` makes it unit-free already. `"running_loss"`: each
      term is divided by a running mean of its own value (adaptive).
    balance_decay: decay of the running statistics of the balance, in
      [0, 1); 0 uses each batch's own statistics.
    balance_floor: under `"target_scale"`, a lower bound on each
      derivative's scale, as a fraction of the value's spread over the
      input's (see `balance.TargetScale`); 0 for none.
  """

  order: int = 1
  mode: str = "full"
  num_projections: int = 1
  loss_weights: Tuple[float, ...] = None
  losses: Tuple[keras.losses.Loss, ...] = "mean_squared_error"
  output_transform: Union[None, str, Callable[[tf.Tensor], tf.Tensor]] = None
  jacobian_mode: str = "auto"
  nonfinite_targets: str = "raise"
  derivative_scales: Dict[str, np.ndarray] = None
  balance: str = "target_scale"
  balance_decay: float = 0.99
  balance_floor: float = 0.1

  def __post_init__(self):
    order = _check_int("order", self.order, 0, MAX_ORDER)
    setattr_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
    setattr_("order", order)
    _check_choice("mode", self.mode, MODES)
    setattr_(
      "num_projections",
      _check_int("num_projections", self.num_projections, 1, 2**31),
    )
    _check_choice(
      "jacobian_mode", self.jacobian_mode, derivatives.JACOBIAN_MODES
    )
    _check_choice(
      "nonfinite_targets", self.nonfinite_targets, NONFINITE_POLICIES
    )
    _check_choice("balance", self.balance, BALANCES)
    setattr_(
      "balance_decay",
      _check_real("balance_decay", self.balance_decay, 1, "in [0, 1)"),
    )
    setattr_(
      "balance_floor",
      _check_real(
        "balance_floor", self.balance_floor, np.inf, "finite and >= 0"
      ),
    )
    if self.nonfinite_targets == "missing" and self.mode == "stochastic":
      raise ValueError(
        "Received an invalid value for `nonfinite_targets`: 'missing' "
        "entries cannot be projected (a projection mixes every entry), so "
        "it needs mode='full'. Received: nonfinite_targets='missing' with "
        "mode='stochastic'"
      )
    weights = 1.0 if self.loss_weights is None else self.loss_weights
    setattr_(
      "loss_weights",
      _check_weights(_per_term("loss_weights", weights, order, 1.0)),
    )
    specs = _per_term("losses", self.losses, order, "mean_squared_error")
    setattr_(
      "losses",
      tuple(losses_lib.get(s, term_key(k)) for k, s in enumerate(specs)),
    )
    transform = self.output_transform
    if not (transform is None or callable(transform)) and not (
      isinstance(transform, str) and transform in OUTPUT_TRANSFORMS
    ):
      raise ValueError(
        "Received an invalid value for `output_transform`, expected None, a "
        f"callable or one of {sorted(OUTPUT_TRANSFORMS)}. "
        f"Received: output_transform={transform!r}"
      )
    setattr_("derivative_scales", _check_scales(self.derivative_scales, order))

  @property
  def active_orders(self) -> Tuple[int, ...]:
    """The orders whose loss weight is positive, in increasing order."""
    return tuple(k for k, w in enumerate(self.loss_weights) if w > 0)

  @property
  def active_keys(self) -> Tuple[str, ...]:
    """The terms of the active orders."""
    return tuple(term_key(k) for k in self.active_orders)

  @property
  def derivative_order(self) -> int:
    """The highest derivative order that has to be computed."""
    return max(self.active_orders, default=0)

  def transform(self) -> Optional[Callable[[tf.Tensor], tf.Tensor]]:
    """The output transform as a callable, or `None`."""
    if isinstance(self.output_transform, str):
      return OUTPUT_TRANSFORMS[self.output_transform]
    return self.output_transform

  def get_config(self) -> Dict[str, Any]:
    """The constructor arguments, serialisable by Keras."""
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
      "balance": self.balance,
      "balance_decay": self.balance_decay,
      "balance_floor": self.balance_floor,
    }

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> "SobolevConfig":
    """Rebuilds a config from `get_config`."""
    kwargs = dict(config)
    # Saved before the balance existed: the plain weighted sum it trained;
    # before its floor: none.
    kwargs.setdefault("balance", "none")
    kwargs.setdefault("balance_floor", 0.0)
    kwargs["losses"] = [keras.losses.deserialize(c) for c in kwargs["losses"]]
    if isinstance(kwargs.get("output_transform"), dict):
      kwargs["output_transform"] = keras.saving.deserialize_keras_object(
        kwargs["output_transform"]
      )
    return cls(**kwargs)

  @classmethod
  def field_names(cls) -> Tuple[str, ...]:
    """The option names, for splitting keyword arguments."""
    return tuple(field.name for field in dataclasses.fields(cls))
