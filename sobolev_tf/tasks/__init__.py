"""Experiment tasks.

The paper's benchmark functions, Atari distillation and synthetic gradients.
They need the `experiments` extra: `pip install "sobolev_tf[experiments]"`.
"""

from sobolev_tf import extras

extras.require(
  "sobolev_tf.tasks",
  "experiments",
  ("sonnet", "gymnasium", "ale_py", "tensorflow_datasets", "sklearn"),
)
