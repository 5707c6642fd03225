"""The losses of the Sobolev terms, as Keras takes them.

A term's loss is a Keras loss, its name or config, or a plain function
`(y_true, y_pred) -> [B]` (wrapped by `FunctionLoss`), plus the paper's
gradient loss, `"sum_squared_error"`.
"""

import re
from typing import Callable
from typing import Optional
from typing import Union

import keras
import tensorflow as tf

LossSpec = Union[str, keras.losses.Loss, Callable[..., tf.Tensor]]


@keras.saving.register_keras_serializable(package="sobolev_tf")
class FunctionLoss(keras.losses.Loss):
  """A Keras `Loss` around a function `(y_true, y_pred) -> [B]`.

  Keras's own wrapper is private; this one gives plain functions the
  reduction, sample weighting and distribution scaling of a Keras loss.
  """

  def __init__(
    self, fn: Callable[..., tf.Tensor], name: Optional[str] = None, **kwargs
  ):
    # A valid TensorFlow name scope: "<lambda>" and "_private" are not.
    default = re.sub(r"[^A-Za-z0-9_.]", "_", fn.__name__).strip("_")
    super().__init__(name=name or default or "loss", **kwargs)
    self.fn = fn

  def call(self, y_true, y_pred):
    """Per-example loss, `[B]`."""
    return self.fn(y_true, y_pred)

  def get_config(self):
    """The base config plus the serialised function."""
    return {
      **super().get_config(),
      "fn": keras.saving.serialize_keras_object(self.fn),
    }

  @classmethod
  def from_config(cls, config):
    """Rebuilds the loss, deserialising its function."""
    config = dict(config)
    config["fn"] = keras.saving.deserialize_keras_object(config["fn"])
    return cls(**config)


@keras.saving.register_keras_serializable(package="sobolev_tf")
def sum_squared_error(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
  """`||y_true - y_pred||^2` per example: the paper's gradient loss.

  Keras's `mean_squared_error` averages over the `D` entries of an
  example instead, which weighs a `d`-dimensional gradient `d` times less.
  """
  return tf.reduce_sum(tf.square(y_true - y_pred), axis=-1)


_NAMED_LOSSES = {"sum_squared_error": sum_squared_error}


def get(spec: LossSpec, key: str) -> keras.losses.Loss:
  """The Keras loss of `spec` for term `key` (named in errors).

  Args:
    spec: a Keras loss, its name (or `"sum_squared_error"`), its config, or
      a callable `(y_true, y_pred) -> [B]`.
    key: the term, for the message.

  Returns:
    A `keras.losses.Loss`.

  Raises:
    ValueError: for anything else.
  """
  if isinstance(spec, keras.losses.Loss):
    return spec
  if isinstance(spec, str) and spec in _NAMED_LOSSES:
    return FunctionLoss(_NAMED_LOSSES[spec])
  if isinstance(spec, (str, dict)):
    try:
      loss = keras.losses.get(spec)
    except ValueError as error:
      raise ValueError(
        f"Received an invalid value for `losses[{key!r}]`: {error}"
      ) from None
    return loss if isinstance(loss, keras.losses.Loss) else FunctionLoss(loss)
  if callable(spec):
    return FunctionLoss(spec)
  raise ValueError(
    f"Received an invalid value for `losses[{key!r}]`, expected a Keras "
    f"loss, its name or a callable(y_true, y_pred). Received: {spec!r}"
  )
