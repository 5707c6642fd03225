"""A fitted 2-D surface on a grid: for TensorBoard images and Figure 3.

`grid_values` evaluates a network and its input gradient on a regular grid
of a benchmark function's domain; `surface_image` makes the values an
image for TensorBoard.
"""

from typing import Any
from typing import Callable
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from sobolev_tf.tasks import functions


def _grid(function: functions.BenchmarkFunction, resolution: int):
  """Grid coordinates `[R]`, `[R]` and the grid's points `[R * R, 2]`."""
  x1 = np.linspace(function.lower[0], function.upper[0], resolution)
  x2 = np.linspace(function.lower[1], function.upper[1], resolution)
  points = np.stack(np.meshgrid(x1, x2), axis=-1).reshape(-1, 2)
  return x1, x2, tf.constant(points, tf.float32)


def grid_values(
  network: keras.Model,
  function: functions.BenchmarkFunction,
  resolution: int = 64,
) -> Sequence[np.ndarray]:
  """Values and gradients of `network` on a regular grid of a 2-D domain.

  Returns:
    `(x1, x2, values, gradients)`: grid coordinates `[R]`, `[R]`, values
    `[R, R]` and gradients `[R, R, 2]` (rows follow `x2`).
  """
  x1, x2, points = _grid(function, resolution)
  with tf.GradientTape() as tape:
    tape.watch(points)
    values = network(points)
  gradients = tape.gradient(values, points)
  return (
    x1,
    x2,
    values.numpy().reshape(resolution, resolution),
    gradients.numpy().reshape(resolution, resolution, 2),
  )


def surface_image(
  network: Callable[[tf.Tensor], Any],
  function: functions.BenchmarkFunction,
  resolution: int = 64,
) -> tf.Tensor:
  """The network's values on a grid of a 2-D domain as an image.

  Args:
    network: a Keras model, or any function of points `[N, 2]` to values
      `[N, 1]` (a compiled one, such as `regression_model.Scorer.values`,
      saves a sweep's runs the eager calls).
    function: the domain's function.
    resolution: points per side.

  Returns:
    `[1, R, R, 1]` in [0, 1], the first row at the domain's top.
  """
  _, _, points = _grid(function, resolution)
  values = np.asarray(network(points)).reshape(resolution, resolution)
  scaled = (values - values.min()) / max(values.max() - values.min(), 1e-12)
  return tf.constant(scaled[::-1, :, None][None], tf.float32)  # [1, R, R, 1]
