"""Kinds of Sobolev targets: small immutable types, one per way data comes.

A batch's targets become one `Target` per active order. Each kind owns its
data keys, the shape it expects, its batch check, which of its entries
count (the non-finite rule of `nonfinite`) and how it meets the model:

* `FullTarget`: the value, a whole Jacobian or Hessian: `value`
  `[B, out...]`, `d1` `[B, out..., in...]`, `d2` `[B, out..., in..., in...]`.
* `directional.DirectionalTarget`: derivatives along directions the data
  carries (`d1_directions` with `d1_directional`, ...).
* `ProjectedTarget`: what a full target or a teacher becomes in stochastic
  mode, its projections on the step's random directions `[B, P, in...]`.
* `TeacherTarget`: supplied by a teacher, computed as the model's side is.

`value_mask`, `dk_mask` (nonzero where an entry is known, the target's
shape) apply to a target of any kind. An estimator (`estimators`) computes
a `Pass` of the model (and of a teacher) and asks each target to `match`
it: the target it becomes and the model's prediction for it. A new kind is
one subclass, registered with `target_data.register` if data can hold it:
the parser, the non-finite rule, the balance and the losses work with it
unchanged.
"""

import abc
import dataclasses
from typing import Callable
from typing import ClassVar
from typing import List
from typing import Mapping
from typing import Optional
from typing import Tuple
from typing import Type

import tensorflow as tf

from sobolev_tf import config as config_lib

MASKS = {k: f"{key}_mask" for k, key in enumerate(config_lib.TERMS)}

BatchFn = Callable[[tf.Tensor], tf.Tensor]


class Pass(abc.ABC):
  """What an estimator computed of one function for a batch.

  Attributes:
    values: `[fn(x), first, second]` up to the pass's order: full
      derivatives, or their projections on the pass's directions.
  """

  def __init__(self, values: List[tf.Tensor]):
    self.values = list(values)

  @property
  def y(self) -> tf.Tensor:
    """The function's output `[B, out...]`."""
    return self.values[0]

  def output(self, order: int) -> tf.Tensor:
    """The quantity a full target of `order` is compared with."""
    return self.values[order]

  @abc.abstractmethod
  def reduce(self, values: tf.Tensor, order: int) -> tf.Tensor:
    """An array full target of `order` in the form of `output(order)`."""

  @abc.abstractmethod
  def target_type(self, order: int) -> Type["Target"]:
    """The kind of target whose values have the form of `output(order)`."""


@dataclasses.dataclass(frozen=True, eq=False)
class Target(abc.ABC):
  """One term's target for a batch. Base of the kinds.

  Attributes:
    order: 0 for the value, 1 or 2 for derivatives.
    values: the target, or `None` until a teacher supplies it.
    mask: float per-entry mask, 1 where the entry counts, or `None`.
    weight: per-example weight `[B]`, or `None`.
    keep: float per-example 0/1, 0 for an example dropped for non-finite
      targets (it does not count in the term's mean, unlike an example of
      weight 0), or `None`.
  """

  order: int
  values: Optional[tf.Tensor] = None
  mask: Optional[tf.Tensor] = None
  weight: Optional[tf.Tensor] = None
  keep: Optional[tf.Tensor] = None

  # Whether `derivative_scales` divide the entries along the input axes.
  scaled_per_input: ClassVar[bool] = True

  @property
  def key(self) -> str:
    """The term: `value`, `d1` or `d2`."""
    return config_lib.term_key(self.order)

  @property
  def data_key(self) -> str:
    """The data key of the values, for messages."""
    return self.key

  @classmethod
  def data_keys(cls, order: int) -> Tuple[str, ...]:
    """The data keys this kind reads for `order` (none if not from data)."""
    del order
    return ()

  @classmethod
  def from_data(cls, order: int, y: Mapping) -> Optional["Target"]:
    """The target of `order` if `y` holds this kind's keys, else `None`."""
    del order, y
    return None

  @classmethod
  def check_keys(cls, order: int, y: Mapping) -> None:
    """Raises a `ValueError` if `y` holds this kind's keys inconsistently."""
    del order, y

  def replace(self, **changes) -> "Target":
    """A copy with `changes`."""
    return dataclasses.replace(self, **changes)

  def batched(self) -> List[Tuple[str, str, tf.Tensor]]:
    """`(attribute, data key, tensor)` of each tensor with a batch axis."""
    items = [
      ("values", self.data_key, self.values),
      ("mask", MASKS[self.order], self.mask),
    ]
    return [item for item in items if item[2] is not None]

  def with_batch_of(self, x: tf.Tensor) -> "Target":
    """This target with every batched tensor tied to `x`'s batch size."""
    changes = {
      field: check_batch(tensor, x, f"y[{name!r}]")
      for field, name, tensor in self.batched()
    }
    if self.weight is not None:
      weight = tf.reshape(tf.cast(self.weight, tf.float32), [-1])
      changes["weight"] = check_batch(
        weight, x, f"sample_weight for {self.key!r}"
      )
    return self.replace(**changes)

  @abc.abstractmethod
  def layout(self) -> str:
    """The layout of the values, e.g. `[B, out..., in...]`."""

  @abc.abstractmethod
  def expected_shape(
    self, output_shape: tf.TensorShape, input_shape: tf.TensorShape
  ) -> tf.TensorShape:
    """The non-batch shape the values must have."""

  def check_shape(
    self, output_shape: tf.TensorShape, input_shape: tf.TensorShape
  ) -> None:
    """Raises unless the values and the mask fit the model.

    Args:
      output_shape: the model's non-batch output shape.
      input_shape: the input's non-batch shape.

    Raises:
      ValueError: naming the key, the shape received and the one expected.
    """
    if self.values is None:
      return
    expected = self.expected_shape(output_shape, input_shape)
    for name, tensor in (
      (self.data_key, self.values),
      (MASKS[self.order], self.mask),
    ):
      received = None if tensor is None else tensor.shape[1:]
      if received is None or expected.is_compatible_with(received):
        continue
      what = "output" if self.order == 0 else f"order-{self.order} derivative"
      raise ValueError(
        f"Target y[{name!r}] does not match the model's {what}: expected "
        f"shape {_batched(expected)} ({self.layout()}, output shape "
        f"{output_shape.as_list()}, input shape {input_shape.as_list()}). "
        f"Received: {_batched(received)}."
      )

  @property
  def shared_order(self) -> int:
    """The order of the estimator's shared pass this target needs."""
    return self.order

  @abc.abstractmethod
  def match(
    self,
    model_pass: Pass,
    teacher_pass: Optional[Pass],
    fn: BatchFn,
    x: tf.Tensor,
  ) -> Tuple["Target", tf.Tensor]:
    """The target this becomes against a pass, and the model's prediction.

    Args:
      model_pass: the model's pass, of order at least `shared_order`.
      teacher_pass: the teacher's pass on the same directions, or `None`.
      fn: the model, for kinds that compute their own side.
      x: the input batch.

    Returns:
      `(target, prediction)` of the same shape.
    """

  def counted(self) -> tf.Tensor:
    """Bool per entry: finite, or masked out (then it never counts)."""
    counted = tf.math.is_finite(self.values)
    if self.mask is not None:
      counted |= tf.equal(self.mask, 0)
    return counted

  def nonfinite_keys(self, counted: tf.Tensor) -> List[str]:
    """The data keys to name when `counted` (of this target) has a False."""
    return [] if bool(tf.reduce_all(counted)) else [self.data_key]


@dataclasses.dataclass(frozen=True, eq=False)
class FullTarget(Target):
  """The value, or a whole Jacobian or Hessian (`value`, `d1`, `d2`)."""

  _LAYOUTS: ClassVar[Tuple[str, ...]] = (
    "[B, out...]",
    "[B, out..., in...]",
    "[B, out..., in..., in...]",
  )

  @classmethod
  def data_keys(cls, order: int) -> Tuple[str, ...]:
    """`value`, `d1` or `d2`."""
    return (config_lib.term_key(order),)

  @classmethod
  def from_data(cls, order: int, y: Mapping) -> Optional[Target]:
    """The full target of `order`, if `y` holds it."""
    key = config_lib.term_key(order)
    if y.get(key) is None:
      return None
    return cls(order, values=float_tensor(y[key], key))

  def layout(self) -> str:
    """See `Target.layout`."""
    return self._LAYOUTS[self.order]

  def expected_shape(self, output_shape, input_shape):
    """`[out..., in... x order]`."""
    return tf.TensorShape(
      output_shape.as_list() + input_shape.as_list() * self.order
    )

  def match(self, model_pass, teacher_pass, fn, x):
    """Compared with the pass's output: whole, or both projected."""
    del teacher_pass, fn, x
    kind = model_pass.target_type(self.order)
    values = model_pass.reduce(self.values, self.order)
    matched = kind(self.order, values, self.mask, self.weight, self.keep)
    return matched, model_pass.output(self.order)


@dataclasses.dataclass(frozen=True, eq=False)
class ProjectedTarget(Target):
  """Projections on the step's random directions `[B, P, in...]`."""

  def layout(self) -> str:
    """See `Target.layout`."""
    return "[B, P, in...]"

  def expected_shape(self, output_shape, input_shape):
    """`[P, in...]`, P as given."""
    del output_shape
    return tf.TensorShape([self.values.shape[1]] + input_shape.as_list())

  def match(self, model_pass, teacher_pass, fn, x):
    """Compared with the pass's projections."""
    del teacher_pass, fn, x
    return self, model_pass.output(self.order)


@dataclasses.dataclass(frozen=True, eq=False)
class TeacherTarget(Target):
  """Supplied by a teacher: its pass, computed as the model's is."""

  def layout(self) -> str:
    """See `Target.layout`."""
    return "the model's"

  def expected_shape(self, output_shape, input_shape):
    """The model's: the estimator checks the teacher's output."""
    return tf.TensorShape(None)

  def match(self, model_pass, teacher_pass, fn, x):
    """The teacher's quantity in the model's form (never trained through)."""
    del fn, x
    kind = model_pass.target_type(self.order)
    values = tf.stop_gradient(teacher_pass.output(self.order))
    matched = kind(self.order, values, self.mask, self.weight, self.keep)
    return matched, model_pass.output(self.order)


def check_batch(tensor: tf.Tensor, x: tf.Tensor, what: str) -> tf.Tensor:
  """Returns `tensor`, failing unless its batch size is `x`'s.

  A batch of 1 would otherwise broadcast silently against `x`'s batch. Known
  sizes are checked now; unknown ones by an assertion and by a reshape that
  XLA, which drops assertions, still rejects.

  Args:
    tensor: a batched tensor `[B', ...]`.
    x: the input batch `[B, ...]`.
    what: how the message names `tensor`, e.g. `"y['d1']"`.

  Returns:
    `tensor`, with its batch size tied to `x`'s.

  Raises:
    ValueError: when both batch sizes are known and differ.
  """
  tensor = tf.convert_to_tensor(tensor)
  mine, theirs = tensor.shape[:1], x.shape[:1]
  message = f"{what} must have the batch size of x"
  if tensor.shape.rank == 0:
    raise ValueError(
      f"{message} as its first axis. Received: {what} without a batch axis "
      f"(a scalar), x with batch size {theirs[0]}."
    )
  if mine.is_fully_defined() and theirs.is_fully_defined():
    if mine[0] != theirs[0]:
      raise ValueError(
        f"{message}. Received: {what} with batch size {mine[0]}, x with "
        f"batch size {theirs[0]}."
      )
    return tensor
  batch = tf.shape(x)[:1]
  check = tf.debugging.assert_equal(
    tf.shape(tensor)[:1], batch, message=message
  )
  with tf.control_dependencies([check]):
    return tf.reshape(
      tensor,
      tf.concat([batch, tf.shape(tensor)[1:]], 0),
      name="batch_size_must_match_x",
    )


def float_tensor(value, key: str) -> tf.Tensor:
  """The data's `y[key]` as a floating-point tensor, or a clear error."""
  tensor = as_tensor(value, f"the target y[{key!r}]")
  if not tensor.dtype.is_floating:
    raise ValueError(
      f"Expected a floating-point target y[{key!r}]. Received dtype="
      f"{tensor.dtype.name}."
    )
  return tensor


def as_tensor(value, what: str) -> tf.Tensor:
  """`value` as a tensor, or a `ValueError` naming `what`."""
  try:
    return tf.convert_to_tensor(value)
  except (TypeError, ValueError) as error:
    raise ValueError(
      f"Expected {what} to be an array or tensor. Received: {error}"
    ) from None


def flatten_batch(tensor: tf.Tensor) -> tf.Tensor:
  """`[B, ...]` to `[B, D]`."""
  return tf.reshape(tensor, tf.stack([tf.shape(tensor)[0], -1]))


def _batched(shape: tf.TensorShape) -> str:
  return f"[B, {', '.join(map(str, shape.as_list()))}]"
