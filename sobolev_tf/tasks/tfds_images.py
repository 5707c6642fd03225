"""CIFAR-10 and ImageNet input pipelines from tensorflow-datasets.

Czarnecki et al. (2017), Sec. 4.3, train a convnet on CIFAR-10 and
ResNet-50 on ImageNet with synthetic gradients; `image_data.load` serves
these pipelines with scikit-learn's digits under one interface.

* `cifar10`: tfds `cifar10` (downloaded by tfds on first use), standardised
  with the CIFAR-10 train set's per-channel mean and standard deviation. When
  training: zero-pad 4 pixels, random 32x32 crop, random horizontal flip.
* `imagenet2012`: tfds `imagenet2012`, which tfds cannot download: place
  `ILSVRC2012_img_train.tar` and `ILSVRC2012_img_val.tar` in `manual_dir`
  (default `<data_dir>/downloads/manual`) and the first call prepares the
  dataset. The ResNet preprocessing: when training, a random crop covering
  8% to 100% of the image with aspect ratio in [3/4, 4/3] (the whole image if
  ten tries find none), resized to `image_size` squared, and a random
  horizontal flip; when evaluating, the shorter side resized to
  `256 / 224 * image_size` and the central `image_size` square cut out.
  Training decodes the JPEG inside the crop window only. Pixels are scaled to
  [0, 1] and normalised with the usual ImageNet mean and standard deviation,
  given in those units.

Training datasets shuffle, repeat forever and drop the last partial batch;
evaluation datasets make one pass in file order and keep the partial batch.
The random crop and flip of element `i` of the repeated stream use the
stateless seed derived from `(seed, i)`; the shuffle order is fixed by
`seed` together with TensorFlow's global seed
(`keras.utils.set_random_seed`), if one is set. Splits accept tfds slicing,
e.g. `split="train[:45000]"` to hold out a validation set.
"""

import functools
from typing import Dict
from typing import Optional

import tensorflow as tf
import tensorflow_datasets as tfds

from sobolev_tf import checks

SPLITS = {
  "cifar10": ("train", "test"),
  "imagenet2012": ("train", "validation"),
}
CIFAR10_SHAPE = (32, 32, 3)
# Per-channel statistics of the 50,000 CIFAR-10 training images, in [0, 1]
# units (the pixel standard deviation, not the mean of per-image ones).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# The usual ImageNet statistics, in [0, 1] units.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_CIFAR10_PADDING = 4
_IMAGENET_SHUFFLE_BUFFER = 10_000
_IMAGENET_AREA_RANGE = (0.08, 1.0)
_IMAGENET_ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
_IMAGENET_CROP_ATTEMPTS = 10
_IMAGENET_EVAL_RESIZE_RATIO = 256 / 224


def _element_seeds(seed: int, index: tf.Tensor, num: int) -> tf.Tensor:
  """`num` stateless seeds `[num, 2]` for element `index` of the stream."""
  element_seed = tf.stack([tf.constant(seed, tf.int64), index])
  return tf.random.experimental.stateless_split(element_seed, num)


def _normalise(image: tf.Tensor, mean, std) -> tf.Tensor:
  """Per-channel standardisation of an image in [0, 1] units."""
  return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def _finish(
  dataset: tf.data.Dataset,
  preprocess,
  batch_size: int,
  training: bool,
  seed: int,
  shuffle_buffer: int,
) -> tf.data.Dataset:
  """Shuffles, repeats, preprocesses, batches and prefetches.

  Args:
    dataset: `(image, label)` examples.
    preprocess: `(image, label, seeds) -> (image, label)`, with `seeds` two
      stateless seeds `[2, 2]` for the element.
    batch_size: examples per batch.
    training: shuffle, repeat and drop the partial batch.
    seed: seed of the shuffle and the per-element seeds.
    shuffle_buffer: size of the shuffle buffer.

  Returns:
    The batched dataset.
  """
  if training:
    dataset = dataset.shuffle(
      shuffle_buffer, seed=seed, reshuffle_each_iteration=True
    ).repeat()
  dataset = dataset.enumerate().map(
    lambda index, example: preprocess(*example, _element_seeds(seed, index, 2)),
    num_parallel_calls=tf.data.AUTOTUNE,
  )
  return dataset.batch(batch_size, drop_remainder=training).prefetch(
    tf.data.AUTOTUNE
  )


def _tfds_examples(
  name: str,
  split: str,
  sizes: Dict[str, int],
  training: bool,
  data_dir: Optional[str],
  read_config: tfds.ReadConfig,
  **options,
) -> tf.data.Dataset:
  """The `(image, label)` examples of tfds dataset `name`, checked.

  Args:
    name: a key of `SPLITS`.
    split: a split of it, or a tfds slice.
    sizes: the caller's batch size and other sizes, checked positive (after
      the split).
    training: shuffle the files.
    data_dir: tfds data directory; tfds's default if `None`.
    read_config: tfds's reading options, with the shuffle seed.
    **options: further arguments of `tfds.load`.

  Returns:
    The examples, in file order unless `training`.
  """
  checks.dataset_split(split, SPLITS[name], slices=True)
  checks.positive_ints(**sizes)
  return tfds.load(
    name,
    split=split,
    data_dir=data_dir,
    as_supervised=True,
    shuffle_files=training,
    read_config=read_config,
    **options,
  )


def _cifar10_preprocess(image, label, seeds, training: bool):
  """Scales, pads 4, crops and flips (when training) and standardises."""
  image = tf.image.convert_image_dtype(image, tf.float32)  # [32, 32, 3]
  if training:
    padding = _CIFAR10_PADDING
    image = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    image = tf.image.stateless_random_crop(image, CIFAR10_SHAPE, seed=seeds[0])
    image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
  return _normalise(image, CIFAR10_MEAN, CIFAR10_STD), label


def cifar10(
  split: str,
  batch_size: int,
  training: bool,
  seed: int = 0,
  data_dir: Optional[str] = None,
) -> tf.data.Dataset:
  """CIFAR-10 `(image, label)` batches from tfds.

  Args:
    split: `"train"`, `"test"` or a tfds slice such as `"train[:45000]"`.
    batch_size: examples per batch.
    training: augment (pad 4, random crop, random flip), shuffle, repeat
      forever and drop the partial batch; otherwise one pass in order.
    seed: seed of the shuffle and the augmentation.
    data_dir: tfds data directory; tfds's default if `None`.

  Returns:
    Batches of images float32 `[B, 32, 32, 3]`, standardised per channel with
    `CIFAR10_MEAN` and `CIFAR10_STD`, and labels int64 `[B]`.

  Raises:
    ValueError: if `split` or `batch_size` is invalid.
  """
  dataset = _tfds_examples(
    "cifar10",
    split,
    {"batch_size": batch_size},
    training,
    data_dir,
    tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),
  )
  # 50,000 uint8 images take 150 MB: keep them and shuffle all of them.
  preprocess = functools.partial(_cifar10_preprocess, training=training)
  return _finish(
    dataset.cache(), preprocess, batch_size, training, seed, 50_000
  )


def _imagenet_train_image(
  image_bytes: tf.Tensor, seeds: tf.Tensor, image_size: int
) -> tf.Tensor:
  """Random-resized crop and flip of a JPEG, as uint8-range float32."""
  shape = tf.image.extract_jpeg_shape(image_bytes)  # [3]
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
    shape,
    bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
    seed=seeds[0],
    min_object_covered=0.0,
    aspect_ratio_range=_IMAGENET_ASPECT_RATIO_RANGE,
    area_range=_IMAGENET_AREA_RANGE,
    max_attempts=_IMAGENET_CROP_ATTEMPTS,
    use_image_if_no_bounding_boxes=True,
  )
  window = tf.stack([begin[0], begin[1], size[0], size[1]])
  image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
  image = tf.image.resize(image, [image_size, image_size], antialias=True)
  return tf.image.stateless_random_flip_left_right(image, seed=seeds[1])


def _imagenet_eval_image(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
  """Central crop of a JPEG, as uint8-range float32.

  The shorter side is resized to `256 / 224 * image_size` (rounded), then the
  central `image_size` square is cut out.
  """
  image = tf.image.decode_jpeg(image_bytes, channels=3)  # [H, W, 3]
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  resize_size = round(image_size * _IMAGENET_EVAL_RESIZE_RATIO)
  new_shape = tf.cast(
    tf.round(shape * resize_size / tf.reduce_min(shape)), tf.int32
  )
  image = tf.image.resize(image, new_shape, antialias=True)
  offsets = (new_shape - image_size) // 2
  return tf.image.crop_to_bounding_box(
    image, offsets[0], offsets[1], image_size, image_size
  )


def _imagenet_preprocess(image_bytes, label, seeds, training, image_size):
  """The training or evaluation crop, then the ImageNet normalisation."""
  if training:
    image = _imagenet_train_image(image_bytes, seeds, image_size)
  else:
    image = _imagenet_eval_image(image_bytes, image_size)
  image = _normalise(image / 255.0, IMAGENET_MEAN, IMAGENET_STD)
  return tf.ensure_shape(image, [image_size, image_size, 3]), label


def imagenet2012(
  split: str,
  batch_size: int,
  training: bool,
  seed: int = 0,
  data_dir: Optional[str] = None,
  manual_dir: Optional[str] = None,
  image_size: int = 224,
) -> tf.data.Dataset:
  """ImageNet (ILSVRC 2012) `(image, label)` batches from tfds.

  tfds cannot download ImageNet: put `ILSVRC2012_img_train.tar` and
  `ILSVRC2012_img_val.tar` (from image-net.org) in `manual_dir`; the first
  call then prepares the dataset in `data_dir`, which takes hours.

  Args:
    split: `"train"`, `"validation"` or a tfds slice such as
      `"train[:10000]"`.
    batch_size: examples per batch.
    training: random-resized crop and random flip, shuffle, repeat forever
      and drop the partial batch; otherwise the central crop, one pass in
      order.
    seed: seed of the shuffle and the augmentation.
    data_dir: tfds data directory; tfds's default if `None`.
    manual_dir: directory holding the ImageNet tar files; tfds's default
      `<data_dir>/downloads/manual` if `None`.
    image_size: side of the square output images.

  Returns:
    Batches of images float32 `[B, image_size, image_size, 3]`, in [0, 1]
    units normalised with `IMAGENET_MEAN` and `IMAGENET_STD`, and labels int64
    `[B]` in [0, 1000).

  Raises:
    ValueError: if `split`, `batch_size` or `image_size` is invalid.
  """
  dataset = _tfds_examples(
    "imagenet2012",
    split,
    {"batch_size": batch_size, "image_size": image_size},
    training,
    data_dir,
    tfds.ReadConfig(shuffle_seed=seed),
    decoders={"image": tfds.decode.SkipDecoding()},
    download_and_prepare_kwargs={
      "download_config": tfds.download.DownloadConfig(manual_dir=manual_dir)
    },
  )

  preprocess = functools.partial(
    _imagenet_preprocess, training=training, image_size=image_size
  )
  return _finish(
    dataset, preprocess, batch_size, training, seed, _IMAGENET_SHUFFLE_BUFFER
  )
