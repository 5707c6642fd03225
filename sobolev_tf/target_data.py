"""Sobolev targets from the data: `y` and `sample_weight`, checked.

`y` is a tensor (the value), a tuple `(value, d1[, d2])` or a dict with the
keys of the kinds in `KINDS` (`value`, `d1`, `d2`, `dk_directions` with
`dk_directional`, and those of kinds added with `register`) and masks
(`value_mask`, `dk_mask`). Sample weights are per example, `[B]`, or a
dict of them by term. `parse` turns them into one `targets.Target` per
active order.
"""

from typing import Dict
from typing import List
from typing import Mapping
from typing import Optional
from typing import Tuple
from typing import Type

import tensorflow as tf

from sobolev_tf import config as config_lib
from sobolev_tf import directional
from sobolev_tf import targets as targets_lib

Kind = Type[targets_lib.Target]

# The kinds of target data can hold, in the order they are tried.
KINDS: List[Kind] = [targets_lib.FullTarget, directional.DirectionalTarget]


def register(kind: Kind) -> Kind:
  """Lets data hold targets of `kind` (usable as a class decorator).

  Args:
    kind: a `targets.Target` subclass with `data_keys` and `from_data`.

  Returns:
    `kind`.
  """
  if kind not in KINDS:
    KINDS.append(kind)
  return kind


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


def known_keys() -> Tuple[str, ...]:
  """Every data key of every registered kind, and the masks."""
  keys = []
  for kind in KINDS:
    for order in range(config_lib.MAX_ORDER + 1):
      keys += [k for k in kind.data_keys(order) if k not in keys]
  return tuple(keys) + tuple(targets_lib.MASKS.values())


def parse(
  config: config_lib.SobolevConfig,
  y,
  sample_weight,
  teacher: bool,
) -> Dict[str, targets_lib.Target]:
  """Checks the data's keys and returns one target per active order.

  Args:
    config: the objective's configuration.
    y: targets: a tensor (the value), a tuple `(value, d1[, d2])`, a dict
      with the keys of this module's docstring, or `None` with a teacher.
    sample_weight: `None`, per-example weights `[B]`, or a dict keyed by
      term (entries for other keys of `y`, as Keras hands them, are
      ignored).
    teacher: whether a teacher supplies the targets.

  Returns:
    The active targets, keyed `value`, `d1`, `d2`.

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
    weights = _weights_by_term(sample_weight, config.active_keys, {})
    return {
      key: targets_lib.TeacherTarget(k, weight=weights.get(key))
      for k, key in zip(config.active_orders, config.active_keys, strict=True)
    }
  if y is None:
    raise ValueError(
      f"Expected targets keyed by {config.active_keys} or a `teacher`. "
      "Received: targets=None"
    )
  _check_keys(config, y)
  weights = _weights_by_term(sample_weight, config.active_keys, y)
  parsed = {}
  for order, key in zip(config.active_orders, config.active_keys, strict=True):
    target = _from_data(order, y).replace(weight=weights.get(key))
    mask_key = targets_lib.MASKS[order]
    if mask_key in y:
      mask = _numeric_tensor(y[mask_key], f"y[{mask_key!r}]")
      target = target.replace(
        mask=tf.cast(tf.not_equal(tf.cast(mask, tf.float32), 0), tf.float32)
      )
    parsed[key] = target
  return parsed


def _from_data(order: int, y: Mapping) -> targets_lib.Target:
  """The target of the one kind whose keys `y` holds (`_check_keys`)."""
  for kind in KINDS:
    target = kind.from_data(order, y)
    if target is not None:
      return target
  raise AssertionError(f"No target of order {order} in keys {sorted(y)}")


def _given(kind, order: int, y: Mapping) -> bool:
  return any(y.get(key) is not None for key in kind.data_keys(order))


def _check_keys(config: config_lib.SobolevConfig, y: Mapping) -> None:
  known = known_keys()
  unknown = sorted(set(y) - set(known), key=str)
  if unknown:
    raise ValueError(
      f"Received unknown target keys {unknown}; expected keys among {known}."
    )
  beyond = sorted(
    config_lib.term_key(k)
    for k in range(config.order + 1, config_lib.MAX_ORDER + 1)
    if _order_keys(k) & set(y)
  )
  if beyond:
    raise ValueError(
      f"Received targets {beyond} for derivative orders above the "
      f"configured order={config.order}. Raise `order` or drop them."
    )
  for order in range(config_lib.MAX_ORDER + 1):
    for kind in KINDS:
      kind.check_keys(order, y)
    given = [k for k in KINDS if _given(k, order, y)]
    if len(given) > 1:
      kinds = " and ".join(
        f"{_kind_name(k)} targets {sorted(set(k.data_keys(order)) & set(y))}"
        for k in given
      )
      raise ValueError(
        f"Received targets of several kinds for order {order} "
        f"({config_lib.term_key(order)!r}): {kinds}; give one of them."
      )
  missing = [
    key
    for k, key in zip(config.active_orders, config.active_keys, strict=True)
    if not any(_given(kind, k, y) for kind in KINDS)
  ]
  if missing:
    raise ValueError(
      f"Missing targets {missing}: order={config.order} with loss_weights="
      f"{config.loss_weights} needs {config.active_keys} (or targets of "
      f"another kind). Received keys: {sorted(y)}"
    )


def _kind_name(kind: Kind) -> str:
  """`FullTarget` -> `full`."""
  return kind.__name__.removesuffix("Target").lower()


def _order_keys(order: int) -> set:
  """Every data key of `order`, its mask included."""
  keys = {targets_lib.MASKS[order]}
  for kind in KINDS:
    keys.update(kind.data_keys(order))
  return keys


def _numeric_tensor(value, what: str) -> tf.Tensor:
  """`value` as a tensor of numbers or bools, for masks and weights."""
  tensor = targets_lib.as_tensor(value, what)
  if not (tensor.dtype.is_floating or tensor.dtype.is_integer) and (
    tensor.dtype != tf.bool
  ):
    raise ValueError(
      f"Expected {what} to hold numbers. Received dtype={tensor.dtype.name}."
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
