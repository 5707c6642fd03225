"""Argument checks shared by the experiments' modules, in Keras's wording."""

from typing import Any

import numpy as np


def _is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def positive_ints(**values: Any) -> None:
  """Raises a `ValueError` naming the first value that is not an int >= 1.

  Args:
    **values: the arguments to check, by name.

  Raises:
    ValueError: `Received an invalid value for `name`, expected a positive
      integer. Received: name=value`.
  """
  for name, value in values.items():
    if not _is_int(value) or value < 1:
      raise ValueError(
        f"Received an invalid value for `{name}`, expected a positive "
        f"integer. Received: {name}={value!r}"
      )


def non_negative_ints(**values: Any) -> None:
  """Raises a `ValueError` naming the first value that is not an int >= 0.

  Args:
    **values: the arguments to check, by name.

  Raises:
    ValueError: naming the argument and the value received.
  """
  for name, value in values.items():
    if not _is_int(value) or value < 0:
      raise ValueError(
        f"Received an invalid value for `{name}`, expected a non-negative "
        f"integer. Received: {name}={value!r}"
      )


def fraction(name: str, value: Any, include_one: bool = False) -> None:
  """Raises a `ValueError` unless `value` is in (0, 1), or (0, 1].

  Args:
    name: the argument's name, for the message.
    value: the value to check.
    include_one: whether 1 is allowed.

  Raises:
    ValueError: naming the argument and the value received.
  """
  number = isinstance(value, (int, float, np.number)) and not isinstance(
    value, bool
  )
  if not number or not (0 < value < 1 or (include_one and value == 1)):
    interval = "(0, 1]" if include_one else "(0, 1)"
    raise ValueError(
      f"Received an invalid value for `{name}`, expected a number in "
      f"{interval}. Received: {name}={value!r}"
    )
