"""Runs every notebook in examples/ top to bottom, so that none goes stale.

Each notebook reads its optimiser steps from `SOBOLEV_EXAMPLES_STEPS` near
its top; with a few steps every cell runs in seconds, and a notebook that no
longer matches the library fails here. The kernel is this interpreter's,
registered in a temporary directory, whatever kernels the machine has.
"""

import os
import pathlib
import tempfile
from unittest import mock

from absl.testing import parameterized
from ipykernel import kernelspec
import jupyter_client
import nbclient
import nbformat
import tensorflow as tf

_EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
_NOTEBOOKS = sorted(_EXAMPLES.glob("*.ipynb"))
_KERNEL = "sobolev_tf_examples"
_SETTINGS = {"SOBOLEV_EXAMPLES_STEPS": "10", "TF_CPP_MIN_LOG_LEVEL": "2"}
_CELL_TIMEOUT_SECONDS = 300


def _by_name():
  return [(path.stem, path) for path in _NOTEBOOKS]


def _kernel_manager(kernel_dir: str) -> jupyter_client.KernelManager:
  """A manager of kernels of `sys.executable`, the interpreter of the test."""
  kernelspec.write_kernel_spec(os.path.join(kernel_dir, _KERNEL))
  specs = jupyter_client.kernelspec.KernelSpecManager(
    kernel_dirs=[kernel_dir], ensure_native_kernel=False
  )
  return jupyter_client.KernelManager(
    kernel_name=_KERNEL, kernel_spec_manager=specs
  )


class ExamplesTest(tf.test.TestCase, parameterized.TestCase):
  def test_there_are_notebooks(self):
    self.assertNotEmpty(_NOTEBOOKS, f"no notebook in {_EXAMPLES}")

  @parameterized.named_parameters(_by_name())
  def test_runs_without_error(self, path):
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
      notebook,
      km=_kernel_manager(tempfile.mkdtemp(dir=self.get_temp_dir())),
      timeout=_CELL_TIMEOUT_SECONDS,
      resources={"metadata": {"path": str(_EXAMPLES)}},
    )
    # The kernel inherits the environment when it starts.
    with mock.patch.dict(os.environ, _SETTINGS):
      client.execute()  # A cell's error raises CellExecutionError.

  @parameterized.named_parameters(_by_name())
  def test_stored_with_outputs_cleared(self, path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    run = [
      index
      for index, cell in enumerate(notebook.cells)
      if cell.cell_type == "code"
      and (cell.outputs or cell.execution_count is not None)
    ]
    self.assertEqual(run, [], f"{path.name}: cells with outputs, clear them")


if __name__ == "__main__":
  tf.test.main()
