"""Image classification inputs for the synthetic-gradients experiment.

Czarnecki et al. (2017), "Sobolev Training for Neural Networks", Sec. 4.3,
train a convnet on CIFAR-10 and ResNet-50 on ImageNet with synthetic
gradients. `load` gives their input pipelines (`tfds_images.cifar10`,
`tfds_images.imagenet2012`) and small scikit-learn digits, which stand in
for both in quick runs, as `tf.data` datasets of `(image, label)` batches:
images float32 `[B, H, W, C]`, normalised per channel; labels int64 `[B]`.

* `digits`: scikit-learn's `load_digits`, 1,797 8x8 grayscale images of 10
  classes, shipped with scikit-learn (no download). A stratified split with a
  fixed seed (0, whatever the run's `seed`) keeps `test_fraction` of them as
  the test set, so all runs share it. Pixels (0..16) are scaled to [0, 1],
  then standardised with the train split's mean and standard deviation.
  No augmentation. Training batches come from
  `input_pipeline.shuffled_batches`, so batch `k` depends only on `seed` and
  `k`; evaluation makes one pass in order and keeps the partial batch.

`load` starts any of them at a global step (`start_step`) and under
`tf.distribute` (`input_context`): `batch_size` is then the global batch,
each input pipeline gets its replicas' slices of it, and the batches from
`start_step` on are those an uninterrupted run sees after it (digits
without reading the batches before it; the tfds datasets by skipping them).

Tests run the tfds pipelines offline on the random examples of
`tfds.testing.mock_data`.
"""

import functools
from typing import Dict
from typing import Optional
from typing import Tuple

import numpy as np
import tensorflow as tf

from sobolev_tf import checks
from sobolev_tf.tasks import input_pipeline
from sobolev_tf.tasks import tfds_images

DATASETS = ("digits", "cifar10", "imagenet2012")
NUM_CLASSES = {"digits": 10, "cifar10": 10, "imagenet2012": 1000}
IMAGE_SHAPES = {
  "digits": (8, 8, 1),
  "cifar10": tfds_images.CIFAR10_SHAPE,
  "imagenet2012": (224, 224, 3),
}
SPLITS = {"digits": ("train", "validation", "test"), **tfds_images.SPLITS}

DIGITS_NUM_EXAMPLES = 1797
# Split sizes for the default `test_fraction=0.25`; see `digits_split_sizes`.
DIGITS_NUM_TRAIN = 1347
DIGITS_NUM_TEST = 450
# Seed of the digits train/test split, kept apart from the runs' seeds.
DIGITS_SPLIT_SEED = 0


def _check_test_fraction(test_fraction: float) -> None:
  if not 0 < test_fraction < 1:
    raise ValueError(
      "Received an invalid value for `test_fraction`, expected a number in "
      f"(0, 1). Received: test_fraction={test_fraction!r}"
    )


@functools.lru_cache(maxsize=4)
def _digits_splits(
  test_fraction: float, validation_fraction: float = 0.0
) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
  """The standardised digits splits, `{split: (images, labels)}`.

  With a `validation_fraction`, that share of the training examples
  (stratified, a fixed seed) is the `validation` split instead.
  """
  # scikit-learn is needed by this loader only.
  from sklearn import datasets
  from sklearn import model_selection

  digits = datasets.load_digits()
  images = (digits.images / 16.0).astype(np.float32)[..., None]  # [N, 8, 8, 1]
  labels = digits.target.astype(np.int64)
  train_index, test_index = model_selection.train_test_split(
    np.arange(len(labels)),
    test_size=test_fraction,
    stratify=labels,
    random_state=DIGITS_SPLIT_SEED,
  )
  validation_index = np.zeros([0], np.int64)
  if validation_fraction:
    train_index, validation_index = model_selection.train_test_split(
      train_index,
      test_size=validation_fraction,
      stratify=labels[train_index],
      random_state=DIGITS_SPLIT_SEED,
    )
  mean = images[train_index].mean()
  std = images[train_index].std()
  images = (images - mean) / std
  splits = {
    "train": (images[train_index], labels[train_index]),
    "validation": (images[validation_index], labels[validation_index]),
    "test": (images[test_index], labels[test_index]),
  }
  for arrays in splits.values():
    for array in arrays:
      array.setflags(write=False)
  return splits


def digits_split_sizes(test_fraction: float = 0.25) -> Dict[str, int]:
  """Numbers of digits examples, `{"train": n, "test": m}`.

  Args:
    test_fraction: fraction of the 1,797 examples in the test split.

  Returns:
    The split sizes; they add up to `DIGITS_NUM_EXAMPLES`.

  Raises:
    ValueError: if `test_fraction` is not in (0, 1).
  """
  _check_test_fraction(test_fraction)
  num_test = int(np.ceil(test_fraction * DIGITS_NUM_EXAMPLES))
  return {"train": DIGITS_NUM_EXAMPLES - num_test, "test": num_test}


def digits(
  split: str,
  batch_size: int,
  training: bool,
  seed: int = 0,
  test_fraction: float = 0.25,
  start_step: int = 0,
  input_context: Optional[tf.distribute.InputContext] = None,
  validation_fraction: float = 0.0,
) -> tf.data.Dataset:
  """scikit-learn digits `(image, label)` batches.

  Args:
    split: `"train"`, `"validation"` (empty without a
      `validation_fraction`) or `"test"`.
    batch_size: examples per batch.
    training: a new permutation each pass, repeated forever, without the
      partial batch; otherwise one pass in order.
    seed: seed of the permutations; the split itself does not depend on it.
    test_fraction: fraction of the examples in the test split.
    start_step: first global batch (training only).
    input_context: from `strategy.distribute_datasets_from_function`.
    validation_fraction: share of the training examples held out as the
      `validation` split.

  Returns:
    Batches of images float32 `[B, 8, 8, 1]`, standardised with the train
    split's pixel mean and standard deviation, and labels int64 `[B]`.

  Raises:
    ValueError: if `split`, `batch_size` or `test_fraction` is invalid.
  """
  checks.dataset_split(split, SPLITS["digits"])
  checks.positive_ints(batch_size=batch_size)
  _check_test_fraction(test_fraction)
  images, labels = _digits_splits(
    float(test_fraction), float(validation_fraction)
  )[split]
  if training:
    return input_pipeline.shuffled_batches(
      (images, labels), batch_size, seed, start_step, input_context
    )
  dataset = tf.data.Dataset.from_tensor_slices((images, labels))
  return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


_LOADERS = {
  "digits": digits,
  "cifar10": tfds_images.cifar10,
  "imagenet2012": tfds_images.imagenet2012,
}


def validation_splits(name: str, fraction: float) -> Tuple[str, str]:
  """The training and validation splits of `name` holding out `fraction`.

  Digits has its own `validation` split (pass `validation_fraction` to its
  loader); the tfds data sets hold out the end of their training split as
  a tfds slice.

  Args:
    name: one of `DATASETS`.
    fraction: share of the training examples held out, in (0, 1).

  Returns:
    `(train_split, validation_split)`.
  """
  checks.fraction("validation_fraction", fraction)
  if name == "digits":
    return "train", "validation"
  percent = round(100 * (1 - fraction))
  return f"train[:{percent}%]", f"train[{percent}%:]"


def load(
  name: str,
  split: str,
  batch_size: int,
  training: bool,
  seed: int = 0,
  start_step: int = 0,
  input_context: Optional[tf.distribute.InputContext] = None,
  **kwargs,
) -> tf.data.Dataset:
  """The `(image, label)` batches of a dataset in `DATASETS`.

  Args:
    name: one of `DATASETS`.
    split: a split of that dataset, see `SPLITS`.
    batch_size: examples per batch (the global batch with an
      `input_context`).
    training: augment, shuffle, repeat and drop the partial batch.
    seed: seed of the shuffle and the augmentation.
    start_step: first global batch (training only).
    input_context: from `strategy.distribute_datasets_from_function`: this
      input pipeline keeps its replicas' slices of every global batch.
    **kwargs: further arguments of the dataset's loader, e.g. `data_dir`,
      `manual_dir`, `image_size` or `test_fraction`.

  Returns:
    The loader's dataset.

  Raises:
    ValueError: if `name` is not in `DATASETS`, or an argument is invalid.
  """
  if name not in _LOADERS:
    raise ValueError(
      f"Received an invalid value for `name`, expected one of "
      f"{list(DATASETS)}. Received: name={name!r}"
    )
  if name == "digits":
    return digits(
      split,
      batch_size,
      training,
      seed,
      start_step=start_step,
      input_context=input_context,
      **kwargs,
    )
  replicas, per_replica = 1, batch_size
  if input_context is not None:
    replicas = input_context.num_replicas_in_sync
    per_replica = input_context.get_per_replica_batch_size(batch_size)
  dataset = _LOADERS[name](split, per_replica, training, seed=seed, **kwargs)
  if training:
    dataset = dataset.skip(start_step * replicas)
  if input_context is not None:
    dataset = dataset.shard(
      input_context.num_input_pipelines, input_context.input_pipeline_id
    )
  return dataset
