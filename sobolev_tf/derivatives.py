"""Full input derivatives of batched differentiable functions.

Every function here takes a callable `fn` that maps a batch `x` of shape
`[B, in...]` to a batch `y` of shape `[B, out...]`, with examples independent of
each other (no batch statistics in training mode), and differentiates `y` with
respect to `x` example by example. `fn` may be a Keras model, a Sonnet module or
any TensorFlow function. The results stay differentiable with respect to the
variables `fn` reads, so an outer `tf.GradientTape` can train through them
("double backprop").

Full derivatives are stacks of vector-Jacobian products (reverse mode) or
Jacobian-vector products (forward mode: `tf.autodiff.ForwardAccumulator`, or
under XLA, where that compiles badly, the derivative of a vector-Jacobian
product), one per output or input coordinate. Unlike
`GradientTape.batch_jacobian`, which vectorises with `pfor`, these unrolled
loops compile quickly under XLA and inside an outer tape. The exception is a
first-order reverse-mode Jacobian of several outputs under XLA: its
vector-Jacobian products run as one vectorised pass, as `jax.vmap` runs
them (see `value_and_jacobian`). Derivatives along given or random
directions, which never build a full Jacobian, are in `projections`.
"""

from typing import Callable
from typing import List
from typing import Tuple

import numpy as np
import tensorflow as tf

from sobolev_tf import private_api

JACOBIAN_MODES = ("auto", "reverse", "forward")

BatchFn = Callable[[tf.Tensor], tf.Tensor]


def check_input(x: tf.Tensor) -> tf.Tensor:
  """`x` as a tensor, checked to be a floating-point batch `[B, in...]`."""
  x = tf.convert_to_tensor(x)
  if not x.dtype.is_floating:
    raise ValueError(
      "Derivatives with respect to the input need a floating-point input. "
      f"Received: x with dtype={x.dtype.name}; cast it to float32 or "
      "float64 first."
    )
  if x.shape.rank is None or x.shape.rank < 2:
    raise ValueError(
      "Expected a batched input of shape [B, in...] with rank >= 2. "
      f"Received: x with shape={x.shape}."
    )
  return x


def check_output(y, what: str = "fn(x)") -> tf.Tensor:
  """`y`, failing clearly unless it is one tensor (not several outputs)."""
  if isinstance(y, (list, tuple, dict)):
    raise ValueError(
      f"Expected {what} to be a single tensor [B, out...]; derivatives are "
      f"taken of one output. Received: a {type(y).__name__} of "
      f"{len(y)} outputs. Concatenate them into one output (for example "
      "with keras.layers.Concatenate) or train one model per output."
    )
  return y


def static_size(shape: tf.TensorShape, what: str) -> int:
  """The number of entries of a non-batch `shape`, which must be static."""
  if not shape.is_fully_defined():
    raise ValueError(
      f"The non-batch shape of {what} must be known statically to build its "
      f"derivatives. Received: shape={shape}."
    )
  return int(np.prod(shape.as_list(), dtype=np.int64))


def _check_mode(mode: str) -> None:
  if mode not in JACOBIAN_MODES:
    raise ValueError(
      f"Received an invalid value for `mode`, expected one of "
      f"{JACOBIAN_MODES}. Received: mode={mode!r}"
    )


def training_mode(mode: str) -> str:
  """The Jacobian mode to use for derivatives that will be trained through.

  Eagerly that is always reverse mode, whatever is asked: in TensorFlow 2.21
  an outer `GradientTape` differentiates eager forward-over-reverse results
  wrongly (some variables get `None`, others wrong values; inside
  `tf.function` they are right).

  Args:
    mode: one of `JACOBIAN_MODES`.

  Returns:
    `mode`, or `"reverse"` when executing eagerly.
  """
  _check_mode(mode)
  return "reverse" if tf.executing_eagerly() else mode


def choose_jacobian_mode(input_size: int, output_size: int) -> str:
  """Returns the cheaper autodiff mode for a full Jacobian.

  Reverse mode costs one vector-Jacobian product per output coordinate and
  forward mode one Jacobian-vector product per input coordinate; each product
  costs a small multiple of a forward pass, so the smaller count wins. Ties go
  to reverse mode, which shares one forward pass between its products. Under
  XLA a forward product is a double backward pass, about two reverse ones,
  so forward mode needs more than twice as many outputs as inputs there.

  Under eager execution the answer is always reverse mode (see
  `training_mode`): training differentiates these derivatives again.

  Args:
    input_size: number of input coordinates per example.
    output_size: number of output coordinates per example.

  Returns:
    `"reverse"` or `"forward"`.
  """
  if tf.executing_eagerly():
    return "reverse"
  forward_cost = 2 * input_size if private_api.in_xla_context() else input_size
  return "forward" if output_size > forward_cost else "reverse"


def basis(
  index: int,
  size: int,
  batch_shape: tf.Tensor,
  event_shape: tf.TensorShape,
  dtype: tf.DType,
) -> tf.Tensor:
  """The `index`-th standard basis vector, broadcast over the batch."""
  one_hot = tf.reshape(tf.one_hot(index, size, dtype=dtype), event_shape)
  return tf.broadcast_to(one_hot, tf.concat([batch_shape, event_shape], 0))


def value_and_jacobian(
  fn: BatchFn, x: tf.Tensor, mode: str = "auto"
) -> Tuple[tf.Tensor, tf.Tensor]:
  """Returns `fn(x)` and its per-example Jacobian with respect to `x`.

  Args:
    fn: batched callable, `[B, in...] -> [B, out...]`.
    x: floating-point input batch, `[B, in...]`.
    mode: `"reverse"` (one vector-Jacobian product per output coordinate),
      `"forward"` (one Jacobian-vector product per input coordinate) or
      `"auto"` (whichever needs fewer products, see `choose_jacobian_mode`).
      Do not train through eager `"forward"` results: see
      `choose_jacobian_mode`. Under XLA, reverse mode with several outputs
      runs its products as one vectorised pass (`pfor`, as `jax.vmap`):
      one batched product per layer instead of one per output, 9% faster
      in a 32->8 MLP's training step (docs/RESULTS.md). Outside XLA the
      products stay unrolled, which measured as fast.

  Returns:
    `(y, jacobian)` with `y = fn(x)` of shape `[B, out...]` and `jacobian` of
    shape `[B, out..., in...]`, `jacobian[b, o..., i...] = dy[b, o...] /
    dx[b, i...]`.

  Raises:
    ValueError: for a non-floating or unbatched `x`, an unknown `mode`, or
      shapes that are not static.
  """
  return _value_and_jacobian(fn, x, mode, vectorize=True)


def _value_and_jacobian(
  fn: BatchFn, x: tf.Tensor, mode: str, vectorize: bool
) -> Tuple[tf.Tensor, tf.Tensor]:
  """`value_and_jacobian`; `vectorize`: may vectorise reverse mode."""
  _check_mode(mode)
  x = check_input(x)
  in_shape = x.shape[1:]
  in_size = static_size(in_shape, "x")
  batch_shape = tf.shape(x)[:1]
  if mode == "forward":
    return _forward_jacobian(fn, x, in_shape, in_size, batch_shape)

  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    y = check_output(fn(x))
  out_shape = y.shape[1:]
  out_size = static_size(out_shape, "fn(x)")
  if mode == "auto" and choose_jacobian_mode(in_size, out_size) == "forward":
    del tape
    return _forward_jacobian(fn, x, in_shape, in_size, batch_shape)

  def row(k):
    return tape.gradient(
      y,
      x,
      output_gradients=basis(k, out_size, batch_shape, out_shape, y.dtype),
      unconnected_gradients="zero",
    )

  jacobian = None
  if vectorize and out_size > 1 and private_api.in_xla_context():
    jacobian = _vectorized_rows(row, out_size)
  if jacobian is None:
    jacobian = tf.stack([row(k) for k in range(out_size)], axis=1)
  # jacobian: [B, out_size, in...]
  return y, tf.reshape(
    jacobian, tf.concat([batch_shape, out_shape, in_shape], 0)
  )


def _vectorized_rows(row: Callable[[tf.Tensor], tf.Tensor], size: int):
  """`row(k)` for k < size stacked on axis 1 by `pfor`; None if it cannot.

  A loop `pfor` cannot convert (an op without a converter) is stacked by
  the caller instead (`private_api.vectorized_loop`).
  """
  rows = private_api.vectorized_loop(row, size)
  if rows is None:
    return None
  rank = rows.shape.rank
  return tf.transpose(rows, [1, 0] + list(range(2, rank)))


def _forward_jacobian(
  fn: BatchFn,
  x: tf.Tensor,
  in_shape: tf.TensorShape,
  in_size: int,
  batch_shape: tf.Tensor,
) -> Tuple[tf.Tensor, tf.Tensor]:
  if private_api.in_xla_context():
    # Under XLA, ForwardAccumulator's products compile into a program that
    # runs ~500 times slower as soon as the same program also updates a
    # variable (an optimiser step); the double-backward products do not.
    tangents = tf.stack(
      [
        basis(i, in_size, batch_shape, in_shape, x.dtype)
        for i in range(in_size)
      ],
      axis=1,
    )  # [B, in_size, in...]
    y, jacobian = value_and_jacobian_vector_products(fn, x, tangents)
  else:
    columns = []
    for i in range(in_size):
      tangent = basis(i, in_size, batch_shape, in_shape, x.dtype)
      with tf.autodiff.ForwardAccumulator(x, tangent) as accumulator:
        y = check_output(fn(x))
      columns.append(accumulator.jvp(y, unconnected_gradients="zero"))
    jacobian = tf.stack(columns, axis=-1)  # [B, out..., in_size]
  out_shape = y.shape[1:]
  return y, tf.reshape(
    jacobian, tf.concat([batch_shape, out_shape, in_shape], 0)
  )


def jacobian(fn: BatchFn, x: tf.Tensor, mode: str = "auto") -> tf.Tensor:
  """Per-example Jacobian `[B, out..., in...]`; see `value_and_jacobian`."""
  return value_and_jacobian(fn, x, mode)[1]


def value_and_derivatives(
  fn: BatchFn, x: tf.Tensor, order: int, mode: str = "auto"
) -> List[tf.Tensor]:
  """Returns `[fn(x), D^1, ..., D^order]`, full derivatives up to `order`.

  `D^k` has shape `[B, out..., in..., (in...) * (k - 1)]`: each order adds the
  input axes at the end, `D^2[b, o, i, j] = d^2 y[b, o] / dx[b, i] dx[b, j]`.
  Each order is the Jacobian of the one below. `mode` applies to the highest
  order only; lower orders are always reverse mode, so a Hessian is
  reverse-over-reverse or forward-over-reverse (`mode="auto"` takes forward
  for the top order when the Jacobian has more entries than the input).

  Args:
    fn: batched callable, `[B, in...] -> [B, out...]`.
    x: floating-point input batch, `[B, in...]`.
    order: highest derivative order, >= 0.
    mode: autodiff mode of the highest order, as in `value_and_jacobian`.

  Returns:
    A list of `order + 1` tensors.

  Raises:
    ValueError: for a negative `order` or the errors of `value_and_jacobian`.
  """
  if order < 0:
    raise ValueError(
      f"Received an invalid value for `order`, expected a non-negative "
      f"integer. Received: order={order}"
    )
  if order == 0:
    return [check_output(fn(x))]
  if order == 1:
    return list(_value_and_jacobian(fn, x, mode, vectorize=True))
  lower = []

  def top_derivative(inputs):
    # Lower orders in reverse mode: TF 2.21 differentiates forward-over-forward
    # results wrongly through an outer tape, even inside tf.function.
    lower[:] = value_and_derivatives(fn, inputs, order - 1, "reverse")
    return lower[-1]

  # Higher orders stay unrolled: a vectorised pass holds every row's
  # activations at once (out x in rows for a Hessian).
  _, top = _value_and_jacobian(top_derivative, x, mode, vectorize=False)
  return lower + [top]


def hessian(fn: BatchFn, x: tf.Tensor, mode: str = "auto") -> tf.Tensor:
  """Per-example Hessian `[B, out..., in..., in...]` of `fn` at `x`."""
  return value_and_derivatives(fn, x, 2, mode)[2]


def value_and_jacobian_vector_products(
  fn: BatchFn, x: tf.Tensor, tangents: tf.Tensor
) -> Tuple[tf.Tensor, tf.Tensor]:
  """Returns `fn(x)` and its directional derivatives along `tangents`.

  `J v` for each direction `v`, without a full Jacobian: the
  vector-Jacobian product `g(u) = J^T u` is linear in `u`, and its
  derivative along `v`, `d<g(u), v>/du`, is `J v` ("double backward").
  Unlike `tf.autodiff.ForwardAccumulator` this is right eagerly under an
  outer tape (see `training_mode`) and compiles with XLA.

  Args:
    fn: batched callable, `[B, in...] -> [B, out...]`.
    x: floating-point input batch, `[B, in...]`.
    tangents: directions in input space, `[B, K, in...]`, `K` static.

  Returns:
    `(y, jvps)`: `y = fn(x)` `[B, out...]` and `jvps` `[B, out..., K]`,
    `jvps[b, o..., k] = sum_i J[b, o..., i] tangents[b, k, i]`.

  Raises:
    ValueError: for a non-floating or unbatched `x`.
  """
  x = check_input(x)
  count = static_size(tangents.shape[1:2], "the number of tangents K")
  with tf.GradientTape(persistent=True) as dual_tape:
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = check_output(fn(x))
    cotangent = tf.zeros_like(y)
    dual_tape.watch(cotangent)
    pullback = tape.gradient(
      y, x, output_gradients=cotangent, unconnected_gradients="zero"
    )  # [B, in...], J^T u
  jvps = [
    dual_tape.gradient(
      pullback,
      cotangent,
      output_gradients=tf.cast(tangents[:, k], x.dtype),
      unconnected_gradients="zero",
    )
    for k in range(count)
  ]
  del dual_tape
  return y, tf.stack(jvps, axis=-1)  # [B, out..., K]
