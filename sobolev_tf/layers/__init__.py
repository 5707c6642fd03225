"""Sonnet networks of the experiments.

They need the `experiments` extra: `pip install "sobolev_tf[experiments]"`.
"""

from sobolev_tf import extras

extras.require("sobolev_tf.layers", "experiments", ("sonnet",))
