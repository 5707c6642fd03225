"""Several training steps as one XLA program: `FusedSteps`.

Keras compiles each step with `jit_compile=True` and loops over
`steps_per_execution` of them in TensorFlow, launching one XLA program per
step. On a CPU that launch, with the reads and writes of every variable
around it, costs about as much as a small network's step. `FusedSteps`
fetches an execution's batches first (in the graph, stacked on a new
leading axis) and runs the steps over them in one XLA program: the same
steps on the same batches in the same order, so the same weights as step
by step. It needs one replica and batches of dense tensors; an execution
whose batches do not all share one shape (an epoch's short last batch, the
end of the data) runs step by step.

`fused_steps` says when fusing pays: with `fuse_steps="auto"`, not on a
CPU host for a step with convolutions, which XLA:CPU runs about thirty times
slower inside a loop than outside (docs/benchmark.md).
"""

from typing import Any
from typing import Callable
from typing import Dict
from typing import Optional
from typing import Tuple

import tensorflow as tf

Logs = Dict[str, tf.Tensor]
StepFn = Callable[[Any], Logs]

# The most bytes of batches stacked for one fused program: an execution of
# larger batches runs as several (their steps are long enough that a launch
# per step matters little).
STACK_BYTES = 64 * 2**20

FUSE_OPTIONS = ("auto", True, False)


def check_fuse_steps(fuse_steps: Any) -> None:
  """Raises a `ValueError` unless `fuse_steps` is one of `FUSE_OPTIONS`."""
  if (
    fuse_steps is not True and fuse_steps is not False and fuse_steps != "auto"
  ):
    raise ValueError(
      "Received an invalid value for `fuse_steps`, expected one of "
      f"{FUSE_OPTIONS}. Received: fuse_steps={fuse_steps!r}"
    )


def dense_elements(element_spec: Any) -> bool:
  """Whether every component of a dataset element is a dense tensor."""
  return all(
    isinstance(spec, tf.TensorSpec) and spec.shape.rank is not None
    for spec in tf.nest.flatten(element_spec)
  )


class FusedSteps:
  """`(iterator, count) -> logs`: `count` steps as one XLA program.

  The batches are fetched in the graph and stacked, padded to `size` (so
  that one program serves every count), and the compiled loop runs the
  steps on the first `count` of them, every one in the loop's body with a
  trip count known only at run time: each step compiles to the same code
  whatever the execution's length, so a run resumed at another step
  boundary gives the same weights, bit for bit. Where `size` batches would
  take more than `STACK_BYTES`, the stack holds fewer and an execution runs
  as several calls of the same program.

  Attributes:
    size: the most steps per call (`steps_per_execution`).
    loop: the compiled loop, `(stacked, count) -> logs`.
  """

  def __init__(self, step_fn: StepFn, size: int):
    """Builds the fetch and the compiled loop; traces nothing yet.

    Args:
      step_fn: one training step on one batch (on the one replica),
        `batch -> logs` of fully defined shapes; run inside the compiled
        loop.
      size: the most steps per call.
    """
    self.size = int(size)
    self._step_fn = step_fn
    self._fetch = tf.function(self._fetch_fn)
    self.loop = tf.function(self._loop_fn, jit_compile=True)

  @tf.autograph.experimental.do_not_convert
  def _fetch_fn(self, iterator, count) -> Tuple[tf.Tensor, Any, Any, Any]:
    """Up to `count` batches of the first one's shape, stacked and padded.

    Fetching stops at the end of the data, after `count` batches, when the
    stack would outgrow `STACK_BYTES` or at the first batch of another
    shape, which is returned on its own.

    Returns:
      `(fetched, capacity, stacked, odd)`: how many batches were stacked,
      how many the stack holds (`size`, or fewer for large batches), the
      stack (every component `[capacity, ...]`, padded with the first
      batch) and an optional odd batch.
    """
    spec = iterator.element_spec
    first = iterator.get_next_as_optional()
    empty = tf.experimental.Optional.empty(spec)
    capacity = tf.cond(
      first.has_value(),
      lambda: _capacity(first.get_value(), self.size),
      lambda: tf.constant(1),
    )
    limit = tf.minimum(count, capacity)

    def body(index, optional, arrays, odd):
      del odd
      value = optional.get_value()
      same = _same_shapes(value, first.get_value())
      arrays = tf.cond(
        same,
        lambda: tf.nest.map_structure(
          lambda array, t: array.write(index, t), arrays, value
        ),
        lambda: arrays,
      )
      odd = tf.cond(same, lambda: empty, lambda: optional)
      following = tf.cond(
        tf.logical_and(same, index + 1 < limit),
        iterator.get_next_as_optional,
        lambda: empty,
      )
      return index + tf.cast(same, tf.int32), following, arrays, odd

    arrays = tf.nest.map_structure(
      lambda s: tf.TensorArray(s.dtype, size=capacity, element_shape=s.shape),
      spec,
    )
    fetched, _, arrays, odd = tf.while_loop(
      lambda index, optional, *_: tf.logical_and(
        index < limit, optional.has_value()
      ),
      body,
      (tf.constant(0), first, arrays, empty),
      maximum_iterations=self.size,
    )
    stacked = tf.cond(
      fetched > 0,
      lambda: _padded(arrays, fetched, capacity),
      lambda: tf.nest.map_structure(_empty_stack, spec),
    )
    return fetched, capacity, stacked, odd

  @tf.autograph.experimental.do_not_convert
  def _loop_fn(self, stacked, count) -> Logs:
    """Steps on `stacked`'s first `count` batches; the last step's logs."""
    batch_spec = tf.nest.map_structure(
      lambda t: tf.TensorSpec(t.shape[1:], t.dtype), stacked
    )
    # Traced once, as Keras traces a step (without AutoGraph): the loop's
    # body calls the traced step, whose outputs also give the logs' shapes.
    step = tf.function(self._step_fn, autograph=False).get_concrete_function(
      batch_spec
    )
    zeros = tf.nest.map_structure(
      lambda t: tf.zeros(t.shape, t.dtype), step.structured_outputs
    )

    def body(index, logs):
      del logs
      batch = tf.nest.map_structure(lambda t: t[index], stacked)
      return index + 1, step(batch)

    _, logs = tf.while_loop(
      lambda index, logs: index < count, body, (tf.constant(0), zeros)
    )
    return logs

  def __call__(self, iterator, count: Optional[int] = None) -> Logs:
    """Runs up to `count` (default `size`) steps on `iterator`'s batches.

    Raises:
      StopIteration: if the iterator had no batch left.
    """
    count = self.size if count is None else int(count)
    if not 1 <= count <= self.size:
      raise ValueError(
        f"Expected 1 <= count <= {self.size}. Received: count={count}"
      )
    logs, done = None, 0
    while done < count:
      fetched, capacity, stacked, odd = self._fetch(
        iterator, tf.constant(count - done)
      )
      asked = min(count - done, int(capacity))
      fetched_count = int(fetched)
      if fetched_count:
        logs = self.loop(stacked, fetched)
        done += fetched_count
      if odd.has_value():
        alone = tf.nest.map_structure(lambda t: t[tf.newaxis], odd.get_value())
        logs = self.loop(alone, tf.constant(1))
        done += 1
      elif fetched_count < asked:
        break  # The end of the data.
    if logs is None:
      raise StopIteration
    return logs


def _capacity(batch: Any, size: int) -> tf.Tensor:
  """How many batches like `batch` one stack holds: `size` or fewer."""
  batch_bytes = tf.add_n(
    [tf.size(t, tf.int64) * t.dtype.size for t in tf.nest.flatten(batch)]
  )
  return tf.cast(
    tf.clip_by_value(STACK_BYTES // batch_bytes, 1, size), tf.int32
  )


def _same_shapes(value: Any, first: Any) -> tf.Tensor:
  """Whether every component of `value` has the shape of `first`'s."""
  pairs = zip(tf.nest.flatten(value), tf.nest.flatten(first), strict=True)
  return tf.reduce_all(
    [tf.reduce_all(tf.shape(a) == tf.shape(b)) for a, b in pairs]
  )


def _padded(arrays: Any, fetched: tf.Tensor, capacity: tf.Tensor) -> Any:
  """The stacked arrays, the places after `fetched` filled with batch 0."""

  def fill(index, arrays):
    return index + 1, tf.nest.map_structure(
      lambda array: array.write(index, array.read(0)), arrays
    )

  _, filled = tf.while_loop(
    lambda index, _: index < capacity, fill, (fetched, arrays)
  )
  return tf.nest.map_structure(lambda array: array.stack(), filled)


def _empty_stack(spec: tf.TensorSpec) -> tf.Tensor:
  """A stack of one empty batch of `spec`, for when there is none."""
  return tf.zeros([1] + [dim or 0 for dim in spec.shape], spec.dtype)


def _convolution_ops(concrete) -> bool:
  """Whether a traced function runs a convolution (or its gradient)."""
  graph_def = concrete.graph.as_graph_def()
  ops = [node.op for node in graph_def.node] + [
    node.op for f in graph_def.library.function for node in f.node_def
  ]
  return any("Conv" in op for op in ops)


def on_cpu_only() -> bool:
  """Whether TensorFlow has no accelerator (GPU or TPU) to run on."""
  return not (
    tf.config.list_logical_devices("GPU")
    or tf.config.list_logical_devices("TPU")
  )


def fused_steps(
  fuse_steps: Any,
  step_fn: StepFn,
  size: int,
  element_spec: Any,
  replicas: int,
  jit_compile: bool,
) -> Optional[FusedSteps]:
  """A `FusedSteps` for these steps, or `None` where they run one by one.

  Args:
    fuse_steps: `True`, `False` or `"auto"`, which fuses unless the host is
      a CPU and the step runs convolutions.
    step_fn: one step on one batch.
    size: the most steps per execution.
    element_spec: a batch's spec.
    replicas: replicas in sync.
    jit_compile: whether the steps are compiled with XLA.

  Returns:
    `None`, whatever `fuse_steps` says, when the steps are not compiled
    with XLA, run one per execution, on several replicas or on batches
    that are not dense tensors of known rank.
  """
  check_fuse_steps(fuse_steps)
  if (
    fuse_steps is False
    or not jit_compile
    or size < 2
    or replicas != 1
    or not dense_elements(element_spec)
  ):
    return None
  fused = FusedSteps(step_fn, size)
  if fuse_steps is True or not on_cpu_only():
    return fused
  # Traced once here; the calls on batches of these specs reuse the trace.
  stacked_spec = tf.nest.map_structure(
    lambda s: tf.TensorSpec([None] + s.shape.as_list(), s.dtype),
    element_spec,
  )
  concrete = fused.loop.get_concrete_function(
    stacked_spec, tf.TensorSpec([], tf.int32)
  )
  return None if _convolution_ops(concrete) else fused


class FusedOnFirstCall:
  """A Keras train function that runs fused steps where `fused_steps` says.

  The choice needs the data's element spec, known at the first call; other
  calls (not on an iterator) go to Keras's own function.

  Args:
    model: a compiled `keras.Model`.
    keras_function: Keras's train function for the model.
    fuse_steps: `True`, `False` or `"auto"` (see `fused_steps`).
  """

  def __init__(self, model, keras_function, fuse_steps: Any):
    self._model = model
    self._keras_function = keras_function
    self._fuse_steps = fuse_steps
    self._function = None

  def __call__(self, iterator):
    """Runs an execution's steps on `iterator`; returns their logs."""
    if not isinstance(
      iterator, (tf.data.Iterator, tf.distribute.DistributedIterator)
    ):
      return self._keras_function(iterator)
    if self._function is None:
      model = self._model
      fused = fused_steps(
        self._fuse_steps,
        lambda batch: model.distribute_strategy.run(
          model.train_step, args=(batch,)
        ),
        model.steps_per_execution,
        iterator.element_spec,
        model.distribute_strategy.num_replicas_in_sync,
        bool(model.jit_compile),
      )
      self._function = fused or self._keras_function
    return self._function(iterator)
