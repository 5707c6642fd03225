"""Central finite-difference derivatives of black-box functions.

For targets that cannot be differentiated automatically (a NumPy function, a
simulator), these estimate the same quantities as `sobolev_tf.derivatives`,
with the same shapes, so their results can be used as array targets in
`SobolevModel.fit`. `fn` maps a NumPy batch `[B, in...]` to `[B, out...]`,
example by example; everything is computed in float64.

The central difference has error O(step^2) for smooth functions; the default
step balances that against float64 round-off (about eps^(1/3) for first and
eps^(1/4) for second derivatives, scaled by the magnitude of `x`).
"""

from typing import Callable
from typing import Optional

import numpy as np

ArrayFn = Callable[[np.ndarray], np.ndarray]

_FIRST_ORDER_STEP = np.finfo(np.float64).eps ** (1 / 3)
_SECOND_ORDER_STEP = np.finfo(np.float64).eps ** (1 / 4)


def _prepare(
  x: np.ndarray, step: Optional[float], default_step: float
) -> tuple:
  x = np.asarray(x, dtype=np.float64)
  if x.ndim < 2:
    raise ValueError(
      "Expected a batched input of shape [B, in...] with rank >= 2. "
      f"Received: x with shape={x.shape}."
    )
  if step is None:
    step = default_step * max(1.0, float(np.max(np.abs(x), initial=0.0)))
  if not step > 0:
    raise ValueError(
      f"Received an invalid value for `step`, expected a positive number. "
      f"Received: step={step}"
    )
  return x, float(step)


def _evaluate(fn: ArrayFn, x: np.ndarray) -> np.ndarray:
  return np.asarray(fn(x), dtype=np.float64)


def _input_perturbations(x: np.ndarray, step: float) -> np.ndarray:
  """`[in_size, B, in...]` perturbations, `step` times each basis vector."""
  in_shape = x.shape[1:]
  in_size = int(np.prod(in_shape))
  basis = np.eye(in_size).reshape((in_size, 1) + in_shape)
  return step * np.broadcast_to(basis, (in_size,) + x.shape)


def jacobian(
  fn: ArrayFn, x: np.ndarray, step: Optional[float] = None
) -> np.ndarray:
  """Central-difference Jacobian, `[B, out..., in...]`.

  Costs `2 * in_size` batched evaluations of `fn`.

  Args:
    fn: batched NumPy callable, `[B, in...] -> [B, out...]`.
    x: input batch, `[B, in...]`.
    step: difference step; `None` takes float64's eps^(1/3) times
      `max(1, max |x|)`.

  Returns:
    The Jacobian estimate as float64.

  Raises:
    ValueError: for an unbatched `x` or a non-positive `step`.
  """
  x, step = _prepare(x, step, _FIRST_ORDER_STEP)
  columns = [
    (_evaluate(fn, x + delta) - _evaluate(fn, x - delta)) / (2 * step)
    for delta in _input_perturbations(x, step)
  ]
  jacobian_value = np.stack(columns, axis=-1)  # [B, out..., in_size]
  return jacobian_value.reshape(jacobian_value.shape[:-1] + x.shape[1:])


def hessian(
  fn: ArrayFn, x: np.ndarray, step: Optional[float] = None
) -> np.ndarray:
  """Central-difference Hessian, `[B, out..., in..., in...]`.

  Uses the four-point stencil
  `(f(x+hi+hj) - f(x+hi-hj) - f(x-hi+hj) + f(x-hi-hj)) / 4h^2`, which costs
  `4 * in_size^2` batched evaluations; the result is symmetrised.

  Args:
    fn: batched NumPy callable, `[B, in...] -> [B, out...]`.
    x: input batch, `[B, in...]`.
    step: difference step; `None` takes eps^(1/4) times `max(1, max |x|)`.

  Returns:
    The symmetrised Hessian estimate as float64.

  Raises:
    ValueError: for an unbatched `x` or a non-positive `step`.
  """
  x, step = _prepare(x, step, _SECOND_ORDER_STEP)
  perturbations = _input_perturbations(x, step)
  rows = []
  for delta_i in perturbations:
    row = []
    for delta_j in perturbations:
      row.append(
        (
          _evaluate(fn, x + delta_i + delta_j)
          - _evaluate(fn, x + delta_i - delta_j)
          - _evaluate(fn, x - delta_i + delta_j)
          + _evaluate(fn, x - delta_i - delta_j)
        )
        / (4 * step**2)
      )
    rows.append(np.stack(row, axis=-1))  # [B, out..., in_size]
  hessian_value = np.stack(rows, axis=-2)  # [B, out..., in_size, in_size]
  hessian_value = 0.5 * (hessian_value + np.swapaxes(hessian_value, -1, -2))
  return hessian_value.reshape(
    hessian_value.shape[:-2] + x.shape[1:] + x.shape[1:]
  )


def vector_jacobian_product(
  fn: ArrayFn,
  x: np.ndarray,
  output_direction: np.ndarray,
  step: Optional[float] = None,
) -> np.ndarray:
  """Central-difference `D_x <fn(x), v1>`, `[B, in...]`.

  The finite-difference twin of `sobolev_tf.derivatives.
  vector_jacobian_product`; costs `2 * in_size` evaluations.

  Args:
    fn: batched NumPy callable, `[B, in...] -> [B, out...]`.
    x: input batch, `[B, in...]`.
    output_direction: `[B, out...]`.
    step: difference step; `None` picks `jacobian`'s.

  Returns:
    The projected gradient estimate as float64.

  Raises:
    ValueError: for an unbatched `x`, a non-positive `step` or a direction
      whose batch size differs from `x`'s.
  """
  output_direction = np.asarray(output_direction, dtype=np.float64)
  if output_direction.shape[:1] != np.shape(x)[:1]:
    raise ValueError(
      "Expected one output direction per example. Received: "
      f"output_direction with shape={output_direction.shape} for x with "
      f"shape={np.shape(x)}."
    )
  axes = tuple(range(1, output_direction.ndim))

  def projected(inputs):
    outputs = _evaluate(fn, inputs)
    if outputs.shape != output_direction.shape:
      raise ValueError(
        "Expected `output_direction` of the shape of fn(x). Received: "
        f"output_direction with shape={output_direction.shape} for fn(x) "
        f"with shape={outputs.shape}."
      )
    return np.sum(outputs * output_direction, axis=axes)[:, None]

  return jacobian(projected, x, step)[:, 0]


def projected_hessian(
  fn: ArrayFn,
  x: np.ndarray,
  output_direction: np.ndarray,
  input_direction: np.ndarray,
  step: Optional[float] = None,
) -> np.ndarray:
  """Central-difference `D_x < D_x <fn(x), v1>, v2 >`, `[B, in...]`.

  Differences the projected gradient along `v2`: `(g(x + h v2) - g(x - h v2))
  / 2h` with `g = D_x <fn, v1>`, a Hessian-vector product that costs
  `4 * in_size` evaluations instead of the `4 * in_size^2` of `hessian`.

  Args:
    fn: batched NumPy callable, `[B, in...] -> [B, out...]`.
    x: input batch, `[B, in...]`.
    output_direction: `v1`, `[B, out...]`.
    input_direction: `v2`, `[B, in...]`.
    step: difference step of both differences; `None` picks `hessian`'s.

  Returns:
    The projected second derivative estimate as float64.

  Raises:
    ValueError: for an unbatched `x`, a non-positive `step` or directions of
      the wrong shape.
  """
  x, step = _prepare(x, step, _SECOND_ORDER_STEP)
  input_direction = np.asarray(input_direction, dtype=np.float64)
  if input_direction.shape != x.shape:
    raise ValueError(
      "Expected `input_direction` of the same shape as `x`. Received: "
      f"input_direction with shape={input_direction.shape} for x with "
      f"shape={x.shape}."
    )
  forward = vector_jacobian_product(
    fn, x + step * input_direction, output_direction, step
  )
  backward = vector_jacobian_product(
    fn, x - step * input_direction, output_direction, step
  )
  return (forward - backward) / (2 * step)
