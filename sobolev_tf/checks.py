"""Argument checks shared by the experiments' modules, in Keras's wording.

Each raises `Received an invalid value for `name`, expected <what>.
Received: name=value` for the first bad value.
"""

from typing import Any
from typing import Callable
from typing import Dict
from typing import Sequence

import numpy as np


def _is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float, np.number)) and not isinstance(
    value, bool
  )


def _check(
  values: Dict[str, Any], valid: Callable[[Any], bool], expected: str
) -> None:
  for name, value in values.items():
    if not valid(value):
      raise ValueError(
        f"Received an invalid value for `{name}`, expected {expected}. "
        f"Received: {name}={value!r}"
      )


def positive_ints(**values: Any) -> None:
  """Raises a `ValueError` naming the first value that is not an int >= 1."""
  _check(values, lambda v: _is_int(v) and v >= 1, "a positive integer")


def non_negative_ints(**values: Any) -> None:
  """Raises a `ValueError` naming the first value that is not an int >= 0."""
  _check(values, lambda v: _is_int(v) and v >= 0, "a non-negative integer")


def positive_numbers(**values: Any) -> None:
  """Raises a `ValueError` naming the first value that is not a number > 0."""
  _check(values, lambda v: _is_number(v) and v > 0, "a positive number")


def non_negative_numbers(**values: Any) -> None:
  """Raises a `ValueError` naming the first value that is not a number >= 0."""
  _check(values, lambda v: _is_number(v) and v >= 0, "a non-negative number")


def fraction(name: str, value: Any, include_one: bool = False) -> None:
  """Raises a `ValueError` unless `value` is in (0, 1), or (0, 1].

  Args:
    name: the argument's name, for the message.
    value: the value to check.
    include_one: whether 1 is allowed.
  """
  _check(
    {name: value},
    lambda v: _is_number(v) and (0 < v < 1 or (include_one and v == 1)),
    "a number in (0, 1]" if include_one else "a number in (0, 1)",
  )


def dataset_split(
  value: Any, splits: Sequence[str], slices: bool = False
) -> None:
  """Raises a `ValueError` unless `value` names one of `splits`.

  Args:
    value: the `split` argument.
    splits: the data set's splits.
    slices: whether tfds's slicing is allowed too, e.g. `train[:90%]+test`.
  """
  if slices:
    parts = value.split("+") if isinstance(value, str) else [None]
    valid = all(
      part is not None and part.split("[")[0].strip() in splits
      for part in parts
    )
  else:
    valid = value in splits
  expected = f"one of {list(splits)}" + (
    " or tfds slices of them" if slices else ""
  )
  _check({"split": value}, lambda _: valid, expected)
