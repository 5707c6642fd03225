"""Checks of a launcher's flag values, run when its flags parse.

`check_flag` makes a function that raises `ValueError` a validator of a
flag (absl then reports `flag --name=value: <message>` before anything
runs); `check_list_flag` does so for each item of a list flag. The checks
`positive_int`, `positive_number`, `fraction_or_zero` and `one_of` serve
either.
"""

from typing import Any
from typing import Callable
from typing import List
from typing import Sequence

from absl import flags


def check_flag(
  flag_values: flags.FlagValues, name: str, check: Callable[[Any], Any]
) -> None:
  """Makes `check(value)` a validator of flag `name`, run when flags parse.

  Args:
    flag_values: the launcher's `FLAGS`.
    name: the flag.
    check: raises a `ValueError` for a bad value; its message follows
      absl's `flag --name=value: `.
  """

  def validate(value: Any) -> bool:
    try:
      check(value)
    except ValueError as error:
      raise flags.ValidationError(str(error)) from None
    return True

  flags.register_validator(name, validate, flag_values=flag_values)


def check_list_flag(
  flag_values: flags.FlagValues, name: str, check_item: Callable[[str], Any]
) -> None:
  """`check_flag` for a list flag: not empty, and `check_item` on each item."""

  def check(values: List[str]) -> None:
    if not values:
      raise ValueError("expected at least one value")
    for value in values:
      check_item(value)

  check_flag(flag_values, name, check)


def positive_int(text: str) -> int:
  """`int(text)`, which must be at least 1, else a `ValueError`."""
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise ValueError(f"expected positive integers, got {text!r}")
  return value


def positive_number(value: float) -> float:
  """`value`, which must be above 0, else a `ValueError`."""
  if not value > 0:
    raise ValueError(f"expected a positive number, got {value!r}")
  return value


def fraction_or_zero(value: float) -> float:
  """`value`, which must be 0 or in (0, 1), else a `ValueError`."""
  if not 0 <= value < 1:
    raise ValueError(f"expected 0 or a fraction in (0, 1), got {value!r}")
  return value


def one_of(value: str, choices: Sequence[str]) -> str:
  """`value`, which must be among `choices`, else a `ValueError`."""
  if value not in choices:
    raise ValueError(f"expected values among {list(choices)}, got {value!r}")
  return value
