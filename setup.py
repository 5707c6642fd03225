"""Installs sobolev_tf.

TensorFlow is an extra, as in Sonnet: `[cpu]` for `tensorflow-cpu`, `[gpu]` for
`tensorflow[and-cuda]`, so that either build satisfies the package. The core
(`SobolevModel`, the objective, the derivatives) needs TensorFlow, Keras and
NumPy alone; the experiments (`sobolev_tf.tasks`, `sobolev_tf.layers` and the
launchers in `launch/`, which run from the repository and are not installed)
need the `[experiments]` extra.

Dependencies are ranges, from the lowest versions the library is tested with
(`requirements-lowest.txt`, run by `make test-lowest`) to the next major;
`requirements.txt` pins the newest tested set. The floors were found by
running the tests:

* TensorFlow 2.16: the first that takes Keras 3.
* Keras 3.10: under `MirroredStrategy`, earlier versions end with metrics
  or weights that differ from one device's (Keras 3.3 and 3.4 with
  TensorFlow 2.16, 3.6 with 2.19, 3.7 to 3.9 with both), a plain Keras
  model's too.
* TensorBoard 2.16.2: 2.16.0 and 2.16.1 pull in a second TensorFlow.
* Sonnet 2.0.2: earlier versions fail to import with TensorFlow 2.16 or
  NumPy 1.24+.
* ale-py 0.11.1 and Gymnasium 1.1: the vector environment's
  `autoreset_mode`.
* TensorFlow Datasets 4.9.3: earlier versions need protobuf 3 or an
  undeclared `dill`.

The dev tools (`test`, `lint`, `bench`, `docs`) stay pinned, so that test
and lint results do not move under the code.
"""

import pathlib
import re

import setuptools

_ROOT = pathlib.Path(__file__).parent


def _version() -> str:
  init = (_ROOT / "sobolev_tf" / "__init__.py").read_text()
  return re.search(r'^__version__ = "([^"]+)"', init, re.M).group(1)


setuptools.setup(
  name="sobolev_tf",
  version=_version(),
  description="Sobolev Training for Neural Networks in TF2, Keras 3 and "
  "Sonnet 2.",
  long_description=(_ROOT / "README.md").read_text(),
  long_description_content_type="text/markdown",
  python_requires=">=3.10",
  packages=setuptools.find_packages(include=["sobolev_tf", "sobolev_tf.*"]),
  install_requires=[
    "keras>=3.10,<4",
    "numpy>=1.26,<3",
  ],
  extras_require={
    "cpu": ["tensorflow-cpu>=2.16.1,<3"],
    "gpu": ["tensorflow[and-cuda]>=2.16.1,<3"],
    "experiments": [
      "absl-py>=1.0,<3",
      "dm-sonnet>=2.0.2,<3",
      "gymnasium[atari]>=1.1,<2",
      "ale-py>=0.11.1,<1",
      "matplotlib>=3.8,<4",
      # The synthetic-gradient experiment's offline data set (digits).
      "scikit-learn>=1.3,<2",
      "tensorboard>=2.16.2,<3",
      "tensorflow-datasets>=4.9.3,<5",
    ],
    "test": [
      "hypothesis==6.170.17",
      "pytest==9.2.0",
      # tests/packaging_test.py builds the sdist and the wheel.
      "build==1.6.1",
      # `make test` runs the suite on every core (`pytest -n auto`).
      "pytest-xdist==3.8.0",
      # tests/examples_test.py runs the notebooks of examples/.
      "ipykernel==7.4.0",
      "nbclient==0.11.0",
      "nbformat==5.11.1",
    ],
    "bench": ["jax==0.10.2", "jaxlib==0.10.2"],
    "lint": ["ruff==0.17.6"],
    # The API reference: `make docs` (mkdocs.yml).
    "docs": ["mkdocs==1.6.1", "mkdocstrings[python]==1.0.8"],
  },
  license="Apache-2.0",
)
