"""Training-step helpers shared by `SobolevModel` and the Sonnet trainers.

* `apply_if_finite`: applies an optimiser step only when the step is
  finite, under any `tf.distribute` strategy and under XLA (which drops
  assertions), so that no NaN or Inf reaches the weights or the optimiser's
  state.
* `StepGuard`: records why a step was not applied, and raises about it
  from the host after the step (XLA drops in-graph assertions).
* `clip_across_replicas`: clips the sum of the replicas' gradients, as one
  device would.
* `xla_cpu_matmul_gradients`: while a step is traced for XLA on a CPU,
  computes the narrow weight-gradient products in the layout XLA:CPU runs
  fast.
"""

import contextlib
import threading
from typing import Iterator
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple
import warnings

import keras
import tensorflow as tf
from tensorflow.compiler.tf2xla.ops import gen_xla_ops
from tensorflow.python.framework import ops

from sobolev_tf import derivatives
from sobolev_tf import distribute_utils
from sobolev_tf import execution

# The widest product result that `xla_cpu_matmul_gradients` computes
# transposed: faster from 2 to 16 columns on every measured shape
# (`benchmarks/narrow_gradients_benchmark.py`); from 32 columns some shapes
# ran slower transposed (0.55-0.79x in a probe of the bare product).
NARROW_COLUMNS = 16


def all_finite(tensors: Sequence[Optional[tf.Tensor]]) -> tf.Tensor:
  """Whether every entry of every tensor (`None`s skipped) is finite."""
  checks = [
    tf.reduce_all(tf.math.is_finite(t)) for t in tensors if t is not None
  ]
  return tf.reduce_all(checks) if checks else tf.constant(True)


def finite_everywhere(finite: tf.Tensor) -> tf.Tensor:
  """True only if `finite` holds on every replica (all must agree to skip)."""
  failures = distribute_utils.all_reduce_sum(
    [1.0 - tf.cast(finite, tf.float32)]
  )[0]
  return tf.equal(failures, 0.0)


def clip_across_replicas(
  optimizer: keras.optimizers.Optimizer, gradients: List[tf.Tensor]
) -> List[tf.Tensor]:
  """Clips the sum of the replicas' gradients, as one replica would.

  Keras 3's TensorFlow optimiser clips each replica's gradient and then sums
  them, so with several replicas a clipping optimiser (`clipnorm`,
  `global_clipnorm` or `clipvalue`) steps differently than on one device.
  With several replicas and clipping on, this sums the gradients first,
  clips the sum with the optimiser's own setting and gives each replica a
  `1 / num_replicas` share: the optimiser's clipping leaves the shares alone
  (each is within the limit divided by the number of replicas) and its sum
  restores the clipped total.

  Args:
    optimizer: the model's optimiser.
    gradients: this replica's gradients.

  Returns:
    This replica's share of the clipped total, or `gradients` unchanged
    with one replica or no clipping.
  """
  context = tf.distribute.get_replica_context()
  replicas = context.num_replicas_in_sync if context else 1
  if replicas == 1 or not (
    optimizer.clipnorm or optimizer.global_clipnorm or optimizer.clipvalue
  ):
    return gradients
  total = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
  # The order of keras.optimizers.Optimizer._clip_gradients.
  if optimizer.clipnorm:
    total = [tf.clip_by_norm(g, optimizer.clipnorm) for g in total]
  elif optimizer.global_clipnorm:
    total, _ = tf.clip_by_global_norm(total, optimizer.global_clipnorm)
  else:
    limit = optimizer.clipvalue
    total = [tf.clip_by_value(g, -limit, limit) for g in total]
  return [g / replicas for g in total]


def connected(
  gradients: Sequence[Optional[tf.Tensor]], variables: Sequence[tf.Variable]
) -> Tuple[list, list]:
  """The gradients that exist and their variables, as Keras filters them.

  A variable off the loss's path (a bias that does not move an input
  derivative, a layer of another output) gets no update, with a warning
  when the step is traced, as plain Keras `fit` does. If no variable has a
  gradient (every loss weight zero), every variable gets a zero gradient so
  that the step still counts.

  Args:
    gradients: from `tape.gradient`, `None` where not connected.
    variables: the variables they belong to.

  Returns:
    `(gradients, variables)` of the connected pairs.
  """
  pairs = [
    (g, v) for g, v in zip(gradients, variables, strict=True) if g is not None
  ]
  missing = [
    v.path if hasattr(v, "path") else v.name
    for g, v in zip(gradients, variables, strict=True)
    if g is None
  ]
  if missing:
    warnings.warn(
      f"Gradients do not exist for variables {missing} when minimizing the "
      "Sobolev objective; they are not updated.",
      stacklevel=2,
    )
  if not pairs:
    return [tf.zeros(v.shape, tf.as_dtype(v.dtype)) for v in variables], list(
      variables
    )
  return [g for g, _ in pairs], [v for _, v in pairs]


def apply_if_finite(
  optimizer: keras.optimizers.Optimizer,
  gradients: List[tf.Tensor],
  variables: List[tf.Variable],
  finite: tf.Tensor,
  check_gradients: bool = True,
) -> Tuple[tf.Tensor, tf.Tensor]:
  """`optimizer.apply(gradients, variables)` only if the step is finite.

  The step is applied only if `finite` and, with `check_gradients`, the
  gradients are finite, on every replica. A skipped step leaves the
  weights, the optimiser's slots and its `iterations` as they were. The
  gradients are checked as given, then clipped across replicas
  (`clip_across_replicas`). The condition runs in a cross-replica context
  where the strategy needs one, as Keras's `LossScaleOptimizer` does.

  Args:
    optimizer: a built or unbuilt Keras optimiser.
    gradients: this replica's gradients.
    variables: the variables they update.
    finite: scalar bool, this replica's verdict on the step's other checks
      (input, targets, loss).
    check_gradients: whether to check the gradients (off when the optimiser
      handles overflows itself, as `LossScaleOptimizer` does).

  Returns:
    `(applied, gradients_finite)`, scalar bools: whether the step was
    applied (the same on every replica) and whether this replica's
    gradients were finite.
  """
  if not optimizer.built:
    optimizer.build(variables)
  gradients_finite = (
    all_finite(gradients) if check_gradients else tf.constant(True)
  )
  applied = finite_everywhere(finite & gradients_finite)
  gradients = clip_across_replicas(optimizer, gradients)
  context = tf.distribute.get_replica_context()
  if (
    context is None
    or tf.__internal__.distribute.strategy_supports_no_merge_call()
  ):
    if derivatives.in_xla_context():
      _apply_or_restore(optimizer, gradients, variables, applied)
    else:
      tf.cond(
        applied, lambda: optimizer.apply(gradients, variables), lambda: None
      )
    return applied, gradients_finite

  def cross_replica(distribution, gradients, applied):
    first = distribution.experimental_local_results(applied)[0]

    def apply():
      distribution.extended.call_for_each_replica(
        optimizer.apply, args=(gradients, variables)
      )

    tf.cond(first, apply, lambda: None)

  context.merge_call(cross_replica, args=(gradients, applied))
  return applied, gradients_finite


def _apply_or_restore(optimizer, gradients, variables, finite) -> None:
  """`apply_if_finite` without a conditional, for XLA.

  XLA:CPU copies every variable a conditional may write (weights and
  optimiser slots) in and out of it, which costs as much as a small
  network's step. Here the update always runs and each variable it may
  write is then set to `where(finite, updated, before)`, which XLA fuses
  into the update itself: the same values as the conditional. (Checking
  the updated state instead of the gradients would save re-reading the
  gradients, but it keeps XLA from fusing the select into the update:
  plain steps ran 16-46% slower.)
  """
  state = list(variables) + list(optimizer.variables)
  before = [tf.identity(v) for v in state]
  with tf.control_dependencies(before):
    optimizer.apply(gradients, variables)
  for variable, old in zip(state, before, strict=True):
    variable.assign(tf.where(finite, variable, old))


class StepGuard(tf.Module):
  """Why the last skipped step was not applied, raised from the host.

  The step records its checks (`record`); after the `tf.function` call the
  host calls `raise_if_skipped`, which raises a `ValueError` naming the
  causes and clears the record.
  """

  CAUSES = (
    "the input x holds NaN or Inf",
    "the targets hold NaN or Inf (nonfinite_targets='raise')",
    "the loss is NaN or Inf",
    "the gradients hold NaN or Inf",
  )

  def __init__(self, name: Optional[str] = None):
    super().__init__(name=name)
    self.cause = tf.Variable(
      0,
      dtype=tf.int32,
      trainable=False,
      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
      name="nonfinite_cause",
    )

  def record(
    self,
    applied: tf.Tensor,
    x_finite: tf.Tensor,
    targets_finite: tf.Tensor,
    loss_finite: tf.Tensor,
    gradients_finite: tf.Tensor,
  ) -> None:
    """Records the first failed check of a step that was not applied."""
    checks = (x_finite, targets_finite, loss_finite, gradients_finite)
    cause = tf.constant(0, tf.int32)
    # Only the first failure: NaN data make the loss and gradients NaN too.
    for index in reversed(range(len(checks))):
      cause = tf.where(checks[index], cause, index + 1)
    self.cause.assign(tf.where(applied, self.cause, tf.maximum(cause, 1)))

  def raise_if_skipped(self, when: str = "") -> None:
    """Raises a `ValueError` if a step was skipped since the last call.

    Args:
      when: where in training, for the message (e.g. `"after step 40 "`).

    Raises:
      ValueError: naming the cause; the record is cleared first.
    """
    cause = int(self.cause.numpy())
    if not cause:
      return
    self.cause.assign(0)
    raise ValueError(
      f"A step was not applied {when}because {self.CAUSES[cause - 1]}; "
      "the weights are those before it. Clean the data, or set "
      "nonfinite_targets='drop' or 'missing' for targets with gaps."
    )


@contextlib.contextmanager
def xla_cpu_matmul_gradients() -> Iterator[None]:
  """While tracing a step: narrow `MatMul` gradients in XLA:CPU's fast layout.

  The gradient of a `MatMul` with respect to a weight is a product whose
  first operand is transposed, `a^T @ g`. XLA:CPU runs that product
  several times slower when its result is narrow (2 to 16 columns, e.g.
  the `[256, 8]` kernel of a layer with 8 outputs) than the same product
  computed as `(g^T @ a)^T`, and it folds a plain transpose back into the
  slow form (the whole gradient: 1.1-12x faster transposed,
  `benchmarks/narrow_gradients_benchmark.py`). Within this context, on a
  host with no accelerator, the gradients of `MatMul`s traced for XLA
  compute such products transposed, behind an optimisation barrier: the
  same values (up to the order of the sums). Elsewhere (eagerly, without
  XLA, on GPU or TPU hosts) gradients are TensorFlow's own.

  TensorFlow has no public hook for one op's gradient under a
  `GradientTape`, so this swaps the `MatMul` entry of its gradient
  registry (a private API) while any thread is inside the context (the
  replicas of a `MirroredStrategy` trace their steps in threads), and
  restores it when the last one leaves. A function traced in another
  thread meanwhile gets the same values.

  Yields:
    Nothing; trace the step's forward pass and `tape.gradient` inside.
  """
  _MATMUL_GRADIENT.enter()
  try:
    yield
  finally:
    _MATMUL_GRADIENT.exit()


class _MatMulGradientSwap:
  """Swaps the registered `MatMul` gradient while any thread needs it."""

  def __init__(self):
    self._registry = ops._gradient_registry._registry  # pylint: disable=protected-access
    self._lock = threading.Lock()
    self._users = 0
    self._saved = None

  def enter(self) -> None:
    with self._lock:
      if not self._users:
        self._saved = self._registry["MatMul"]
        tensorflow_gradient = self._saved["type"]

        def gradient(op, grad):
          gradients = tensorflow_gradient(op, grad)
          # Asked while tracing for XLA only, off eager steps' path.
          if not derivatives.in_xla_context() or not execution.on_cpu_only():
            return gradients
          return type(gradients)(_transposed_if_narrow(g) for g in gradients)

        self._registry["MatMul"] = dict(self._saved, type=gradient)
      self._users += 1

  def exit(self) -> None:
    with self._lock:
      self._users -= 1
      if not self._users:
        self._registry["MatMul"] = self._saved
        self._saved = None


def is_narrow(rows: Optional[int], columns: Optional[int]) -> bool:
  """Whether `xla_cpu_matmul_gradients` transposes `[rows, columns]`."""
  return (
    rows is not None
    and columns is not None
    and 1 < columns <= NARROW_COLUMNS
    and columns < rows
  )


def _transposed_if_narrow(product: Optional[tf.Tensor]) -> Optional[tf.Tensor]:
  """`a^T @ b` with a narrow result as `(b^T @ a)^T`, else `product`."""
  if product is None or product.op.type != "MatMul":
    return product
  op = product.op
  if not op.get_attr("transpose_a") or not is_narrow(*product.shape):
    return product
  a, b = op.inputs
  transposed = tf.matmul(b, a, transpose_a=not op.get_attr("transpose_b"))
  # Without the barrier XLA folds the transpose into the slow product.
  transposed = gen_xla_ops.xla_optimization_barrier([transposed])[0]
  return tf.transpose(transposed)


_MATMUL_GRADIENT = _MatMulGradientSwap()
