"""The non-finite rule of Sobolev targets, for tensors and NumPy arrays alike.

An entry of a target counts if it is finite or masked out
(`targets.Target.counted`; an entry along a non-finite direction does not).
`nonfinite_targets` (`SobolevConfig`) says what an entry that does not
count means:

* `"raise"`: an error. Inside a training step the step is not applied and
  the trainer raises after it (`finite_updates.StepGuard`); eagerly the
  objective raises at once, and `SobolevModel.fit` checks NumPy data
  before training.
* `"drop"`: the example carries no loss in any term and does not count in
  the means.
* `"missing"`: the entry is unknown: it carries no loss and does not count
  in its term's mean; the example's other entries train.

`apply_policy` applies the rule to a batch's targets; `check_data` applies
the same rule to in-memory data before training, naming the first bad
example.
"""

from typing import Any
from typing import Dict
from typing import Optional
from typing import Tuple

import numpy as np
import tensorflow as tf

from sobolev_tf import config as config_lib
from sobolev_tf import target_data
from sobolev_tf import targets as targets_lib

Targets = Dict[str, targets_lib.Target]


def apply_policy(
  targets: Targets, policy: str, raise_eagerly: bool = True
) -> Tuple[Targets, Optional[tf.Tensor]]:
  """Applies the non-finite policy to a batch's array targets.

  Args:
    targets: the active targets, values set.
    policy: `"raise"`, `"drop"` or `"missing"`.
    raise_eagerly: under `raise`, whether to raise at once when executing
      eagerly (a trainer that skips the step raises after it instead).

  Returns:
    `(targets, finite)`: the targets with non-finite entries replaced by
    zeros and, under `drop`, every target's `keep` set (the example
    counts in no term), under `missing` its `mask` (the entry does not
    count); `finite` is a scalar bool under `raise`, whether every entry
    that counts is finite, and `None` under the other policies.

  Raises:
    ValueError: eagerly under `raise`, naming the keys that hold NaN or Inf.
  """
  counted = {key: target.counted() for key, target in targets.items()}
  # tf.where, not a product: zero times NaN is still NaN (a NaN under a
  # zero mask must not reach the loss either).
  targets = {
    key: t.replace(
      values=tf.where(
        tf.math.is_finite(t.values), t.values, tf.zeros_like(t.values)
      )
    )
    for key, t in targets.items()
  }
  if policy == "raise":
    verdicts = [tf.reduce_all(c) for c in counted.values()]
    finite = (
      tf.reduce_all(tf.stack(verdicts)) if verdicts else tf.constant(True)
    )
    if raise_eagerly and tf.executing_eagerly() and not bool(finite):
      keys = [
        k for key, t in targets.items() for k in t.nonfinite_keys(counted[key])
      ]
      raise ValueError(
        f"Targets {keys} hold NaN or Inf. Clean the data, or pass "
        "nonfinite_targets='drop' (skip such examples) or 'missing' (skip "
        "such entries)."
      )
    return targets, finite
  if policy == "missing":
    return {
      key: t.replace(mask=_and(t.mask, tf.cast(counted[key], tf.float32)))
      for key, t in targets.items()
    }, None
  keep = None
  for entries in counted.values():
    rows = tf.reduce_min(
      targets_lib.flatten_batch(tf.cast(entries, tf.float32)), axis=1
    )  # [B]
    keep = _and(keep, rows)
  return {key: t.replace(keep=keep) for key, t in targets.items()}, None


def _and(mask: Optional[tf.Tensor], other: tf.Tensor) -> tf.Tensor:
  return other if mask is None else mask * other


def check_arrays(
  config: config_lib.SobolevConfig, y: Any, argument: str
) -> None:
  """Under `raise`, fails early on in-memory targets that hold NaN or Inf.

  The rule is `apply_policy`'s: only what counts is checked (targets of
  active terms, outside masked entries, and derivatives along non-finite
  directions). Runs on NumPy data only; tensors and datasets are checked
  inside the steps.

  Args:
    config: the objective's configuration.
    y: the targets as given to `fit` or `evaluate`.
    argument: how the message names `y` (`"y"`, `"validation_data"`).

  Raises:
    ValueError: naming the key, how many examples and the first one.
  """
  data = target_data.as_dict(y)
  if config.nonfinite_targets != "raise" or not data:
    return
  if not all(isinstance(v, np.ndarray) for v in data.values()):
    return
  try:
    targets = target_data.parse(config, data, None, teacher=False)
    counted = {key: t.counted() for key, t in targets.items()}
  except (ValueError, tf.errors.InvalidArgumentError):
    return  # Malformed data: the step names the key against the model.
  for key, target in targets.items():
    rows = tf.reduce_all(targets_lib.flatten_batch(counted[key]), axis=1)
    bad = np.flatnonzero(~rows.numpy())
    if bad.size:
      name = target.nonfinite_keys(counted[key])[0]
      raise ValueError(
        f"Target {argument}[{name!r}] holds NaN or Inf in {bad.size} of "
        f"{rows.shape[0]} examples (first at index {bad[0]}). Clean the "
        "data or pass nonfinite_targets='drop' (skip those examples) or "
        "'missing' (skip those entries) to SobolevModel."
      )


def check_inputs(x: Any) -> None:
  """Fails early on empty in-memory inputs or inputs with NaN or Inf.

  Args:
    x: a NumPy array, or a dict, tuple or list of inputs (others are left
      to the steps).

  Raises:
    ValueError: naming the input, how many examples and the first one.
  """
  inputs = x if isinstance(x, dict) else dict(enumerate(tf.nest.flatten(x)))
  for name, array in inputs.items():
    if not isinstance(array, np.ndarray):
      continue
    what = "x" if array is x else f"x[{name!r}]"
    if array.size == 0 or len(array) == 0:
      raise ValueError(
        f"Received empty inputs {what} of shape {array.shape}; expected at "
        "least one example."
      )
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
      rows = np.isfinite(array.reshape(len(array), -1)).all(axis=1)
      bad = np.flatnonzero(~rows)
      raise ValueError(
        f"Inputs {what} hold NaN or Inf in {bad.size} of {len(array)} "
        f"examples (first at index {bad[0]}); derivatives there are "
        "undefined."
      )


def check_data(
  config: config_lib.SobolevConfig, x: Any, y: Any, validation=None
) -> None:
  """`check_inputs` and `check_arrays` on `fit`'s or `evaluate`'s data.

  Args:
    config: the objective's configuration.
    x: the inputs.
    y: the targets.
    validation: `fit`'s `validation_data` as `(x, y, ...)`, or `None`.

  Raises:
    ValueError: for the first empty or non-finite array found.
  """
  check_inputs(x)
  check_arrays(config, y, "y")
  if validation is not None:
    check_inputs(validation[0])
    check_arrays(config, validation[1], "validation_data")
