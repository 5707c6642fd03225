"""One run of the regression sweep, as a task of `launch/loop.py`."""

import os
from typing import Any
from typing import Dict
from typing import Optional

import tensorflow as tf

from sobolev_tf import finite_updates
from sobolev_tf import model as model_lib
from sobolev_tf.tasks import base
from sobolev_tf.tasks import regression
from sobolev_tf.tasks import surfaces


class RegressionTask(base.DatasetTask):
  """One run of the sweep as a task of `launch/loop.py`.

  The sample and its targets are made when the task is (so that a bad
  function name, dimension or method fails before any run trains); the
  model and optimiser in `build`. `finish` saves a 2-D run's network to
  `<run_dir>/model.keras`, from which Figure 3 is drawn.

  Args:
    config: the run.
  """

  def __init__(self, config: regression.RunConfig):
    super().__init__(config.run_id, config.steps)
    self.config = config
    self.function = regression.get_function(config)
    (self.x_train, self.y_train), (self.x_test, self.y_test) = (
      regression.make_data(config, self.function)
    )
    self.model: Optional[model_lib.SobolevModel] = None

  def check_strategy(self, strategy: tf.distribute.Strategy) -> None:
    """The global batch (capped at the sample) must divide among replicas."""
    base.check_global_batch(
      min(self.config.batch_size, self.config.train_size),
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
    """The `SobolevModel` and its optimiser, built."""
    self.model = regression.build_model(
      self.config, self.function, self.y_train
    )
    self.model.compile(optimizer=regression.build_optimizer(self.config))
    self.model.optimizer.build(self.model.trainable_variables)

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
    """Test MSE of values and gradients (`regression.evaluate`)."""
    return regression.evaluate(self.model.model, self.x_test, self.y_test)

  def summary_images(self) -> Dict[str, tf.Tensor]:
    """The fitted surface, for 2-D functions."""
    if self.config.dim != 2:
      return {}
    return {
      "fitted_surface": surfaces.surface_image(self.model.model, self.function)
    }

  def finish(self, run_dir: str, chief: bool) -> Dict[str, Any]:
    """Saves a 2-D run's network (for Figure 3); adds nothing to the record."""
    if chief and self.config.dim == 2:
      self.model.model.save(os.path.join(run_dir, "model.keras"))
    return {}
