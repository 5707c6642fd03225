"""The private TensorFlow and Keras entry points the library uses, in one place.

TensorFlow has no public way to ask these questions, and each answer buys
speed or a clearer error, never correctness. So each entry point here is:

* looked up when first needed, never when `sobolev_tf` is imported;
* guarded: on *any* failure (a moved module, a renamed function, an error
  inside it) the caller gets the public answer instead, and a warning says
  once which entry point failed;
* tested both ways (`tests/private_api_test.py` forces every failure).

Entry points, what each buys, and its public fallback:

* `control_flow_util.GraphOrParentsInXlaContext` (`in_xla_context`):
  XLA-friendly programs while tracing for XLA. Fallback: "not under XLA",
  the graph-mode programs (the same results, slower under XLA).
* `parallel_for.control_flow_ops._pfor_impl` (`vectorized_loop`): one
  vectorised pass for a Jacobian's rows under XLA. Fallback: the rows one
  by one.
* `tf.__internal__.distribute.strategy_supports_no_merge_call`
  (`strategy_supports_no_merge_call`): conditional updates in replica
  context where a strategy cannot merge (XLA on GPUs, TPUs). Fallback:
  merge whenever a strategy is set.
* `keras.layers.Layer._flatten_layers` (`nested_layers`): every layer
  nested in a model. Fallback: a walk of `Model.layers` and of the
  layers' attributes.
"""

import functools
from typing import Callable
from typing import Iterator
from typing import Optional
import warnings

import keras
import tensorflow as tf


@functools.cache
def _warn_once(entry_point: str, error: str) -> None:
  warnings.warn(
    f"sobolev_tf: TensorFlow/Keras's private {entry_point} failed ({error}); "
    "using the public fallback, which gives the same results, maybe slower.",
    RuntimeWarning,
    stacklevel=3,
  )


def _xla_context_lookup() -> Callable[[], bool]:
  from tensorflow.python.ops import control_flow_util  # pylint: disable=g-direct-tensorflow-import

  return lambda: control_flow_util.GraphOrParentsInXlaContext(
    tf.compat.v1.get_default_graph()
  )


def in_xla_context() -> bool:
  """Whether the function being traced will be compiled by XLA.

  TensorFlow's own test for XLA contexts (its control flow lowers with it).
  Fallback: `False`, the choices of plain graphs.
  """
  if tf.executing_eagerly():
    return False
  try:
    return bool(_xla_context_lookup()())
  except Exception as error:  # pylint: disable=broad-except
    _warn_once("GraphOrParentsInXlaContext", repr(error))
    return False


def _pfor_lookup() -> Callable[..., tf.Tensor]:
  from tensorflow.python.ops.parallel_for import control_flow_ops  # pylint: disable=g-direct-tensorflow-import

  return control_flow_ops._pfor_impl  # pylint: disable=protected-access


def vectorized_loop(
  loop_fn: Callable[[tf.Tensor], tf.Tensor], iterations: int
) -> Optional[tf.Tensor]:
  """`loop_fn(i)` for `i < iterations`, stacked on axis 0 by `pfor`, or None.

  `tf.vectorized_map` and `pfor` wrap the loop in a `tf.function`, through
  whose boundary XLA takes the loop's inputs (the batch, the weights) as
  compile-time constants where an op needs a constant operand, and compiles
  the program again at every step. The implementation they wrap converts
  the loop in place. Fallback (also for a loop it cannot convert): `None`,
  and the caller runs the iterations one by one.
  """
  try:
    return _pfor_lookup()(loop_fn, iterations, fallback_to_while_loop=False)
  except Exception as error:  # pylint: disable=broad-except
    if not isinstance(error, ValueError):  # ValueError: not convertible.
      _warn_once("pfor implementation", repr(error))
    return None


def _merge_call_lookup() -> Callable[[], bool]:
  return tf.__internal__.distribute.strategy_supports_no_merge_call


def strategy_supports_no_merge_call() -> bool:
  """Whether the current strategy updates variables in replica context.

  Fallback: only without a strategy (every strategy can merge outside XLA).
  """
  try:
    return bool(_merge_call_lookup()())
  except Exception as error:  # pylint: disable=broad-except
    _warn_once("strategy_supports_no_merge_call", repr(error))
    return not tf.distribute.has_strategy()


def _flatten_layers_lookup(layer: keras.layers.Layer):
  return layer._flatten_layers(include_self=True, recursive=True)  # pylint: disable=protected-access


def nested_layers(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
  """`layer` and every layer nested in it, each once.

  Fallback: the layers reachable through `Model.layers` and through the
  layers' public attributes (lists and dicts included).
  """
  try:
    return iter(list(_flatten_layers_lookup(layer)))
  except Exception as error:  # pylint: disable=broad-except
    _warn_once("Layer._flatten_layers", repr(error))
    return _walk_layers(layer)


def _walk_layers(root: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
  seen, stack = set(), [root]
  while stack:
    layer = stack.pop()
    if id(layer) in seen:
      continue
    seen.add(id(layer))
    yield layer
    children = list(getattr(layer, "layers", None) or [])
    for name, value in vars(layer).items():
      if name.startswith("_"):
        continue
      if isinstance(value, dict):
        value = list(value.values())
      if not isinstance(value, (list, tuple)):
        value = [value]
      children += [v for v in value if isinstance(v, keras.layers.Layer)]
    stack.extend(reversed(children))
