"""Installs sobolev_tf.

TensorFlow is an extra, as in Sonnet: `[cpu]` for `tensorflow-cpu`, `[gpu]` for
`tensorflow[and-cuda]`, so that either build satisfies the package. The core
(`SobolevModel`, the objective, the derivatives) needs TensorFlow, Keras and
NumPy alone; the experiments (`sobolev_tf.tasks`, `sobolev_tf.layers` and the
launchers in `launch/`, which run from the repository and are not installed)
need the `[experiments]` extra.
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
    "keras==3.15.1",
    "numpy>=1.26",
  ],
  extras_require={
    "cpu": ["tensorflow-cpu==2.21.0"],
    "gpu": ["tensorflow[and-cuda]==2.21.0"],
    "experiments": [
      "absl-py==2.5.1",
      "dm-sonnet==2.0.2",
      "gymnasium[atari]==1.4.0",
      "ale-py==0.12.1",
      "matplotlib==3.11.2",
      # The synthetic-gradient experiment's offline data set (digits).
      "scikit-learn==1.9.1",
      "tensorboard==2.21.0",
      "tensorflow-datasets==4.9.10",
    ],
    "test": [
      "hypothesis==6.170.17",
      "pytest==9.2.0",
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
