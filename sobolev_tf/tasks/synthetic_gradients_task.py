"""One run of the synthetic-gradient sweep (Table 1), for `launch/loop.py`."""

from typing import Any
from typing import Dict
from typing import Optional
from typing import Tuple

import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import checks
from sobolev_tf import finite_updates
from sobolev_tf.tasks import base
from sobolev_tf.tasks import decoupled
from sobolev_tf.tasks import image_data
from sobolev_tf.tasks import synthetic_gradients as sg


class SyntheticGradientsTask(base.DatasetTask):
  """One run of the Table 1 sweep, as a task of `launch/loop.py`.

  Args:
    config: the classifier and its SG modules.
    dataset: one of `image_data.DATASETS`.
    seed: seed of the initial weights and the batches.
    steps: training steps.
    batch_size: global batch size.
    loader_kwargs: further arguments of `image_data.load`, e.g. `data_dir`.
    validation_fraction: share of the training images held out; their
      loss selects the run's best weights (0: none).
  """

  def __init__(
    self,
    config: sg.Config,
    dataset: str,
    seed: int,
    steps: int,
    batch_size: int,
    loader_kwargs: Optional[Dict[str, Any]] = None,
    validation_fraction: float = 0.0,
  ):
    if dataset not in image_data.DATASETS:
      raise ValueError(
        f"Received an invalid value for `dataset`, expected one of "
        f"{list(image_data.DATASETS)}. Received: dataset={dataset!r}"
      )
    checks.non_negative_ints(seed=seed)
    checks.positive_ints(batch_size=batch_size)
    setting = ""
    if config.balance != "target_scale" or config.gradient_weight != 1:
      setting = f"-{config.balance}-w{config.gradient_weight:g}"
    if config.balance_floor != sg.Config.balance_floor:
      setting += f"-f{config.balance_floor:g}"
    super().__init__(
      f"{dataset}-m{config.num_modules}-{config.variant}{setting}-s{seed}",
      steps,
    )
    self.config = config
    self.dataset_name = dataset
    self.seed = seed
    self.batch_size = batch_size
    self.loader_kwargs = dict(loader_kwargs or {})
    self.splits = ("train", None)
    if validation_fraction:
      self.splits = image_data.validation_splits(dataset, validation_fraction)
      if dataset == "digits":
        self.loader_kwargs["validation_fraction"] = validation_fraction
    self.classifier: Optional[decoupled.DecoupledClassifier] = None
    self._programs = None

  def check_strategy(self, strategy: tf.distribute.Strategy) -> None:
    """The global batch must divide among the replicas."""
    base.check_global_batch(self.batch_size, strategy)

  def hparams(self) -> Dict[str, base.HParamValue]:
    """Data set, seed, steps, batch size and the config but its shapes."""
    return {
      "dataset": self.dataset_name,
      "seed": self.seed,
      "steps": self.num_steps,
      "batch_size": self.batch_size,
      **base.config_hparams(self.config, "num_classes", "channels", "strides"),
    }

  def build(self) -> None:
    """The classifier, its SG modules and their optimisers.

    Sonnet's ResNet-50 blocks take no initialisers, so the run's seed
    reaches every module's initial weights through TensorFlow's global
    seed, set here, before any of them is made.
    """
    keras.utils.set_random_seed(self.seed)
    self.classifier = decoupled.DecoupledClassifier(
      self.config, image_data.IMAGE_SHAPES[self.dataset_name]
    )

  def checkpoint_items(self) -> Dict[str, Any]:
    """The modules and both optimisers."""
    return {
      "classifier": self.classifier,
      "optimizer": self.classifier.optimizer,
      "sg_optimizer": self.classifier.sg_optimizer,
      "sg_balances": [o.balance for o in self.classifier.sg_objectives],
    }

  @property
  def guard(self) -> finite_updates.StepGuard:
    """The classifier's: a skipped step is an error."""
    return self.classifier.guard

  def dataset(
    self, context: tf.distribute.InputContext, start_step: int
  ) -> tf.data.Dataset:
    """The training split from `start_step` on (`image_data.load`)."""
    return image_data.load(
      self.dataset_name,
      self.splits[0],
      self.batch_size,
      training=True,
      seed=self.seed,
      start_step=start_step,
      input_context=context,
      **self.loader_kwargs,
    )

  def train_step(self, batch: Any) -> Dict[str, tf.Tensor]:
    """`decoupled.DecoupledClassifier.train_step`."""
    return self.classifier.train_step(batch)

  def evaluate(self) -> Dict[str, float]:
    """Test accuracy and the mean cosines of synthetic to true gradients.

    On the data set's test split; one cosine per split, `test_cosine_<k>`.
    With a validation split, its accuracy and loss too (`val_*`).
    """
    test_split = image_data.SPLITS[self.dataset_name][-1]
    result = self._scores(test_split, "test", cosines=True)
    if self.splits[1] is not None:
      result.update(self._scores(self.splits[1], "val"))
    return result

  @property
  def selection(self) -> Optional[Tuple[str, str]]:
    """With a validation split, its mean cross-entropy."""
    return None if self.splits[1] is None else ("val_loss", "min")

  def _scores(self, split: str, prefix: str, cosines: bool = False):
    if self._programs is None:
      self._programs = (
        tf.function(self.classifier),
        tf.function(self.classifier.gradient_cosines),
      )
    predict, align = self._programs
    correct, losses, count, per_split = 0, 0.0, 0, []
    for images, labels in image_data.load(
      self.dataset_name, split, 256, training=False, **self.loader_kwargs
    ):
      logits = predict(images)
      correct += int(
        tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == labels, tf.int32))
      )
      losses += float(
        tf.reduce_sum(
          tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        )
      )
      count += int(tf.shape(labels)[0])
      if cosines:
        per_split.append([float(c) for c in align(images, labels)])
    result = {f"{prefix}_accuracy": correct / count}
    if prefix != "test":
      result[f"{prefix}_loss"] = losses / count
    if per_split and per_split[0]:
      for index, value in enumerate(np.mean(per_split, axis=0)):
        result[f"{prefix}_cosine_{index}"] = float(value)
    return result
