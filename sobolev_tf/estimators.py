"""The model's side of each Sobolev term: full or projected derivatives.

An estimator takes the (transformed) model, the input batch and the active
terms, and returns the model's output and its prediction for every term. In
teacher mode it also fills each term's target with the teacher's quantity,
computed the same way; array targets given in full are projected when the
model's side is. Terms with directional targets (`d1_directions`, ...) are
computed along the data's own directions by both estimators.

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
from sobolev_tf import targets as targets_lib

BatchFn = Callable[[tf.Tensor], tf.Tensor]
Terms = Dict[str, targets_lib.Term]
Predictions = Dict[str, tf.Tensor]


class Estimator:
  """Base of the estimators: directional terms and shape checks.

  Args:
    config: the objective's configuration.
  """

  def __init__(self, config: config_lib.SobolevConfig):
    self.config = config

  def __call__(
    self,
    fn: BatchFn,
    x: tf.Tensor,
    terms: Terms,
    teacher: Optional[BatchFn],
    seed: Optional[tf.Tensor],
  ) -> Tuple[tf.Tensor, Predictions]:
    """Returns `(fn(x), predictions)` and fills teacher targets in `terms`.

    Args:
      fn: the model with its output transform, `[B, in...] -> [B, out...]`.
      x: the input batch.
      terms: the active terms; teacher targets are written into them.
      teacher: the teacher with its output transform, or `None`.
      seed: stateless seed `[2]` of the random directions.

    Returns:
      The model's output and the prediction of every term, keyed by term.

    Raises:
      ValueError: for targets that do not fit the model.
    """
    raise NotImplementedError

  def _full_orders(self, terms: Terms) -> int:
    return max((t.order for t in terms.values() if t.kind == "full"), default=0)

  def _directional(self, fn: BatchFn, x: tf.Tensor, terms: Terms) -> dict:
    predictions = {}
    for key, term in terms.items():
      if term.kind != "directional":
        continue
      if term.order == 1:
        _, predictions[key] = derivatives.value_and_jacobian_vector_products(
          fn, x, term.directions
        )
      else:
        _, _, predictions[key] = derivatives.hessian_vector_products(
          fn, x, term.directions
        )
    return predictions

  @staticmethod
  def _check_teacher(y: tf.Tensor, teacher_y: tf.Tensor) -> None:
    if not y.shape[1:].is_compatible_with(teacher_y.shape[1:]):
      raise ValueError(
        "The teacher's output must have the model's shape [B, "
        f"{', '.join(map(str, y.shape[1:].as_list()))}] (after the output "
        "transform). Received: teacher output of shape "
        f"[B, {', '.join(map(str, teacher_y.shape[1:].as_list()))}]."
      )


class FullEstimator(Estimator):
  """Whole Jacobians and Hessians, in `config.jacobian_mode`."""

  def __call__(self, fn, x, terms, teacher, seed):
    """See `Estimator.__call__`."""
    del seed
    order = self._full_orders(terms)
    mode = derivatives.training_mode(self.config.jacobian_mode)
    values = derivatives.value_and_derivatives(fn, x, order, mode)
    if teacher is not None:
      teacher_values = derivatives.value_and_derivatives(
        teacher, x, order, mode
      )
      self._check_teacher(values[0], teacher_values[0])
      for term in terms.values():
        term.target = teacher_values[term.order]
    for term in terms.values():
      targets_lib.check_shape(term, values[0].shape[1:], x.shape[1:])
    predictions = {
      key: values[term.order]
      for key, term in terms.items()
      if term.kind == "full"
    }
    predictions.update(self._directional(fn, x, terms))
    return values[0], predictions


class ProjectedEstimator(Estimator):
  """Random projections: `D_x <m, v1>` and `D_x <D_x <m, v1>, v2>`.

  Output directions `v1` are drawn like the output and input directions
  `v2` like the input, `config.num_projections` per example, from the
  step's seed; a teacher and array targets are projected on the same ones.
  """

  def __call__(self, fn, x, terms, teacher, seed):
    """See `Estimator.__call__`."""
    for key, term in terms.items():
      if term.mask is not None:
        raise ValueError(
          f"Received a mask for {key!r}; masked entries cannot be "
          "projected (a projection mixes every entry). Use mode='full'."
        )
    order = self._full_orders(terms)
    if order == 0:
      y = derivatives.value_and_derivatives(fn, x, 0)[0]
      predictions = {"value": y} if "value" in terms else {}
      values = [y]
    else:
      if seed is None:
        raise ValueError(
          "`mode='stochastic'` needs a `seed` (int tensor of shape [2]), "
          "new at every step. Received: seed=None"
        )
      values, directions = self._projected(fn, x, order, seed)
      y = values[0]
      if teacher is not None:
        teacher_values, _ = self._projected(
          teacher, x, order, seed, directions=directions, like=y
        )
        for term in terms.values():
          term.target = teacher_values[term.order]
      else:
        self._project_targets(terms, y, x, directions)
      predictions = {
        key: values[term.order]
        for key, term in terms.items()
        if term.kind == "full"
      }
    if teacher is not None and order == 0:
      teacher_y = derivatives.value_and_derivatives(teacher, x, 0)[0]
      self._check_teacher(y, teacher_y)
      terms["value"].target = teacher_y
    if "value" in terms:
      targets_lib.check_shape(terms["value"], y.shape[1:], x.shape[1:])
    for term in terms.values():
      if term.kind == "directional":
        targets_lib.check_shape(term, y.shape[1:], x.shape[1:])
    predictions.update(self._directional(fn, x, terms))
    return y, predictions

  def _projected(self, fn, x, order, seed, directions=None, like=None):
    """Value and projected derivatives, on `directions` or fresh ones."""
    seed = _check_seed(seed)
    count = self.config.num_projections

    def sample(y):
      if like is not None:
        self._check_teacher(like, y)
      if directions is not None:
        return directions
      output_directions = derivatives.sample_directions(
        count, y, tf.random.experimental.stateless_fold_in(seed, 1)
      )
      input_directions = None
      if order == 2:
        input_directions = tf.unstack(
          derivatives.sample_directions(
            count, x, tf.random.experimental.stateless_fold_in(seed, 2)
          )
        )
      return tf.unstack(output_directions), input_directions

    y, first, second, used = derivatives.projected_derivatives_with_sampler(
      fn, x, sample
    )
    values = [y]
    for projections in (first, second)[:order]:
      values.append(targets_lib.stack_directions(projections))  # [B, P, in...]
    return values, used

  @staticmethod
  def _project_targets(terms, y, x, directions) -> None:
    output_directions, input_directions = directions
    for term in terms.values():
      if term.order == 0 or term.kind != "full":
        continue
      targets_lib.check_shape(term, y.shape[1:], x.shape[1:])
      target = tf.cast(term.target, output_directions[0].dtype)
      if term.order == 1:
        parts = [
          derivatives.project_jacobian(target, v1) for v1 in output_directions
        ]
      else:
        parts = [
          derivatives.project_hessian(target, v1, tf.cast(v2, target.dtype))
          for v1, v2 in zip(output_directions, input_directions, strict=True)
        ]
      term.target = targets_lib.stack_directions(parts)  # [B, P, in...]


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
