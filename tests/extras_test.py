import contextlib
import importlib
import subprocess
import sys

from absl.testing import parameterized
import tensorflow as tf

from sobolev_tf import extras

_INSTALL = 'pip install "sobolev_tf[experiments]"'
_EXPERIMENT_MODULES = (
  "sonnet",
  "gymnasium",
  "ale_py",
  "tensorflow_datasets",
  "sklearn",
)


@contextlib.contextmanager
def _without(module: str, package: str):
  """Imports of `module` fail, and `package` is imported afresh, until exit.

  `sys.modules[module] = None` is how Python marks a module as missing.
  """
  saved = {
    name: sys.modules.pop(name)
    for name in list(sys.modules)
    if name in (module, package) or name.startswith(f"{package}.")
  }
  sys.modules[module] = None
  try:
    yield
  finally:
    for name in list(sys.modules):
      if name in (module, package) or name.startswith(f"{package}."):
        del sys.modules[name]
    sys.modules.update(saved)


class RequireTest(tf.test.TestCase):
  def test_installed_modules_pass(self):
    extras.require("sobolev_tf.tasks", "experiments", ("numpy", "json"))

  def test_missing_modules_name_the_extra(self):
    with self.assertRaisesRegex(ImportError, "no_such_module") as caught:
      extras.require("sobolev_tf.tasks", "experiments", ("no_such_module",))
    self.assertIn(_INSTALL, str(caught.exception))
    self.assertEqual(caught.exception.name, "no_such_module")


class ExperimentPackagesTest(parameterized.TestCase):
  @parameterized.parameters(
    ("sobolev_tf.layers", "sonnet"),
    ("sobolev_tf.layers.atari", "sonnet"),
    ("sobolev_tf.tasks", "sonnet"),
    ("sobolev_tf.tasks.base", "tensorflow_datasets"),
    ("sobolev_tf.tasks.atari_env", "ale_py"),
  )
  def test_import_without_the_extra_names_it(self, package, module):
    top = ".".join(package.split(".")[:2])
    with _without(module, top):
      with self.assertRaisesRegex(ImportError, module) as caught:
        importlib.import_module(package)
    self.assertIn(_INSTALL, str(caught.exception))

  @parameterized.parameters("sobolev_tf.layers", "sobolev_tf.tasks")
  def test_import_with_the_extra_works(self, package):
    importlib.import_module(package)

  def test_core_needs_no_experiment_module(self):
    # A fresh interpreter: the core's modules are imported only once here.
    program = "\n".join(
      [
        "import sys",
        *(f"sys.modules[{name!r}] = None" for name in _EXPERIMENT_MODULES),
        "import sobolev_tf",
        "from sobolev_tf import model",
        "print(sobolev_tf.SobolevModel.__name__)",
      ]
    )
    result = subprocess.run(
      [sys.executable, "-c", program],
      capture_output=True,
      text=True,
      check=False,
    )
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    self.assertEqual(result.stdout.strip(), "SobolevModel")


if __name__ == "__main__":
  tf.test.main()
