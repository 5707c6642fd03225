"""The model's side of each Sobolev term: full or projected derivatives.

An estimator computes one `targets.Pass` of the (transformed) model for a
batch, the same of a teacher if there is one, and lets each target `match`
the passes: it returns the model's output, its prediction for every term
and the targets as matched (array targets projected where the model's side
is, teacher targets filled in). How a target meets a pass is the target
kind's own business (`targets`); the estimators only choose the pass.

* `FullEstimator`: whole Jacobians and Hessians (`mode="full"`).
* `ProjectedEstimator`: random projections on the unit sphere, fresh per
  example and step (`mode="stochastic"`, Stochastic Sobolev Training).
"""

from typing import Callable
from typing import Dict
from typing import Optional
from typing import Tuple

import tensorflow as tf

from sobolev_tf import config as config_lib
from sobolev_tf import derivatives
from sobolev_tf import projections
from sobolev_tf import targets as targets_lib

BatchFn = Callable[[tf.Tensor], tf.Tensor]
Targets = Dict[str, targets_lib.Target]
Predictions = Dict[str, tf.Tensor]


class FullPass(targets_lib.Pass):
  """Full derivatives: targets are compared whole."""

  def reduce(self, values, order):
    """Array targets are already whole."""
    del order
    return values

  def target_type(self, order):
    """`FullTarget`."""
    del order
    return targets_lib.FullTarget


class ProjectedPass(targets_lib.Pass):
  """Derivatives projected on random directions `[B, P, in...]`.

  Args:
    values: `[y, first, second]`, each projection stacked `[B, P, in...]`.
    directions: `(output_directions, input_directions)`: `P` tensors
      `[B, out...]` and `None` or `P` tensors `[B, in...]`.
  """

  def __init__(self, values, directions=None):
    super().__init__(values)
    self.directions = directions

  def reduce(self, values, order):
    """A full array target projected on the pass's directions."""
    if order == 0:
      return values
    output_directions, input_directions = self.directions
    values = tf.cast(values, output_directions[0].dtype)
    if order == 1:
      parts = [
        projections.project_jacobian(values, v) for v in output_directions
      ]
    else:
      parts = [
        projections.project_hessian(values, v1, tf.cast(v2, values.dtype))
        for v1, v2 in zip(output_directions, input_directions, strict=True)
      ]
    return tf.stack(parts, axis=1)  # [B, P, in...]

  def target_type(self, order):
    """`ProjectedTarget`, or `FullTarget` for the value."""
    return targets_lib.FullTarget if order == 0 else targets_lib.ProjectedTarget


class Estimator:
  """Base of the estimators: the passes and the matching.

  Args:
    config: the objective's configuration.
  """

  def __init__(self, config: config_lib.SobolevConfig):
    self.config = config

  def __call__(
    self,
    fn: BatchFn,
    x: tf.Tensor,
    targets: Targets,
    teacher: Optional[BatchFn],
    seed: Optional[tf.Tensor],
  ) -> Tuple[tf.Tensor, Predictions, Targets]:
    """Returns `(fn(x), predictions, targets)`, each keyed by term.

    Args:
      fn: the model with its output transform, `[B, in...] -> [B, out...]`.
      x: the input batch.
      targets: the active targets (teacher targets without values).
      teacher: the teacher with its output transform, or `None`.
      seed: stateless seed `[2]` of the random directions.

    Returns:
      The model's output, its prediction for every term and the targets
      as matched, of the predictions' shapes.

    Raises:
      ValueError: for targets that do not fit the model.
    """
    self.check_targets(targets)
    order = max((t.shared_order for t in targets.values()), default=0)
    model_pass = self.compute_pass(fn, x, order, seed)
    for target in targets.values():
      target.check_shape(model_pass.y.shape[1:], x.shape[1:])
    teacher_pass = None
    if teacher is not None:
      teacher_pass = self.compute_pass(teacher, x, order, seed, model_pass)
    matched = {
      key: target.match(model_pass, teacher_pass, fn, x)
      for key, target in targets.items()
    }
    return (
      model_pass.y,
      {key: prediction for key, (_, prediction) in matched.items()},
      {key: target for key, (target, _) in matched.items()},
    )

  def check_targets(self, targets: Targets) -> None:
    """Raises if this estimator cannot use the targets."""
    del targets

  def compute_pass(
    self,
    fn: BatchFn,
    x: tf.Tensor,
    order: int,
    seed: Optional[tf.Tensor],
    like: Optional[targets_lib.Pass] = None,
  ) -> targets_lib.Pass:
    """`fn`'s pass up to `order`; a teacher's is computed `like` the model's."""
    raise NotImplementedError


def check_teacher(y: tf.Tensor, teacher_y: tf.Tensor) -> None:
  """Raises unless the teacher's output has the model's shape."""
  if not y.shape[1:].is_compatible_with(teacher_y.shape[1:]):
    raise ValueError(
      "The teacher's output must have the model's shape [B, "
      f"{', '.join(map(str, y.shape[1:].as_list()))}] (after the output "
      "transform). Received: teacher output of shape "
      f"[B, {', '.join(map(str, teacher_y.shape[1:].as_list()))}]."
    )


class FullEstimator(Estimator):
  """Whole Jacobians and Hessians, in `config.jacobian_mode`."""

  def compute_pass(self, fn, x, order, seed, like=None):
    """See `Estimator.compute_pass`."""
    del seed
    mode = derivatives.training_mode(self.config.jacobian_mode)
    values = derivatives.value_and_derivatives(fn, x, order, mode)
    if like is not None:
      check_teacher(like.y, values[0])
    return FullPass(values)


class ProjectedEstimator(Estimator):
  """Random projections: `D_x <m, v1>` and `D_x <D_x <m, v1>, v2>`.

  Output directions `v1` are drawn like the output and input directions
  `v2` like the input, `config.num_projections` per example, from the
  step's seed; a teacher and array targets are projected on the same ones.
  """

  def check_targets(self, targets):
    """No masks: a projection mixes every entry."""
    for key, target in targets.items():
      if target.mask is not None:
        raise ValueError(
          f"Received a mask for {key!r}; masked entries cannot be "
          "projected (a projection mixes every entry). Use mode='full'."
        )

  def compute_pass(self, fn, x, order, seed, like=None):
    """See `Estimator.compute_pass`."""
    if order == 0:
      values = derivatives.value_and_derivatives(fn, x, 0)
      if like is not None:
        check_teacher(like.y, values[0])
      return ProjectedPass(values)
    if seed is None:
      raise ValueError(
        "`mode='stochastic'` needs a `seed` (int tensor of shape [2]), "
        "new at every step. Received: seed=None"
      )
    seed = _check_seed(seed)

    def sample(y):
      if like is not None:
        check_teacher(like.y, y)
        return like.directions
      return self._directions(y, x, order, seed)

    y, first, second, used = projections.projected_derivatives_with_sampler(
      fn, x, sample
    )
    values = [y] + [tf.stack(p, axis=1) for p in (first, second)[:order]]
    return ProjectedPass(values, used)

  def _directions(self, y, x, order, seed):
    """`config.num_projections` output (and input) directions per example."""
    count = self.config.num_projections
    output_directions = projections.sample_directions(
      count, y, tf.random.experimental.stateless_fold_in(seed, 1)
    )
    input_directions = None
    if order == 2:
      input_directions = tf.unstack(
        projections.sample_directions(
          count, x, tf.random.experimental.stateless_fold_in(seed, 2)
        )
      )
    return tf.unstack(output_directions), input_directions


def _check_seed(seed) -> tf.Tensor:
  """The seed as int64 `[2]`, or a clear error."""
  tensor = tf.convert_to_tensor(seed)
  if not tensor.dtype.is_integer or not tensor.shape.is_compatible_with([2]):
    raise ValueError(
      "Received an invalid value for `seed`, expected a stateless seed: two "
      f"integers, shape [2]. Received: seed with dtype={tensor.dtype.name} "
      f"and shape={tensor.shape}"
    )
  return tf.cast(tensor, tf.int64)


ESTIMATORS = {"full": FullEstimator, "stochastic": ProjectedEstimator}
