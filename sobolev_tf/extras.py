"""Clear errors for the parts of `sobolev_tf` that need an optional extra.

The core (`SobolevModel`, the objective, the derivatives) needs TensorFlow,
Keras and NumPy alone. `sobolev_tf.tasks` and `sobolev_tf.layers` need the
`experiments` extra (Sonnet, Gymnasium and ALE, TensorFlow Datasets,
scikit-learn); their `__init__` calls `require` so that a core-only install
names the extra to install instead of failing deep inside one module.
"""

import importlib.util
from typing import Sequence


def require(package: str, extra: str, modules: Sequence[str]) -> None:
  """Raises an `ImportError` naming `extra` if any of `modules` is missing.

  Looks the modules up without importing them, so that the check costs
  nothing when they are installed.

  Args:
    package: the part of `sobolev_tf` that needs them, for the message,
      e.g. `"sobolev_tf.tasks"`.
    extra: the extra of `sobolev_tf` that installs them, e.g.
      `"experiments"`.
    modules: the top-level modules to look for, e.g. `("sonnet",)`.

  Raises:
    ImportError: naming the missing modules and the `pip install` command
      of the extra.
  """
  missing = [name for name in modules if importlib.util.find_spec(name) is None]
  if missing:
    raise ImportError(
      f"{package} needs {', '.join(missing)}, which the `{extra}` extra "
      f'installs: pip install "sobolev_tf[{extra}]"',
      name=missing[0],
    )
