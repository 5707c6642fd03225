"""Targets of the Sobolev objective: what the data may hold, checked.

A batch's targets arrive as `y` from the data (or from a teacher) and become
one `Term` per active order: its target tensor, how it is given (`"full"`
derivatives, or `"directional"` ones along directions the data carries), a
per-entry mask of the entries that count and per-example weights. These
helpers are pure functions of tensors; `SobolevObjective` calls them.

Data keys, for order k in 1, 2 (`d1`, `d2`):

* `value` `[B, out...]`, `dk` `[B, out..., in... x k]`: full targets.
* `dk_directions` `[B, K, in...]` with `d1_directional` `[B, out..., K]`
  (Jacobian-vector products `J v`) or `d2_directional` `[B, out..., K, in...]`
  (Hessian-vector products `H v`): derivatives along given directions.
* `value_mask`, `dk_mask`: same shape as the term's target, nonzero where
  the entry is known.
"""

import dataclasses
from typing import Dict
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np
import tensorflow as tf

from sobolev_tf import config as config_lib

DIRECTIONAL = {1: "d1_directional", 2: "d2_directional"}
DIRECTIONS = {1: "d1_directions", 2: "d2_directions"}
MASKS = {k: f"{key}_mask" for k, key in enumerate(config_lib.TERMS)}
KNOWN_KEYS = (
  config_lib.TERMS
  + tuple(MASKS.values())
  + tuple(DIRECTIONS.values())
  + tuple(DIRECTIONAL.values())
)
LAYOUTS = {
  ("full", 0): "[B, out...]",
  ("full", 1): "[B, out..., in...]",
  ("full", 2): "[B, out..., in..., in...]",
  ("directional", 1): "[B, out..., K]",
  ("directional", 2): "[B, out..., K, in...]",
}


@dataclasses.dataclass
class Term:
  """One term's target for a batch.

  Attributes:
    order: 0 for the value, 1 or 2 for derivatives.
    kind: `"full"` or `"directional"`.
    target: the target, `None` until a teacher supplies it.
    directions: `[B, K, in...]` for directional terms, else `None`.
    mask: float per-entry mask (1 where the entry counts), or `None`.
    weight: per-example weight `[B]`, or `None`.
    keep: float per-example 0/1, 0 for an example dropped for non-finite
      targets (it does not count in the term's mean, unlike an example of
      weight 0), or `None`.
    directions_finite: bool `[B, K, in...]`, where the data's directions
      were finite (the others are replaced by zeros, and the derivatives
      along them are non-finite targets), or `None`.
  """

  order: int
  kind: str = "full"
  target: Optional[tf.Tensor] = None
  directions: Optional[tf.Tensor] = None
  mask: Optional[tf.Tensor] = None
  weight: Optional[tf.Tensor] = None
  keep: Optional[tf.Tensor] = None
  directions_finite: Optional[tf.Tensor] = None

  @property
  def key(self) -> str:
    """`value`, `d1` or `d2`."""
    return config_lib.term_key(self.order)

  @property
  def data_key(self) -> str:
    """The key of the target in the data: `d1` or `d1_directional`."""
    if self.kind == "directional":
      return DIRECTIONAL[self.order]
    return self.key


def as_dict(y) -> Optional[Dict[str, tf.Tensor]]:
  """`y` as a dict by key: a bare tensor is the value, a tuple is ordered.

  A list is an array-like value (`[[2.0], [3.0]]`), not a tuple of terms.
  """
  if y is None:
    return None
  if isinstance(y, Mapping):
    return dict(y)
  if isinstance(y, tuple):
    if len(y) > len(config_lib.TERMS):
      raise ValueError(
        "Received a target tuple of length "
        f"{len(y)}; expected (value, d1) or (value, d1, d2)."
      )
    return dict(zip(config_lib.TERMS, y, strict=False))
  return {"value": y}


def parse(
  config: config_lib.SobolevConfig,
  y,
  sample_weight,
  teacher: bool,
) -> Dict[str, Term]:
  """Checks the data's keys and returns one `Term` per active order.

  Args:
    config: the objective's configuration.
    y: targets: a tensor (the value), a tuple `(value, d1[, d2])`, a dict
      with the keys of this module's docstring, or `None` with a teacher.
    sample_weight: `None`, per-example weights `[B]`, or a dict keyed by
      term (entries for other keys of `y`, as Keras hands them, are
      ignored).
    teacher: whether a teacher supplies the targets.

  Returns:
    The active terms, keyed `value`, `d1`, `d2`.

  Raises:
    ValueError: for unknown, missing or conflicting keys.
  """
  y = as_dict(y)
  if teacher:
    if y:
      raise ValueError(
        "With a `teacher`, the targets come from the teacher: pass no "
        f"targets (y=None). Received targets with keys: {sorted(y, key=str)}"
      )
    y = {}
    _check_sample_weight_keys(sample_weight, y)
    return {
      key: Term(
        order=k, weight=_weights_by_term(sample_weight, (key,), y).get(key)
      )
      for k, key in zip(config.active_orders, config.active_keys, strict=True)
    }
  if y is None:
    raise ValueError(
      f"Expected targets keyed by {config.active_keys} or a `teacher`. "
      "Received: targets=None"
    )
  _check_keys(config, y)
  weights = _weights_by_term(sample_weight, config.active_keys, y)
  return {
    config_lib.term_key(k): _term(k, y, weights.get(config_lib.term_key(k)))
    for k in config.active_orders
  }


def _term(order: int, y: Mapping, weight) -> Term:
  """The order's term from the data's keys (checked by `_check_keys`)."""
  key = config_lib.term_key(order)
  term = Term(order=order, weight=weight)
  if DIRECTIONAL.get(order) in y:
    term.kind = "directional"
    term.target = _float_tensor(y[DIRECTIONAL[order]], DIRECTIONAL[order])
    directions = _float_tensor(y[DIRECTIONS[order]], DIRECTIONS[order])
    # The model is differentiated along the directions before the
    # non-finite policy applies: zeros keep NaN out of its side.
    term.directions_finite = tf.math.is_finite(directions)
    term.directions = tf.where(
      term.directions_finite, directions, tf.zeros_like(directions)
    )
  elif key in y:
    term.target = _float_tensor(y[key], key)
  if MASKS[order] in y:
    mask_key = MASKS[order]
    mask = tf.cast(_numeric_tensor(y[mask_key], f"y[{mask_key!r}]"), tf.float32)
    term.mask = tf.cast(tf.not_equal(mask, 0), tf.float32)
  return term


def _check_keys(config: config_lib.SobolevConfig, y: Mapping) -> None:
  unknown = sorted(set(y) - set(KNOWN_KEYS), key=str)
  if unknown:
    raise ValueError(
      f"Received unknown target keys {unknown}; expected keys among "
      f"{KNOWN_KEYS}."
    )
  given_orders = {
    k
    for k in range(config_lib.MAX_ORDER + 1)
    if {config_lib.term_key(k), MASKS[k], DIRECTIONS.get(k), DIRECTIONAL.get(k)}
    & set(y)
  }
  beyond = sorted(
    config_lib.term_key(k) for k in given_orders if k > config.order
  )
  if beyond:
    raise ValueError(
      f"Received targets {beyond} for derivative orders above the "
      f"configured order={config.order}. Raise `order` or drop them."
    )
  for k, directional in DIRECTIONAL.items():
    pair = (DIRECTIONS[k] in y, directional in y)
    if pair[0] != pair[1]:
      raise ValueError(
        f"Directional targets need both `{DIRECTIONS[k]}` and "
        f"`{directional}`. Received keys: {sorted(y)}"
      )
    if pair[0] and config_lib.term_key(k) in y:
      raise ValueError(
        f"Received both a full target {config_lib.term_key(k)!r} and "
        f"directional targets for order {k}; give one of them."
      )
  missing = [
    key
    for k, key in zip(config.active_orders, config.active_keys, strict=True)
    if y.get(key) is None and DIRECTIONAL.get(k) not in y
  ]
  if missing:
    raise ValueError(
      f"Missing targets {missing}: order={config.order} with loss_weights="
      f"{config.loss_weights} needs {config.active_keys} (or directional "
      f"targets). Received keys: {sorted(y)}"
    )


def _tensor(value, what: str) -> tf.Tensor:
  try:
    return tf.convert_to_tensor(value)
  except (TypeError, ValueError) as error:
    raise ValueError(
      f"Expected {what} to be an array or tensor. Received: {error}"
    ) from None


def _numeric_tensor(value, what: str) -> tf.Tensor:
  """`value` as a tensor of numbers or bools, for masks and weights."""
  tensor = _tensor(value, what)
  if not (tensor.dtype.is_floating or tensor.dtype.is_integer) and (
    tensor.dtype != tf.bool
  ):
    raise ValueError(
      f"Expected {what} to hold numbers. Received dtype={tensor.dtype.name}."
    )
  return tensor


def _float_tensor(value, key: str) -> tf.Tensor:
  tensor = _tensor(value, f"the target y[{key!r}]")
  if not tensor.dtype.is_floating:
    raise ValueError(
      f"Expected a floating-point target y[{key!r}]. Received dtype="
      f"{tensor.dtype.name}."
    )
  return tensor


def _check_sample_weight_keys(sample_weight, y: Mapping) -> None:
  if not isinstance(sample_weight, Mapping):
    return
  unknown = sorted(set(sample_weight) - set(y) - set(config_lib.TERMS), key=str)
  if unknown:
    raise ValueError(
      "Received an invalid key in `sample_weight`, expected keys among the "
      f"terms {config_lib.TERMS}. Received: {unknown}"
    )


def _weights_by_term(sample_weight, keys, y) -> Dict[str, tf.Tensor]:
  if sample_weight is None:
    return {}
  if not isinstance(sample_weight, Mapping):
    weight = _example_weights(sample_weight, "`sample_weight`")
    return {key: weight for key in keys}
  _check_sample_weight_keys(sample_weight, y)
  return {
    key: _example_weights(sample_weight[key], f"`sample_weight[{key!r}]`")
    for key in keys
    if sample_weight.get(key) is not None
  }


def _example_weights(value, what: str) -> tf.Tensor:
  """One weight per example, `[B]` or `[B, 1]`."""
  weight = _numeric_tensor(value, what)
  shape = weight.shape
  if shape.rank is not None and not (
    shape.rank == 1 or (shape.rank == 2 and shape[1] in (1, None))
  ):
    raise ValueError(
      f"Expected {what} of shape [B] or [B, 1], one weight per example. "
      f"Received shape {shape}."
    )
  return weight


def check_batch(tensor: tf.Tensor, x: tf.Tensor, what: str) -> tf.Tensor:
  """Returns `tensor`, failing unless its batch size is `x`'s.

  A batch of 1 would otherwise broadcast silently against `x`'s batch. Known
  sizes are checked now; unknown ones by an assertion and by a reshape that
  XLA, which drops assertions, still rejects.

  Args:
    tensor: a batched tensor `[B', ...]`.
    x: the input batch `[B, ...]`.
    what: how the message names `tensor`, e.g. `"y['d1']"`.

  Returns:
    `tensor`, with its batch size tied to `x`'s.

  Raises:
    ValueError: when both batch sizes are known and differ.
  """
  tensor = tf.convert_to_tensor(tensor)
  mine, theirs = tensor.shape[:1], x.shape[:1]
  message = f"{what} must have the batch size of x"
  if tensor.shape.rank == 0:
    raise ValueError(
      f"{message} as its first axis. Received: {what} without a batch axis "
      f"(a scalar), x with batch size {theirs[0]}."
    )
  if mine.is_fully_defined() and theirs.is_fully_defined():
    if mine[0] != theirs[0]:
      raise ValueError(
        f"{message}. Received: {what} with batch size {mine[0]}, x with "
        f"batch size {theirs[0]}."
      )
    return tensor
  batch = tf.shape(x)[:1]
  check = tf.debugging.assert_equal(
    tf.shape(tensor)[:1], batch, message=message
  )
  with tf.control_dependencies([check]):
    return tf.reshape(
      tensor,
      tf.concat([batch, tf.shape(tensor)[1:]], 0),
      name="batch_size_must_match_x",
    )


def expected_shape(
  term: Term, output_shape: tf.TensorShape, input_shape: tf.TensorShape
) -> tf.TensorShape:
  """The non-batch shape the term's target must have."""
  out, inputs = output_shape.as_list(), input_shape.as_list()
  if term.kind == "full":
    return tf.TensorShape(out + inputs * term.order)
  count = term.directions.shape[1]
  return tf.TensorShape(out + [count] + (inputs if term.order == 2 else []))


def check_shape(
  term: Term,
  output_shape: tf.TensorShape,
  input_shape: tf.TensorShape,
) -> None:
  """Raises a clear error unless the term's target and mask fit the model.

  Args:
    term: the term, with its target.
    output_shape: the model's non-batch output shape.
    input_shape: the input's non-batch shape.

  Raises:
    ValueError: naming the key, the shape received and the one expected.
  """
  if term.kind == "directional":
    _check_directions(term, input_shape)
  expected = expected_shape(term, output_shape, input_shape)
  key = DIRECTIONAL[term.order] if term.kind == "directional" else term.key
  for name, tensor in ((key, term.target), (MASKS[term.order], term.mask)):
    if tensor is None:
      continue
    received = tensor.shape[1:]
    if not expected.is_compatible_with(received):
      what = "output" if term.order == 0 else f"order-{term.order} derivative"
      raise ValueError(
        f"Target y[{name!r}] does not match the model's {what}: expected "
        f"shape {_batched(expected)} ({LAYOUTS[term.kind, term.order]}, "
        f"output shape {output_shape.as_list()}, input shape "
        f"{input_shape.as_list()}). Received: {_batched(received)}."
      )


def _check_directions(term: Term, input_shape: tf.TensorShape) -> None:
  received = term.directions.shape[2:]
  if term.directions.shape.rank != input_shape.rank + 2 or not (
    input_shape.is_compatible_with(received)
  ):
    raise ValueError(
      f"Directions y[{DIRECTIONS[term.order]!r}] must have shape [B, K, "
      f"{', '.join(map(str, input_shape.as_list()))}] (one direction in "
      f"input space per column K). Received: {term.directions.shape}."
    )
  if term.directions.shape[1] is None:
    raise ValueError(
      f"The number of directions K in y[{DIRECTIONS[term.order]!r}] must be "
      f"known statically. Received: shape {term.directions.shape}."
    )
  if term.directions.shape[1] == 0:
    raise ValueError(
      f"Directions y[{DIRECTIONS[term.order]!r}] must hold at least one "
      f"direction per example (K >= 1). Received: {term.directions.shape}."
    )


def _batched(shape: tf.TensorShape) -> str:
  return f"[B, {', '.join(map(str, shape.as_list()))}]"


def mask_nonfinite(
  terms: Dict[str, Term], policy: str
) -> Tuple[Dict[str, Term], Optional[tf.Tensor]]:
  """Applies the non-finite policy to array targets.

  Args:
    terms: the active terms, targets set.
    policy: `"raise"`, `"drop"` or `"missing"` (see `SobolevConfig`).

  Returns:
    `(terms, finite)`: the terms with non-finite entries replaced by zeros
    and masked (`drop`: the whole example in every term; `missing`: the
    entry), and under `raise` a scalar bool, whether every target is finite
    (`None` under the other policies). Eagerly, `raise` raises at once.

  Raises:
    ValueError: eagerly under `raise`, for a non-finite target.
  """
  counts = {key: _counted_finite(term) for key, term in terms.items()}
  for term in terms.values():
    # tf.where, not a product: zero times NaN is still NaN (a NaN under a
    # zero mask must not reach the loss either).
    term.target = tf.where(
      tf.math.is_finite(term.target), term.target, tf.zeros_like(term.target)
    )
  if policy == "raise":
    finite = [tf.reduce_all(is_finite) for is_finite in counts.values()]
    finite = tf.reduce_all(tf.stack(finite)) if finite else tf.constant(True)
    if tf.executing_eagerly() and not bool(finite):
      raise ValueError(
        f"Targets {_nonfinite_keys(terms, counts)} hold NaN or Inf. Clean the "
        "data, or pass nonfinite_targets='drop' (skip such examples) or "
        "'missing' (skip such entries)."
      )
    return terms, finite
  keep = None
  for key, term in terms.items():
    entry = tf.cast(counts[key], tf.float32)
    if policy == "missing":
      term.mask = entry if term.mask is None else term.mask * entry
    else:
      rows = tf.reduce_min(flatten_batch(entry), axis=1)  # [B]
      keep = rows if keep is None else keep * rows
  for term in terms.values():
    term.keep = keep
  return terms, None


def _counted_finite(term: Term) -> tf.Tensor:
  """Bool per target entry: finite, or masked out (then it never counts)."""
  is_finite = tf.math.is_finite(term.target)
  if term.directions_finite is not None:
    is_finite &= _along_directions(term)
  if term.mask is not None:
    is_finite |= tf.equal(term.mask, 0)
  return is_finite


def _nonfinite_keys(terms: Dict[str, Term], counts: Dict[str, tf.Tensor]):
  """The data keys of the targets and directions that hold NaN or Inf."""
  keys = []
  for key, term in terms.items():
    directions = term.directions_finite
    if directions is not None and not np.all(directions):
      keys.append(DIRECTIONS[term.order])
      continue
    if not np.all(counts[key]):
      keys.append(term.data_key)
  return keys


def _along_directions(term: Term) -> tf.Tensor:
  """Bool, target-shaped: whether the entry's direction is finite."""
  finite = term.directions_finite  # [B, K, in...]
  per_direction = tf.reduce_all(finite, axis=list(range(2, finite.shape.rank)))
  # To [B, out..., K] for J v, [B, out..., K, in...] for H v.
  trailing = finite.shape.rank - 2 if term.order == 2 else 0
  output_rank = term.target.shape.rank - 2 - trailing
  shape = tf.concat(
    [
      tf.shape(finite)[:1],
      [1] * output_rank + [finite.shape[1]] + [1] * trailing,
    ],
    0,
  )
  return tf.reshape(per_direction, shape)


def flatten_batch(tensor: tf.Tensor) -> tf.Tensor:
  """`[B, ...]` to `[B, D]`."""
  return tf.reshape(tensor, tf.stack([tf.shape(tensor)[0], -1]))


def stack_directions(directions: Sequence[tf.Tensor]) -> tf.Tensor:
  """`K` tensors `[B, in...]` to `[B, K, in...]`."""
  return tf.stack(list(directions), axis=1)
