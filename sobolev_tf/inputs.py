"""What a `SobolevModel` asks of the model it wraps and of its inputs.

`check_model`: derivatives are per example, so the model must be a Keras
layer with one output whose examples do not mix.

A Keras model may take several inputs, as a dict or a tuple: a force field
reads positions and atom types, an option pricer spots and market
parameters, a PDE solver space and time. Their derivatives are wanted with
respect to some inputs only (forces are `-dE/d positions`, deltas
`d price / d spot`). `DerivativeInputs` names those inputs, takes them out
of a batch as the one tensor the objective differentiates, and puts a
tensor back in their place, the other inputs untouched.
"""

from typing import Any
from typing import Callable
from typing import Optional
from typing import Sequence
from typing import Tuple
from typing import Union

import keras
import tensorflow as tf

from sobolev_tf import private_api

Name = Union[str, int]
Names = Union[None, Name, Sequence[Name]]


class DerivativeInputs:
  """The differentiated input(s) of a model's batch.

  Args:
    names: `None` for a model of one input tensor; else the key of a dict
      input or the index of a tuple (or list) input, or several of them:
      their tensors, each `[B, n_i]`, are differentiated as one input
      `[B, n_1 + n_2 + ...]`, in the order named.

  Raises:
    ValueError: for names that are not strings or integers, or repeated.
  """

  def __init__(self, names: Names = None):
    self.names = _check_names(names)

  def get_config(self) -> Names:
    """The names as given to the constructor (JSON-serialisable)."""
    if self.names is None or len(self.names) > 1:
      return None if self.names is None else list(self.names)
    return self.names[0]

  def split(self, inputs: Any) -> Tuple[tf.Tensor, Callable[[tf.Tensor], Any]]:
    """`(x, rebuild)`: the differentiated tensor and its inverse.

    Args:
      inputs: the model's input batch: a tensor, or a dict, tuple or list.

    Returns:
      `x`, the tensor the objective differentiates, `[B, in...]`, and
      `rebuild(z)`, the batch with `z` in `x`'s place.

    Raises:
      ValueError: when the inputs do not hold what `names` names.
    """
    if self.names is None:
      if isinstance(inputs, (dict, list, tuple)):
        raise ValueError(
          "SobolevModel differentiates with respect to a single input "
          "tensor, unless `derivative_inputs` names the inputs to "
          f"differentiate. Received inputs {_describe(inputs)}."
        )
      return inputs, lambda z: z
    if not isinstance(inputs, (dict, list, tuple)):
      raise ValueError(
        f"Received `derivative_inputs={self.get_config()!r}` for a model "
        "input that is a single tensor; name inputs only for a dict or "
        "tuple of inputs, or pass derivative_inputs=None."
      )
    parts = [self._part(inputs, name) for name in self.names]
    if len(parts) == 1:
      return parts[0], lambda z: _replaced(inputs, {self.names[0]: z})
    sizes = self._sizes(parts)
    x = tf.concat(parts, axis=-1)  # [B, sum n_i]

    def rebuild(z):
      pieces = tf.split(z, sizes, axis=-1)
      return _replaced(inputs, dict(zip(self.names, pieces, strict=True)))

    return x, rebuild

  def input_shape(self, input_shape: Any) -> tf.TensorShape:
    """The differentiated input's shape, from Keras's `build` shapes."""
    if self.names is None:
      return tf.TensorShape(input_shape)
    shapes = [tf.TensorShape(self._part(input_shape, n)) for n in self.names]
    if len(shapes) == 1:
      return shapes[0]
    sizes = [s[-1] if s.rank == 2 else None for s in shapes]
    return tf.TensorShape([None, None if None in sizes else sum(sizes)])

  def _part(self, inputs, name: Name):
    if isinstance(inputs, dict):
      if name not in inputs:
        raise ValueError(
          f"Received `derivative_inputs` naming {name!r}, which the inputs "
          f"do not hold. Received inputs {_describe(inputs)}."
        )
    elif not isinstance(name, int) or not -len(inputs) <= name < len(inputs):
      raise ValueError(
        f"Received `derivative_inputs` naming {name!r} for inputs given as "
        f"a {type(inputs).__name__} of {len(inputs)}; name them by index."
      )
    return inputs[name]

  def _sizes(self, parts) -> list:
    sizes = []
    for name, part in zip(self.names, parts, strict=True):
      part = tf.convert_to_tensor(part)
      if part.shape.rank != 2 or part.shape[-1] is None:
        raise ValueError(
          "Several differentiated inputs must each be a batch of vectors "
          f"[B, n] with n known. Received input {name!r} of shape "
          f"{part.shape}."
        )
      sizes.append(int(part.shape[-1]))
    dtypes = {tf.as_dtype(p.dtype) for p in parts}
    if len(dtypes) > 1:
      raise ValueError(
        "Several differentiated inputs must share one dtype. Received "
        f"{sorted(d.name for d in dtypes)} for {list(self.names)}."
      )
    return sizes


def _check_names(names: Names) -> Optional[Tuple[Name, ...]]:
  if names is None:
    return None
  many = isinstance(names, (list, tuple))
  values = tuple(names) if many else (names,)
  valid = values and all(
    isinstance(n, (str, int)) and not isinstance(n, bool) for n in values
  )
  if not valid or len(set(values)) != len(values):
    raise ValueError(
      "Received an invalid value for `derivative_inputs`, expected None, "
      "an input's key (str) or index (int), or a list of distinct ones. "
      f"Received: derivative_inputs={names!r}"
    )
  return values


def _replaced(inputs, parts: dict):
  """`inputs` with the entries of `parts` in place of theirs."""
  if isinstance(inputs, dict):
    return {**inputs, **parts}
  values = list(inputs)
  for index, part in parts.items():
    values[index] = part
  return type(inputs)(values)


def _describe(inputs) -> str:
  if isinstance(inputs, dict):
    return f"keyed {sorted(inputs, key=str)}"
  return f"as a {type(inputs).__name__} of {len(inputs)}"


def check_model(model) -> None:
  """Raises a `ValueError` unless `model` can be trained on derivatives.

  Args:
    model: the model given to `SobolevModel`.

  Raises:
    ValueError: for a model that is not a Keras layer, has several outputs
      or normalises over the batch while training.
  """
  if not isinstance(model, keras.layers.Layer):
    raise ValueError(
      "Received an invalid value for `model`, expected a Keras model or "
      f"layer. Received: model={model!r}"
    )
  outputs = getattr(model, "outputs", None)
  if outputs is not None and len(outputs) > 1:
    raise ValueError(
      "Received a `model` with several outputs "
      f"({len(outputs)}); SobolevModel differentiates one output tensor. "
      "Concatenate them into one (keras.layers.Concatenate)."
    )
  batch_norms = [
    layer.name
    for layer in private_api.nested_layers(model)
    if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
  ]
  if batch_norms:
    raise ValueError(
      f"Received a `model` with trainable BatchNormalization layers "
      f"{batch_norms}: in training they normalise over the batch, so an "
      "example's output depends on the others and its input derivatives "
      "are not its own. Freeze them (`layer.trainable = False` runs them in "
      "inference mode) or use a per-example normalisation "
      "(LayerNormalization, GroupNormalization)."
    )
