"""Directional targets: derivatives along directions the data carries.

Forward-mode solvers and `jax.jvp` give derivatives along chosen
directions rather than whole Jacobians: `dk_directions` `[B, K, in...]`
with `d1_directional` `[B, out..., K]` (Jacobian-vector products `J v`) or
`d2_directional` `[B, out..., K, in...]` (Hessian-vector products `H v`).
The model's side is the same products along the same directions, never a
full Jacobian, in every mode.
"""

import dataclasses
from typing import ClassVar
from typing import List
from typing import Mapping
from typing import Optional
from typing import Tuple

import tensorflow as tf

from sobolev_tf import derivatives
from sobolev_tf import projections
from sobolev_tf import targets


@dataclasses.dataclass(frozen=True, eq=False)
class DirectionalTarget(targets.Target):
  """Derivatives along the data's own directions: `J v` or `H v`.

  Attributes:
    directions: `[B, K, in...]`, non-finite entries replaced by zeros (the
      model is differentiated along them before the non-finite rule).
    directions_finite: bool `[B, K, in...]`, where the data's directions
      were finite; the derivatives along the others are non-finite targets.
  """

  directions: Optional[tf.Tensor] = None
  directions_finite: Optional[tf.Tensor] = None

  scaled_per_input: ClassVar[bool] = False

  @staticmethod
  def directions_key(order: int) -> str:
    """`d1_directions` or `d2_directions`."""
    return f"d{order}_directions"

  @staticmethod
  def values_key(order: int) -> str:
    """`d1_directional` or `d2_directional`."""
    return f"d{order}_directional"

  @property
  def data_key(self) -> str:
    """`d1_directional` or `d2_directional`."""
    return self.values_key(self.order)

  @classmethod
  def data_keys(cls, order: int) -> Tuple[str, ...]:
    """The directions and the derivatives along them (orders 1 and 2)."""
    if order == 0:
      return ()
    return (cls.directions_key(order), cls.values_key(order))

  @classmethod
  def check_keys(cls, order: int, y: Mapping) -> None:
    """Both keys or neither."""
    keys = cls.data_keys(order)
    if keys and (keys[0] in y) != (keys[1] in y):
      raise ValueError(
        f"Directional targets need both `{keys[0]}` and `{keys[1]}`. "
        f"Received keys: {sorted(y, key=str)}"
      )

  @classmethod
  def from_data(cls, order: int, y: Mapping) -> Optional[targets.Target]:
    """The directional target of `order`, if `y` holds it."""
    keys = cls.data_keys(order)
    if not keys or keys[1] not in y:
      return None
    directions = targets.float_tensor(y[keys[0]], keys[0])
    finite = tf.math.is_finite(directions)
    return cls(
      order,
      values=targets.float_tensor(y[keys[1]], keys[1]),
      directions=tf.where(finite, directions, tf.zeros_like(directions)),
      directions_finite=finite,
    )

  def batched(self) -> List[Tuple[str, str, tf.Tensor]]:
    """The values, the mask and the directions."""
    directions = (
      "directions",
      self.directions_key(self.order),
      self.directions,
    )
    return super().batched() + [directions]

  def layout(self) -> str:
    """See `Target.layout`."""
    return "[B, out..., K]" if self.order == 1 else "[B, out..., K, in...]"

  def expected_shape(self, output_shape, input_shape):
    """`[out..., K]` or `[out..., K, in...]`."""
    trailing = input_shape.as_list() if self.order == 2 else []
    count = self.directions.shape[1]
    return tf.TensorShape(output_shape.as_list() + [count] + trailing)

  def check_shape(self, output_shape, input_shape) -> None:
    """The directions first, then `Target.check_shape`."""
    received = self.directions.shape[2:]
    name = self.directions_key(self.order)
    if self.directions.shape.rank != input_shape.rank + 2 or not (
      input_shape.is_compatible_with(received)
    ):
      raise ValueError(
        f"Directions y[{name!r}] must have shape [B, K, "
        f"{', '.join(map(str, input_shape.as_list()))}] (one direction in "
        f"input space per column K). Received: {self.directions.shape}."
      )
    if self.directions.shape[1] is None:
      raise ValueError(
        f"The number of directions K in y[{name!r}] must be known "
        f"statically. Received: shape {self.directions.shape}."
      )
    if self.directions.shape[1] == 0:
      raise ValueError(
        f"Directions y[{name!r}] must hold at least one direction per "
        f"example (K >= 1). Received: {self.directions.shape}."
      )
    super().check_shape(output_shape, input_shape)

  @property
  def shared_order(self) -> int:
    """None: the products along the directions are its own."""
    return 0

  def match(self, model_pass, teacher_pass, fn, x):
    """The model's `J v` or `H v` along the directions."""
    del model_pass, teacher_pass
    if self.order == 1:
      _, products = derivatives.value_and_jacobian_vector_products(
        fn, x, self.directions
      )
    else:
      _, _, products = projections.hessian_vector_products(
        fn, x, self.directions
      )
    return self, products

  def counted(self) -> tf.Tensor:
    """`Target.counted`, and false along a non-finite direction."""
    return super().counted() & self._along_directions()

  def nonfinite_keys(self, counted: tf.Tensor) -> List[str]:
    """The directions' key if they hold NaN or Inf, else the values'."""
    if not bool(tf.reduce_all(self.directions_finite)):
      return [self.directions_key(self.order)]
    return super().nonfinite_keys(counted)

  def _along_directions(self) -> tf.Tensor:
    """Bool, target-shaped: whether the entry's direction is finite."""
    finite = self.directions_finite  # [B, K, in...]
    per_direction = tf.reduce_all(
      finite, axis=list(range(2, finite.shape.rank))
    )  # [B, K]
    # To [B, out..., K] for J v, [B, out..., K, in...] for H v.
    trailing = finite.shape.rank - 2 if self.order == 2 else 0
    output_rank = self.values.shape.rank - 2 - trailing
    shape = tf.concat(
      [
        tf.shape(finite)[:1],
        [1] * output_rank + [finite.shape[1]] + [1] * trailing,
      ],
      0,
    )
    return tf.reshape(per_direction, shape)
