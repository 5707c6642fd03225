"""pytest set-up: the same suite on a CPU-only host and on accelerator hosts.

* Two logical CPUs, so distribution tests run on one host whatever else it
  has (the tests place their replicas on `/cpu:0` and `/cpu:1`).
* TensorFloat-32 off: on an Ampere or newer GPU, TensorFlow would otherwise
  round float32 products to 10-bit mantissas, and tests compare float32
  results to 1e-5.
* `--host=accelerator` runs the whole session as an accelerator host would
  see it (`execution.on_cpu_only` answers False), so that the suite shows
  on this machine that nothing in it assumes a CPU-only host:
  `pytest tests --host=accelerator`. Tests of host-dependent behaviour
  mock the answer both ways themselves.
"""

from unittest import mock

import pytest
import tensorflow as tf

from sobolev_tf import execution
from sobolev_tf import testing

testing.configure_logical_cpus(2)
tf.config.experimental.enable_tensor_float_32_execution(False)


def pytest_addoption(parser):
  parser.addoption(
    "--host",
    choices=("this", "accelerator"),
    default="this",
    help="'accelerator': execution.on_cpu_only() answers False all session.",
  )


@pytest.fixture(autouse=True, scope="session")
def _host(request):
  if request.config.getoption("--host") == "accelerator":
    with mock.patch.object(execution, "on_cpu_only", return_value=False):
      yield
  else:
    yield
