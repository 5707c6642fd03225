"""The sdist and the wheel build, and the wheel works with `[cpu]` alone.

Builds both with `python -m build`, installs the wheel with the `cpu` extra
only (pinned by requirements.txt) into a fresh venv, and runs `_SMOKE` there
from outside the repository, so that only the installed package is found:
a `SobolevModel` around a Keras MLP trains on values and gradients, saves
and loads, and `sobolev_tf.tasks` names the extra it needs.

Slow (a venv with TensorFlow, a few minutes), out of `make test`:
`make wheel-test`, or `pytest -m slow tests/packaging_test.py`.
"""

import json
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile

import pytest
import tensorflow as tf

pytestmark = pytest.mark.slow

_ROOT = pathlib.Path(__file__).resolve().parent.parent

_SMOKE = """
import json
import os

import keras
import numpy as np
import sobolev_tf

rng = np.random.default_rng(0)
x = rng.uniform(-1.0, 1.0, (256, 2)).astype("float32")
value = np.sin(x[:, :1]) * np.cos(x[:, 1:])  # [B, 1]
d1 = np.stack(
  [np.cos(x[:, 0]) * np.cos(x[:, 1]), -np.sin(x[:, 0]) * np.sin(x[:, 1])], -1
)[:, None, :]  # [B, 1, 2]
keras.utils.set_random_seed(0)
net = keras.Sequential(
  [keras.Input((2,)), keras.layers.Dense(32, "tanh"), keras.layers.Dense(1)]
)
model = sobolev_tf.SobolevModel(net, order=1)
model.compile(optimizer=keras.optimizers.Adam(0.01))
history = model.fit(
  x, {"value": value, "d1": d1}, batch_size=32, epochs=2, verbose=0
)
model.save("model.keras")
loaded = keras.models.load_model("model.keras")
reload_error = np.max(np.abs(loaded(x) - model(x)))
try:
  import sobolev_tf.tasks
  tasks_error = ""
except ImportError as error:
  tasks_error = str(error)
print(json.dumps({
  "history": history.history,
  "package": os.path.dirname(sobolev_tf.__file__),
  "reload_error": float(reload_error),
  "tasks_error": tasks_error,
}))
"""


def _run(*command: str, cwd: pathlib.Path) -> str:
  result = subprocess.run(
    command, cwd=cwd, capture_output=True, text=True, check=False
  )
  if result.returncode:
    raise AssertionError(
      f"{' '.join(command)} failed:\n{result.stdout[-3000:]}"
      f"\n{result.stderr[-3000:]}"
    )
  return result.stdout


class WheelTest(tf.test.TestCase):
  def test_wheel_with_the_cpu_extra_trains_a_sobolev_model(self):
    temporary = tempfile.TemporaryDirectory()
    self.addCleanup(temporary.cleanup)
    work = pathlib.Path(temporary.name)
    dist = work / "dist"
    _run(
      sys.executable, "-m", "build", "--outdir", str(dist), str(_ROOT), cwd=work
    )
    (sdist,) = dist.glob("sobolev_tf-*.tar.gz")
    (wheel,) = dist.glob("sobolev_tf-*.whl")
    with tarfile.open(sdist) as archive:
      names = {name.split("/", 1)[-1] for name in archive.getnames()}
    self.assertContainsSubset(
      {"setup.py", "README.md", "sobolev_tf/__init__.py"}, names
    )
    with zipfile.ZipFile(wheel) as archive:
      names = set(archive.namelist())
    self.assertContainsSubset(
      {"sobolev_tf/__init__.py", "sobolev_tf/extras.py"}, names
    )
    self.assertFalse([n for n in names if n.startswith(("tests/", "launch/"))])

    venv = work / "venv"
    _run(sys.executable, "-m", "venv", str(venv), cwd=work)
    python = str(venv / "bin" / "python")
    constraints = str(_ROOT / "requirements.txt")
    pip_install = (python, "-m", "pip", "install", "--quiet", "-c", constraints)
    _run(*pip_install, f"{wheel}[cpu]", cwd=work)
    run = work / "run"
    run.mkdir()
    output = _run(python, "-c", _SMOKE, cwd=run).strip().splitlines()[-1]
    smoke = json.loads(output)

    self.assertTrue(smoke["package"].startswith(str(venv)), smoke["package"])
    for key in ("loss", "value_loss", "d1_loss"):
      first, last = smoke["history"][key]
      self.assertLess(last, first, key)
    self.assertLess(smoke["reload_error"], 1e-6)
    self.assertIn('pip install "sobolev_tf[experiments]"', smoke["tasks_error"])


if __name__ == "__main__":
  tf.test.main()
