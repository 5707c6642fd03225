"""A JAX reference of the benchmarked Sobolev training steps.

The networks of `tf_trainer.keras_net` in `jax.numpy` and the objective of
`sobolev_tf.SobolevObjective` as the benchmarks configure it
(`workloads.objective_kwargs`: one weighted mean squared error per order, one
projection per example); `jax_trainer` trains them.
`tests/jax_reference_test.py` checks that the loss and its gradients with
respect to the weights equal the library's on the same weights, targets and
directions, for every step kind.

Each term is Keras's `mean_squared_error` on `[B, D]`-flattened tensors,
i.e. the mean over every element. Stochastic steps project on given
directions, drawn per example and step with `jax.random` in training
(`sample_directions`), through nested `jax.vjp`, as sobolev_tf does with
nested tapes; array targets are projected on the same directions and a
teacher is projected like the model. Full derivatives are built by one of
`workloads.FULL_METHODS`: `vmap`, per example `jax.vmap(jax.jacrev)` (order
1) and `jax.vmap(jax.jacfwd(jax.jacrev))` (order 2); `unrolled`, one VJP (or
JVP) of the whole batch per coordinate, sobolev_tf's algorithm; `auto`, vmap
at order 1 and unrolled at order 2, the faster of each on the 2-core CPU
this was written on (MLP 2-256-256-1).
"""

import functools
import math
from typing import Any
from typing import Callable
from typing import List
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import workloads

ACTIVATIONS = {"relu": jax.nn.relu, "softplus": jax.nn.softplus}

Params = List[Tuple[jax.Array, jax.Array]]
# Output directions `[B, out]` and, at order 2, input directions `[B, in...]`.
Directions = Tuple[jax.Array, Optional[jax.Array]]
BatchFn = Callable[[jax.Array], jax.Array]


def params_from_weights(weights: Sequence[np.ndarray]) -> Params:
  """`(kernel, bias)` pairs from a Keras network's `get_weights()`."""
  return [
    (jnp.asarray(kernel), jnp.asarray(bias))
    for kernel, bias in zip(weights[::2], weights[1::2], strict=True)
  ]


def init_params(workload: workloads.Workload, seed: int) -> Params:
  """Glorot-uniform kernels and zero biases, as Keras initialises `Dense`.

  Lets a process build the reference without importing TensorFlow.

  Args:
    workload: an MLP workload (dense layers on a flat input).
    seed: NumPy seed of the kernels.

  Returns:
    The parameters.

  Raises:
    ValueError: for a workload with other than dense layers or a flat input.
  """
  if len(workload.input_shape) != 1 or any(
    spec[0] != "dense" for spec in workload.layers
  ):
    raise ValueError(
      "init_params builds MLPs only (dense layers on a flat input). "
      f"Received: input_shape={workload.input_shape}, layers="
      f"{workload.layers}"
    )
  rng = np.random.default_rng(seed)
  params = []
  fan_in = workload.input_shape[0]
  for _, units in workload.layers:
    limit = math.sqrt(6.0 / (fan_in + units))
    kernel = rng.uniform(-limit, limit, (fan_in, units)).astype(np.float32)
    params.append((jnp.asarray(kernel), jnp.zeros([units], jnp.float32)))
    fan_in = units
  return params


def apply(
  workload: workloads.Workload, activation: str, params: Params, x: jax.Array
) -> jax.Array:
  """The workload's network: maps `x` `[B, in...]` to `[B, out]`."""
  hidden_activation = ACTIVATIONS[activation]
  weights = iter(params)
  last = len(workload.layers) - 1
  h = x
  for index, spec in enumerate(workload.layers):
    if spec[0] == "flatten":
      h = h.reshape(h.shape[0], -1)  # [B, H * W * C], as Keras's Flatten.
      continue
    kernel, bias = next(weights)
    if spec[0] == "conv":
      stride = spec[3]
      h = jax.lax.conv_general_dilated(
        h,
        kernel,
        window_strides=(stride, stride),
        padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
      )
    else:
      h = h @ kernel
    h = h + bias
    if index != last:
      h = hidden_activation(h)
  return h


def _mse(prediction: jax.Array, target: jax.Array) -> jax.Array:
  return jnp.mean(jnp.square(prediction - target))


def unit_directions(key: jax.Array, shape: Sequence[int]) -> jax.Array:
  """One direction per example, uniform on the unit sphere of `shape[1:]`."""
  normal = jax.random.normal(key, shape)
  axes = tuple(range(1, len(shape)))
  return normal * jax.lax.rsqrt(
    jnp.sum(jnp.square(normal), axis=axes, keepdims=True)
  )


def sample_directions(
  key: jax.Array, x: jax.Array, num_outputs: int, order: int
) -> Directions:
  """Fresh output directions and, at order 2, input directions."""
  key_out, key_in = jax.random.split(key)
  v1 = unit_directions(key_out, (x.shape[0], num_outputs))  # [B, out]
  v2 = unit_directions(key_in, x.shape) if order == 2 else None
  return v1, v2


def projected_derivatives(
  fn: BatchFn, x: jax.Array, v1: jax.Array, v2: Optional[jax.Array]
) -> List[jax.Array]:
  """`[fn(x), D_x <fn(x), v1>]`, then `D_x <D_x <fn(x), v1>, v2>` if `v2`."""

  def first(inputs):
    y, vjp = jax.vjp(fn, inputs)
    return vjp(v1)[0], y  # [B, in...], [B, out]

  if v2 is None:
    gradient, y = first(x)
    return [y, gradient]
  gradient, vjp_first, y = jax.vjp(first, x, has_aux=True)
  return [y, gradient, vjp_first(v2)[0]]


def _unrolled_jacobian(
  fn: Callable[[jax.Array], Tuple[jax.Array, Any]], x: jax.Array
) -> Tuple[jax.Array, jax.Array, Any]:
  """Per-example Jacobian of the batch function `fn`, as sobolev_tf builds it.

  One VJP of the whole batch per output coordinate, or one JVP per input
  coordinate when the input is smaller (`choose_jacobian_mode` of
  `sobolev_tf.derivatives`), in an unrolled loop; the examples being
  independent, each product gives one row (column) of every example's
  Jacobian.

  Args:
    fn: maps `x` `[B, in...]` to `(y, aux)` with `y` `[B, out...]`.
    x: the input batch.

  Returns:
    `(y, jacobian, aux)`, the Jacobian of shape `[B, out..., in...]`.
  """
  in_size = math.prod(x.shape[1:])
  y, vjp, aux = jax.vjp(fn, x, has_aux=True)
  out_size = math.prod(y.shape[1:])
  if out_size <= in_size:
    basis = jnp.eye(out_size, dtype=y.dtype)
    rows = [
      vjp(jnp.broadcast_to(basis[k].reshape(y.shape[1:]), y.shape))[0]
      for k in range(out_size)
    ]
    jacobian = jnp.stack(rows, axis=1)  # [B, out_size, in...]
  else:
    basis = jnp.eye(in_size, dtype=x.dtype)
    columns = [
      jax.jvp(
        fn,
        (x,),
        (jnp.broadcast_to(basis[i].reshape(x.shape[1:]), x.shape),),
        has_aux=True,
      )[1]
      for i in range(in_size)
    ]
    jacobian = jnp.stack(columns, axis=-1)  # [B, out..., in_size]
  return y, jacobian.reshape(y.shape + x.shape[1:]), aux


def full_method(order: int, method: str) -> str:
  """What `method` (in `workloads.FULL_METHODS`) stands for at `order`."""
  if method not in workloads.FULL_METHODS:
    raise ValueError(
      f"Received an invalid value for `method`, expected one of "
      f"{workloads.FULL_METHODS}. Received: method={method!r}"
    )
  if method != "auto":
    return method
  return "vmap" if order == 1 else "unrolled"


def _unrolled_derivatives(
  fn: BatchFn, x: jax.Array, order: int
) -> List[jax.Array]:
  def with_value(inputs):
    y = fn(inputs)
    return y, y

  y, d1, _ = _unrolled_jacobian(with_value, x)  # [B, out, in...]
  if order == 1:
    return [y, d1]

  def first(inputs):
    y, d1, _ = _unrolled_jacobian(with_value, inputs)
    return d1, (y, d1)

  _, d2, (y, d1) = _unrolled_jacobian(first, x)  # [B, out, in..., in...]
  return [y, d1, d2]


def _vmap_derivatives(fn: BatchFn, x: jax.Array, order: int) -> List[jax.Array]:
  def single(example):  # [in...] -> [out], returned twice to keep the value.
    y = fn(example[None])[0]
    return y, y

  if order == 1:
    d1, y = jax.vmap(jax.jacrev(single, has_aux=True))(x)  # [B, out, in...]
    return [y, d1]

  def first_single(example):
    d1, y = jax.jacrev(single, has_aux=True)(example)  # [out, in...]
    return d1, (y, d1)

  # [B, out, in..., in...]
  d2, (y, d1) = jax.vmap(jax.jacfwd(first_single, has_aux=True))(x)
  return [y, d1, d2]


def full_derivatives(
  fn: BatchFn, x: jax.Array, order: int, method: str = "auto"
) -> List[jax.Array]:
  """`[fn(x), D^1, ..., D^order]` for `x` `[B, in...]`, by `method`."""
  if order == 0:
    return [fn(x)]
  if full_method(order, method) == "unrolled":
    return _unrolled_derivatives(fn, x, order)
  return _vmap_derivatives(fn, x, order)


def objective_settings(
  objective: Mapping[str, Any],
) -> Tuple[int, str, Tuple[float, ...]]:
  """`(order, mode, loss_weights)` of `workloads.objective_kwargs` output.

  Args:
    objective: `SobolevObjective` keyword arguments. Keys other than those
      of `workloads.objective_kwargs` are the TensorFlow side's business;
      the test checks that the two sides still agree.

  Returns:
    The order, the mode and one weight per order.

  Raises:
    ValueError: for settings this reference does not implement.
  """
  expected = {
    "num_projections": 1,
    "losses": "mean_squared_error",
    "balance": "none",
  }
  for key, value in expected.items():
    if objective.get(key) != value:
      raise ValueError(
        f"The JAX reference implements {key}={value!r} only. Received: "
        f"{key}={objective.get(key)!r}"
      )
  order, mode = objective["order"], objective["mode"]
  if mode not in ("full", "stochastic"):
    raise ValueError(
      "Received an invalid value for `mode`, expected 'full' or "
      f"'stochastic'. Received: mode={mode!r}"
    )
  weights = tuple(float(w) for w in objective["loss_weights"])
  if len(weights) != order + 1:
    raise ValueError(
      f"Expected {order + 1} loss weights for order={order}. Received: "
      f"loss_weights={weights}"
    )
  return order, mode, weights


def _project_array_targets(
  targets: Mapping[str, jax.Array], x: jax.Array, directions: Directions
) -> List[jax.Array]:
  """Full array targets projected as `sobolev_tf.project_jacobian/hessian`."""
  v1, v2 = directions
  batch, in_size = x.shape[0], math.prod(x.shape[1:])
  d1 = targets["d1"].reshape(batch, -1, in_size)  # [B, out, in]
  projected = [
    targets["value"],
    jnp.einsum("bo,boi->bi", v1, d1).reshape(x.shape),
  ]
  if v2 is not None:
    d2 = targets["d2"].reshape(batch, -1, in_size, in_size)  # [B, out, in, in]
    flat_v2 = v2.reshape(batch, in_size)
    second = jnp.einsum("bo,boij,bi->bj", v1, d2, flat_v2)
    projected.append(second.reshape(x.shape))
  return projected


def sobolev_loss(
  workload: workloads.Workload,
  activation: str,
  objective: Mapping[str, Any],
  *,
  teacher: bool,
  method: str = "auto",
) -> Callable[..., jax.Array]:
  """The objective `(params, x, aux, directions=None) -> scalar` in JAX.

  Args:
    workload: the network.
    activation: its hidden activation, a key of `ACTIVATIONS`.
    objective: `workloads.objective_kwargs` of the step kind.
    teacher: whether `aux` holds teacher parameters (`{"teacher": params}`)
      instead of full array targets keyed by `workloads.TARGET_KEYS`.
    method: how full derivatives are built, one of
      `workloads.FULL_METHODS`.

  Returns:
    The loss, differentiable with respect to `params`. Stochastic steps
    need `directions` (`sample_directions`); others ignore them.

  Raises:
    ValueError: for an unknown activation, or as `objective_settings` and
      `full_method`.
  """
  if activation not in ACTIVATIONS:
    raise ValueError(
      f"Received an invalid value for `activation`, expected one of "
      f"{sorted(ACTIVATIONS)}. Received: activation={activation!r}"
    )
  order, mode, weights = objective_settings(objective)
  method = full_method(max(order, 1), method)
  stochastic = mode == "stochastic" and order > 0
  network = functools.partial(apply, workload, activation)

  def derivatives(params, x, directions):
    fn = functools.partial(network, params)
    if stochastic:
      return projected_derivatives(fn, x, *directions)
    return full_derivatives(fn, x, order, method)

  def loss(params, x, aux, directions=None):
    if stochastic and directions is None:
      raise ValueError("A stochastic step needs `directions`.")
    predictions = derivatives(params, x, directions)
    if teacher:  # Not trained through: the loss is differentiated in params.
      targets = derivatives(aux["teacher"], x, directions)
    elif stochastic:
      targets = _project_array_targets(aux, x, directions)
    else:
      targets = [aux[key] for key in workloads.TARGET_KEYS[: order + 1]]
    terms = zip(weights, predictions, targets, strict=True)
    return sum(w * _mse(p, t) for w, p, t in terms if w > 0)

  return loss
