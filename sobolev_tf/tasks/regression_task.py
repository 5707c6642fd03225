"""One run of the regression sweep, as a task of `launch/loop.py`."""

import collections
import functools
import os
import threading
from typing import Any
from typing import Dict
from typing import Hashable
from typing import List
from typing import Optional
from typing import Tuple

import numpy as np
import tensorflow as tf

from sobolev_tf import finite_updates
from sobolev_tf import model as model_lib
from sobolev_tf.tasks import base
from sobolev_tf.tasks import regression
from sobolev_tf.tasks import regression_model
from sobolev_tf.tasks import surfaces

# Idle models built by the runs of this process, by strategy and
# `regression_model.model_key`: a run takes one of its key and resets it
# instead of building its own, so that the loop's compiled step serves it
# (`step_key`), and gives it back when it finishes. Runs trained at once
# (`loop.Settings.concurrent_runs`) each hold their own. The oldest keys are
# dropped.
_IDLE: "collections.OrderedDict[Hashable, List[Any]]" = (
  collections.OrderedDict()
)
_IDLE_LOCK = threading.Lock()
_MOST_MODELS = 16


def _take(key: Hashable) -> Optional[Tuple[Any, ...]]:
  """An idle model of `key`, now the caller's, or None."""
  with _IDLE_LOCK:
    idle = _IDLE.get(key)
    if not idle:
      return None
    entry = idle.pop()
    if not idle:
      del _IDLE[key]
    return entry


def _give_back(key: Hashable, entry: Tuple[Any, ...]) -> None:
  """Makes a model idle again; drops the oldest beyond `_MOST_MODELS`."""
  with _IDLE_LOCK:
    _IDLE.setdefault(key, []).append(entry)
    _IDLE.move_to_end(key)
    while sum(map(len, _IDLE.values())) > _MOST_MODELS:
      oldest = next(iter(_IDLE))
      _IDLE[oldest].pop(0)
      if not _IDLE[oldest]:
        del _IDLE[oldest]


def _selection_scales(
  config: regression.RunConfig, truth: Dict[str, np.ndarray]
) -> Dict[str, float]:
  """What `val_objective` divides each validation error by.

  A method is selected by the validation error of what it trains on, as
  Keras's `val_loss` is the model's own loss: every method's value error
  over the training values' variance, plus, for the methods trained on
  whole gradients, the gradient error over the training gradients' mean
  square (each relative, so the sum is unit-free). Selecting Sobolev runs
  by the value error alone kept late, drifted checkpoints of the budget
  study's 50,000-step runs (docs/RESULTS.md, the budget study).
  `sobolev_missing` and `directional` runs have no whole gradients to
  validate on; `sobolev2` is validated on gradients, not Hessians.
  """
  tiny = np.finfo(np.float32).tiny
  scales = {"val_mse": max(float(np.var(truth["value"])), tiny)}
  if config.method in regression.WHOLE_GRADIENT_METHODS:
    scales["val_gradient_mse"] = max(
      float(np.mean(np.square(truth["d1"]))), tiny
    )
  return scales


class RegressionTask(base.DatasetTask):
  """One run of the sweep as a task of `launch/loop.py`.

  The sample and its targets are made when the task is (so that a bad
  function name, dimension or method fails before any run trains); the
  model and optimiser in `build`. `finish` saves a 2-D run's network to
  `<run_dir>/model.keras`, from which Figure 3 is drawn.

  Args:
    config: the run.
    share_model: whether to take over an idle model of an earlier run of
      this process with the same shapes, objective and optimiser (reset to
      this run's initial state), so that the loop compiles the step once
      for all of them: what a sweep wants. The earlier task's model then
      belongs to this one; `finish` makes it idle again.
  """

  def __init__(self, config: regression.RunConfig, share_model: bool = False):
    super().__init__(config.run_id, config.steps)
    self.config = config
    self.share_model = share_model
    self.function = regression.get_function(config)
    train, (self.x_test, self.y_test) = regression.make_data(
      config, self.function
    )
    (self.x_train, self.y_train), validation = regression.split_validation(
      config, *train
    )
    # Exact values and gradients at the training and validation points.
    self.train_truth = regression.targets(self.function, self.x_train, 1)
    self.validation = None
    if validation is not None:
      self.validation = (
        validation[0],
        regression.targets(self.function, validation[0], 1),
      )
    self._selection_scales = _selection_scales(config, self.train_truth)
    self.model: Optional[model_lib.SobolevModel] = None
    self.scorer: Optional[regression_model.Scorer] = None
    self._key: Optional[Hashable] = None
    self._strategy: Optional[tf.distribute.Strategy] = None

  def check_strategy(self, strategy: tf.distribute.Strategy) -> None:
    """The global batch (capped at the sample) must divide among replicas."""
    base.check_global_batch(
      min(self.config.batch_size, len(self.x_train)),
      strategy,
      f"the batch of {self.run_id}, capped at its training size",
    )

  def hparams(self) -> Dict[str, base.HParamValue]:
    """Every setting of the run but the hidden sizes."""
    return base.config_hparams(self.config, "hidden_sizes")

  def record(self, metrics: Dict[str, float]) -> Dict[str, Any]:
    """The base record with the hidden sizes."""
    return {
      **super().record(metrics),
      "hidden_sizes": list(self.config.hidden_sizes),
    }

  def build(self) -> None:
    """The `SobolevModel` and its optimiser, built, or a shared one reset.

    A model of an earlier run of this process with the same
    `regression_model.model_key` under the same strategy is given this
    run's initial state (`regression_model.reset`): the same numbers as a
    model built anew.
    """
    strategy = tf.distribute.get_strategy()
    key = (id(strategy), self.share_key)
    shared = _take(key) if self.share_model else None
    self._strategy = strategy
    if shared is not None and shared[0] is strategy:
      self._key = key
      _, self.model, self.scorer = shared
      regression_model.reset(
        self.model, self.config, self.function, self.y_train
      )
      return
    self.model = regression_model.build_model(
      self.config, self.function, self.y_train
    )
    self.model.compile(optimizer=regression_model.build_optimizer(self.config))
    self.model.optimizer.build(self.model.trainable_variables)
    self.scorer = regression_model.Scorer(self.model.model)
    if self.share_model:
      self._key = key

  @functools.cached_property
  def share_key(self) -> Optional[Hashable]:
    """`regression_model.model_key` of a task that shares its model."""
    if not self.share_model:
      return None
    return regression_model.model_key(self.config, self.y_train)

  @property
  def step_key(self) -> Optional[Hashable]:
    """The shared model's: runs of one model share its compiled step."""
    return None if self._key is None else (self._key, id(self.model))

  def checkpoint_items(self) -> Dict[str, Any]:
    """The model and the optimiser."""
    return {"model": self.model, "optimizer": self.model.optimizer}

  def dataset(
    self, context: tf.distribute.InputContext, start_step: int
  ) -> tf.data.Dataset:
    """`regression.train_dataset` of the sample."""
    return regression.train_dataset(
      self.x_train,
      self.y_train,
      self.config.batch_size,
      self.config.seed,
      start_step,
      context,
    )

  def train_step(self, batch: Any) -> Dict[str, tf.Tensor]:
    """`SobolevModel.train_step`; logs the running means since the reset."""
    return self.model.train_step(batch)

  def reset_metrics(self) -> None:
    """Resets the model's running means."""
    self.model.reset_metrics()

  @property
  def guard(self) -> finite_updates.StepGuard:
    """The model's: a skipped step is an error."""
    return self.model.guard

  def evaluate(self) -> Dict[str, float]:
    """MSE of values and gradients on the test set and the training points.

    The training points' errors are against the function's exact values
    and gradients, whatever the method trained on: with the test errors
    they tell overfitting (training error falling while the test error
    rises) from an unstable optimisation (both rising).
    """
    metrics = {
      **self.scorer(self.x_test, self.y_test, "test"),
      **self.scorer(self.x_train, self.train_truth, "train"),
    }
    if self.validation is not None:
      metrics.update(self.scorer(*self.validation, "val"))
      metrics["val_objective"] = sum(
        metrics[name] / scale for name, scale in self._selection_scales.items()
      )
    return metrics

  @property
  def selection(self) -> Optional[Tuple[str, str]]:
    """With a validation split, `val_objective` (`_selection_scales`)."""
    return None if self.validation is None else ("val_objective", "min")

  def summary_images(self) -> Dict[str, tf.Tensor]:
    """The fitted surface, for 2-D functions."""
    if self.config.dim != 2:
      return {}
    return {
      "fitted_surface": surfaces.surface_image(
        self.scorer.values, self.function
      )
    }

  def finish(self, run_dir: str, chief: bool) -> Dict[str, Any]:
    """Saves a 2-D run's network (for Figure 3); adds nothing to the record.

    A shared model is then idle, for a later run of its key.
    """
    if chief and self.config.dim == 2:
      self.model.model.save(os.path.join(run_dir, "model.keras"))
    if self._key is not None:
      _give_back(self._key, (self._strategy, self.model, self.scorer))
    return {}
