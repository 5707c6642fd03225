"""Shared cases of the derivative tests: analytic functions, MLPs, tolerances.

`analytic_case` gives a TensorFlow function of any input and output shape
with hand-written NumPy derivatives; `smooth_mlp` a small float64 network
whose derivatives are checked against finite differences.
"""

import keras
import numpy as np
import tensorflow as tf

MODES = ("reverse", "forward", "auto")
DTYPES = (tf.float32, tf.float64)

# Autodiff against hand-written derivatives: both are a few dozen elementwise
# operations on values of size <= ~100, so they agree to a few hundred ulps
# (float64 eps = 2.2e-16, float32 eps = 1.2e-7), relatively.
ANALYTIC_TOLERANCE = {tf.float64: 1e-12, tf.float32: 1e-5}
# Two autodiff computations of the same float64 quantity (modes, projections
# against contractions of full derivatives, eager against graph or XLA, which
# fuses and reorders operations and brings its own tanh, exp and log1p
# kernels) differ only by round-off accumulated over a few reductions.
ROUND_OFF = 1e-10
# Central differences on the float64 MLP (see finite_differences): the default
# steps, eps^(1/3) ~ 6e-6 and eps^(1/4) ~ 1.2e-4, leave truncation and
# round-off errors of about 1e-10 for the Jacobian and 1e-8 for the Hessian of
# a function whose derivatives are O(1); the tolerances keep a 100x margin.
FD_JACOBIAN_TOLERANCE = 1e-8
FD_HESSIAN_TOLERANCE = 1e-6

# (name, input event shape, output event shape). The output has at most four
# coordinates, those of `_analytic_np`.
SHAPE_CASES = (
  ("vector_to_vector", (3,), (2,)),
  ("vector_to_scalar", (4,), ()),
  ("vector_to_matrix", (2,), (2, 2)),
  ("matrix_to_vector", (2, 3), (3,)),
  ("matrix_to_matrix", (2, 2), (2, 2)),
)
# Fewer shapes for Hessians: eager nested forward accumulators trace for ~2.5 s
# on every new shape. These still cover rank-2 inputs and outputs.
HESSIAN_SHAPE_CASES = (SHAPE_CASES[0], SHAPE_CASES[1], SHAPE_CASES[4])


def size(shape):
  """The number of entries of an event shape."""
  return int(np.prod(shape, dtype=np.int64))


def _cubic_weights(n):
  return np.arange(1, n + 1, dtype=np.float64) / n


def _exp_weights(n):
  return 0.5 * np.cos(np.arange(n, dtype=np.float64))


def _analytic_np(x):
  """Four functions of `x` `[B, n]` with their Jacobians and Hessians.

  f0 = sum_ij sin(x_i) x_j^2, f1 = prod_i tanh(x_i), f2 = exp(<a, x>) and
  f3 = sum_i w_i x_i^3.

  Args:
    x: float64 array `[B, n]`.

  Returns:
    `(value [B, 4], jacobian [B, 4, n], hessian [B, 4, n, n])`.
  """
  n = x.shape[1]
  eye = np.eye(n)
  sin, cos = np.sin(x), np.cos(x)
  sum_sin = sin.sum(-1)[:, None]
  sum_squares = (x**2).sum(-1)[:, None]
  f0 = sum_sin * sum_squares
  j0 = cos * sum_squares + 2 * sum_sin * x
  h0 = (
    (-sin * sum_squares + 2 * sum_sin)[:, :, None] * eye
    + 2 * cos[:, :, None] * x[:, None, :]
    + 2 * x[:, :, None] * cos[:, None, :]
  )

  t = np.tanh(x)
  dt = 1 - t**2
  ddt = -2 * t * dt

  def prod_except(*skipped):
    kept = [i for i in range(n) if i not in skipped]
    return np.prod(t[:, kept], axis=-1)

  f1 = prod_except()[:, None]
  j1 = np.stack([dt[:, k] * prod_except(k) for k in range(n)], -1)
  h1 = np.zeros(x.shape + (n,))
  for k in range(n):
    for m in range(n):
      if k == m:
        h1[:, k, m] = ddt[:, k] * prod_except(k)
      else:
        h1[:, k, m] = dt[:, k] * dt[:, m] * prod_except(k, m)

  a = _exp_weights(n)
  f2 = np.exp(x @ a)[:, None]
  j2 = f2 * a
  h2 = f2[:, :, None] * np.outer(a, a)

  w = _cubic_weights(n)
  f3 = (w * x**3).sum(-1)[:, None]
  j3 = 3 * w * x**2
  h3 = (6 * w * x)[:, :, None] * eye

  return (
    np.concatenate([f0, f1, f2, f3], -1),
    np.stack([j0, j1, j2, j3], 1),
    np.stack([h0, h1, h2, h3], 1),
  )


def _analytic_tf(x):
  """`_analytic_np`'s values in TensorFlow, `[B, n] -> [B, 4]`."""
  n = x.shape[1]
  a = tf.constant(_exp_weights(n), x.dtype)
  w = tf.constant(_cubic_weights(n), x.dtype)
  sum_squares = tf.reduce_sum(tf.square(x), -1)
  return tf.stack(
    [
      tf.reduce_sum(tf.sin(x), -1) * sum_squares,
      tf.reduce_prod(tf.tanh(x), -1),
      tf.exp(tf.reduce_sum(x * a, -1)),
      tf.reduce_sum(w * x**3, -1),
    ],
    -1,
  )


def analytic_case(in_shape, out_shape):
  """A TF function `[B, in...] -> [B, out...]` and its NumPy derivatives."""
  in_size, out_size = size(in_shape), size(out_shape)

  def fn(x):
    y = _analytic_tf(tf.reshape(x, [-1, in_size]))[:, :out_size]
    return tf.reshape(y, [-1, *out_shape])

  def reference(x):
    """`(value, jacobian, hessian)` of `fn` at the float64 array `x`."""
    batch = x.shape[0]
    value, jac, hess = _analytic_np(x.reshape(batch, in_size))
    return (
      value[:, :out_size].reshape((batch, *out_shape)),
      jac[:, :out_size].reshape((batch, *out_shape, *in_shape)),
      hess[:, :out_size].reshape((batch, *out_shape, *in_shape, *in_shape)),
    )

  return fn, reference


def inputs(in_shape, dtype=tf.float64, batch=3, seed=0):
  """A seeded batch `[batch, in...]`, uniform in [-1.5, 1.5]."""
  x = np.random.default_rng(seed).uniform(-1.5, 1.5, (batch, *in_shape))
  return tf.constant(x, dtype)


def smooth_mlp(in_shape, out_shape, dtype="float64", seed=0):
  """A smooth MLP `[B, in...] -> [B, out...]` (tanh and softplus)."""
  keras.utils.set_random_seed(seed)
  layers = [keras.Input(in_shape, dtype=dtype)]
  if len(in_shape) > 1:
    layers.append(keras.layers.Flatten(dtype=dtype))
  layers += [
    keras.layers.Dense(8, activation="tanh", dtype=dtype),
    keras.layers.Dense(8, activation="softplus", dtype=dtype),
    keras.layers.Dense(size(out_shape), dtype=dtype),
  ]
  if len(out_shape) != 1:
    layers.append(keras.layers.Reshape(out_shape, dtype=dtype))
  return keras.Sequential(layers)


def directions(shape, dtype=tf.float64, seed=0):
  """Seeded standard normal directions of `shape`."""
  v = np.random.default_rng(seed).normal(size=shape)
  return tf.constant(v, dtype)
