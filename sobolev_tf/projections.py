"""Input derivatives along directions: projections, JVPs and HVPs.

Stochastic Sobolev Training (Czarnecki et al., 2017, Figure 1) matches
derivatives projected on random directions instead of whole Jacobians and
Hessians: per output direction `v1` the vector-Jacobian product
`D_x <fn(x), v1>`, per pair `(v1, v2)` the Hessian-vector product
`D_x < D_x <fn(x), v1>, v2 >`. Directional data (`H v` along directions
the data carries) is matched with Hessian-vector products (and `J v` with
`derivatives.value_and_jacobian_vector_products`). Each costs one product
per direction, whatever the sizes. The conventions (batched callables,
trainable results) are those of `derivatives`.
"""

from typing import Callable
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import tensorflow as tf

from sobolev_tf import derivatives
from sobolev_tf import private_api

BatchFn = Callable[[tf.Tensor], tf.Tensor]
DirectionPair = Tuple[Sequence[tf.Tensor], Optional[Sequence[tf.Tensor]]]


def value_and_projected_derivatives(
  fn: BatchFn,
  x: tf.Tensor,
  output_directions: Sequence[tf.Tensor],
  input_directions: Optional[Sequence[tf.Tensor]] = None,
) -> Tuple[tf.Tensor, List[tf.Tensor], List[tf.Tensor]]:
  """Returns `fn(x)` and randomly projected first and second derivatives.

  For each output direction `v1` (shape `[B, out...]`) the first-order
  projection is the vector-Jacobian product `D_x <fn(x), v1>`; for each pair
  `(v1, v2)` with `v2` of shape `[B, in...]` the second-order projection is
  `D_x < D_x <fn(x), v1>, v2 >`, a Hessian-vector product of the scalar
  `<fn(x), v1>`. All products share one forward pass (Figure 1 of the paper).

  Args:
    fn: batched callable, `[B, in...] -> [B, out...]`.
    x: floating-point input batch, `[B, in...]`.
    output_directions: `P` tensors of shape `[B, out...]`.
    input_directions: `None` for first order only, or `P` tensors of shape
      `[B, in...]`, one per output direction.

  Returns:
    `(y, first, second)`: `y = fn(x)`, `first` a list of `P` tensors
    `[B, in...]` and `second` a list of `P` tensors `[B, in...]` (empty when
    `input_directions` is `None`).

  Raises:
    ValueError: for a non-floating or unbatched `x`, or direction lists of
      different lengths.
  """
  y, first, second, _ = projected_derivatives_with_sampler(
    fn, x, lambda unused_y: (output_directions, input_directions)
  )
  return y, first, second


def projected_derivatives_with_sampler(
  fn: BatchFn, x: tf.Tensor, sample: Callable[[tf.Tensor], DirectionPair]
) -> Tuple[tf.Tensor, List[tf.Tensor], List[tf.Tensor], DirectionPair]:
  """`value_and_projected_derivatives` with directions drawn from `fn(x)`.

  The output directions need the output's shape, known only after the
  forward pass; `sample(y)` is called between the forward pass and the
  products, so the pass is shared.

  Args:
    fn: batched callable, `[B, in...] -> [B, out...]`.
    x: floating-point input batch, `[B, in...]`.
    sample: maps `y = fn(x)` to `(output_directions, input_directions)` as
      taken by `value_and_projected_derivatives`.

  Returns:
    `(y, first, second, directions)`, `directions` being what `sample`
    returned, so that a teacher can be projected on the same ones.

  Raises:
    ValueError: as `value_and_projected_derivatives`.
  """
  x = derivatives.check_input(x)
  with tf.GradientTape(persistent=True) as outer_tape:
    outer_tape.watch(x)
    with tf.GradientTape(persistent=True) as inner_tape:
      inner_tape.watch(x)
      y = derivatives.check_output(fn(x))
    output_directions, input_directions = sample(y)
    if input_directions is not None and (
      len(input_directions) != len(output_directions)
    ):
      raise ValueError(
        "Expected one input direction per output direction. Received: "
        f"{len(output_directions)} output and {len(input_directions)} "
        "input directions."
      )
    first = [
      inner_tape.gradient(
        y, x, output_gradients=v1, unconnected_gradients="zero"
      )
      for v1 in output_directions
    ]
  del inner_tape
  second = []
  if input_directions is not None:
    second = [
      outer_tape.gradient(
        g, x, output_gradients=v2, unconnected_gradients="zero"
      )
      for g, v2 in zip(first, input_directions, strict=True)
    ]
  del outer_tape
  return y, first, second, (output_directions, input_directions)


def hessian_vector_products(
  fn: BatchFn, x: tf.Tensor, tangents: tf.Tensor
) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Returns `fn(x)`, `J v` and `H v` for each direction `v` in `tangents`.

  `H v` is the input gradient of each output's directional derivative: one
  vector-Jacobian product per output coordinate and direction, never a
  full Hessian.

  Args:
    fn: batched callable, `[B, in...] -> [B, out...]`.
    x: floating-point input batch, `[B, in...]`.
    tangents: directions in input space, `[B, K, in...]`, `K` static.

  Returns:
    `(y, jvps, hvps)`: `y` `[B, out...]`, `jvps` `[B, out..., K]` and
    `hvps` `[B, out..., K, in...]`, `hvps[b, o..., k, j] = sum_i
    H[b, o..., i, j] tangents[b, k, i]`.

  Raises:
    ValueError: for a non-floating or unbatched `x`.
  """
  x = derivatives.check_input(x)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    y, jvps = derivatives.value_and_jacobian_vector_products(fn, x, tangents)
  event_shape = jvps.shape[1:]
  size = derivatives.static_size(event_shape, "fn(x)")
  batch_shape = tf.shape(x)[:1]
  rows = [
    tape.gradient(
      jvps,
      x,
      output_gradients=derivatives.basis(
        k, size, batch_shape, event_shape, jvps.dtype
      ),
      unconnected_gradients="zero",
    )
    for k in range(size)
  ]
  del tape
  hvps = tf.stack(rows, axis=1)  # [B, out... * K, in...]
  return (
    y,
    jvps,
    tf.reshape(hvps, tf.concat([batch_shape, event_shape, tf.shape(x)[1:]], 0)),
  )


def vector_jacobian_product(
  fn: BatchFn, x: tf.Tensor, direction: tf.Tensor
) -> tf.Tensor:
  """`D_x <fn(x), direction>` per example, shape `[B, in...]`."""
  return value_and_projected_derivatives(fn, x, [direction])[1][0]


def projected_hessian(
  fn: BatchFn,
  x: tf.Tensor,
  output_direction: tf.Tensor,
  input_direction: tf.Tensor,
) -> tf.Tensor:
  """`D_x < D_x <fn(x), output_direction>, input_direction >`, `[B, in...]`."""
  return value_and_projected_derivatives(
    fn, x, [output_direction], [input_direction]
  )[2][0]


def project_jacobian(
  jacobian_value: tf.Tensor, output_direction: tf.Tensor
) -> tf.Tensor:
  """Contracts a full Jacobian `[B, out..., in...]` with `v1` `[B, out...]`.

  Gives the same `[B, in...]` tensor as `vector_jacobian_product` would on the
  function whose Jacobian this is; used for derivative targets given as
  arrays.
  """
  jacobian_value = tf.convert_to_tensor(jacobian_value)
  output_direction = tf.convert_to_tensor(output_direction)
  out_rank = output_direction.shape.rank - 1
  batch = tf.shape(jacobian_value)[:1]
  in_shape = tf.shape(jacobian_value)[1 + out_rank :]
  flat = tf.reshape(
    jacobian_value, tf.stack([batch[0], -1, tf.reduce_prod(in_shape)])
  )
  flat_direction = tf.reshape(output_direction, tf.concat([batch, [-1]], 0))
  projected = _vector_times_matrix(flat_direction, flat)
  return tf.reshape(projected, tf.concat([batch, in_shape], 0))


def project_hessian(
  hessian_value: tf.Tensor,
  output_direction: tf.Tensor,
  input_direction: tf.Tensor,
) -> tf.Tensor:
  """Contracts a full Hessian `[B, out..., in..., in...]` with `v1` and `v2`.

  Matches `projected_hessian`: `sum_{o, i} v1[o] H[o, i, j] v2[i]`. The
  output axes are contracted first and then the first input axes, each a
  product with the Hessian in its own layout. XLA compiles the equivalent
  three-way `einsum` with a transpose of the whole Hessian, a third of a
  millisecond more per step for 256 Hessians of 8 × 32 × 32 on a 2-core
  CPU.
  """
  hessian_value = tf.convert_to_tensor(hessian_value)
  batch = tf.shape(hessian_value)[:1]
  in_shape = tf.shape(input_direction)[1:]
  in_size = tf.reduce_prod(in_shape)
  flat = tf.reshape(hessian_value, tf.stack([batch[0], -1, in_size * in_size]))
  flat_v1 = tf.reshape(output_direction, tf.concat([batch, [-1]], 0))
  flat_v2 = tf.reshape(input_direction, tf.stack([batch[0], in_size]))
  along_v1 = tf.reshape(
    _vector_times_matrix(flat_v1, flat), tf.stack([batch[0], in_size, in_size])
  )  # [B, in_size, in_size]: sum_o v1[o] H[o, i, j].
  projected = _vector_times_matrix(flat_v2, along_v1)
  return tf.reshape(projected, tf.concat([batch, in_shape], 0))


def _vector_times_matrix(vectors: tf.Tensor, matrices: tf.Tensor) -> tf.Tensor:
  """`[B, K] x [B, K, N] -> [B, N]`: each example's vector times its matrix."""
  return tf.matmul(vectors[:, tf.newaxis, :], matrices)[:, 0, :]


def sample_directions(
  num_directions: int, like: tf.Tensor, seed: tf.Tensor
) -> tf.Tensor:
  """Samples directions uniformly on the unit sphere, one per example.

  Args:
    num_directions: how many directions `P` to draw for each example.
    like: a batch `[B, event...]` whose shape and dtype the directions take.
    seed: stateless seed, int tensor of shape `[2]`. The same seed gives the
      same directions every time, in eager mode, under `tf.function` and in
      every `tf.distribute` replica; under XLA too, though XLA's numbers differ
      from the uncompiled ones.

  Returns:
    A `[P, B, event...]` tensor whose `[event...]` slices have unit norm.
  """
  shape = tf.concat([[num_directions], tf.shape(like)], 0)
  # A fixed algorithm, not the default one, which varies with the device.
  # Philox runs everywhere; under XLA, Threefry (which TensorFlow's kernels
  # lack) draws the same distribution about a third faster on CPU, which is
  # ~4% of a small network's stochastic second-order step.
  normal = tf.random.stateless_normal(
    shape,
    seed=seed,
    dtype=like.dtype,
    alg="threefry" if private_api.in_xla_context() else "philox",
  )
  event_axes = list(range(2, like.shape.rank + 1))
  return normal * tf.math.rsqrt(
    tf.reduce_sum(tf.square(normal), axis=event_axes, keepdims=True)
  )
