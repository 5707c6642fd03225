"""Tests for sobolev_tf.tasks.image_data.

The tfds pipelines run offline on `tfds.testing.mock_data`: deterministic
random examples (uniform uint8 noise; ImageNet images of random sizes from 5
to 50 pixels, served as real JPEGs), the same for every split.
"""

import collections
import re

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from sobolev_tf.tasks import image_data

_CIFAR_MEAN = np.array(image_data.CIFAR10_MEAN, np.float32)
_CIFAR_STD = np.array(image_data.CIFAR10_STD, np.float32)
_IMAGENET_MEAN = np.array(image_data.IMAGENET_MEAN, np.float32)
_IMAGENET_STD = np.array(image_data.IMAGENET_STD, np.float32)


def _take(dataset, count=None):
  """`(images, labels)` of the first `count` batches (all if `None`)."""
  if count is not None:
    dataset = dataset.take(count)
  images, labels = zip(
    *[(x.numpy(), y.numpy()) for x, y in dataset], strict=True
  )
  return images, labels


def _concat(dataset):
  images, labels = _take(dataset)
  return np.concatenate(images), np.concatenate(labels)


def _raw(name, split, num_examples):
  """The tfds examples before preprocessing, uint8 images and labels."""
  # The loaders decode JPEGs themselves, and the mock's encoded images differ
  # from the arrays it serves decoded, so decode them here too.
  dataset = tfds.load(
    name,
    split=split,
    as_supervised=True,
    decoders={"image": tfds.decode.SkipDecoding()},
  )
  images, labels = [], []
  for image, label in dataset:
    if image.dtype == tf.string:
      image = tf.image.decode_jpeg(image, channels=3)
    images.append(image.numpy())
    labels.append(label.numpy())
  assert len(labels) == num_examples
  return images, labels


def _match_pad_crop_flip(image, sources, padding=4):
  """Index, offset and flip of the source that `image` was cut from.

  Args:
    image: an augmented image `[H, W, C]` in [0, 1] units.
    sources: the original images `[N, H, W, C]` in [0, 1] units.
    padding: zero padding on each side before cropping.

  Returns:
    `(error, index, dy, dx, flipped)` of the closest candidate.
  """
  height, width = image.shape[:2]
  padded = np.pad(
    sources, ((0, 0), (padding, padding), (padding, padding), (0, 0))
  )
  # [N, dy, dx, C, H, W] -> [N, dy, dx, H, W, C]
  windows = np.lib.stride_tricks.sliding_window_view(
    padded, (height, width), axis=(1, 2)
  ).transpose(0, 1, 2, 4, 5, 3)
  candidates = np.stack([windows, windows[..., ::-1, :]])  # [2, N, 9, 9, ...]
  errors = np.abs(candidates - image).max(axis=(-3, -2, -1))
  flipped, index, dy, dx = np.unravel_index(np.argmin(errors), errors.shape)
  return errors.min(), index, dy, dx, bool(flipped)


class DigitsTest(tf.test.TestCase, parameterized.TestCase):
  def test_split_sizes_shapes_and_labels(self):
    train_x, train_y = _concat(image_data.digits("train", 100, False))
    test_x, test_y = _concat(image_data.digits("test", 100, False))
    self.assertEqual(train_x.shape, (image_data.DIGITS_NUM_TRAIN, 8, 8, 1))
    self.assertEqual(test_x.shape, (image_data.DIGITS_NUM_TEST, 8, 8, 1))
    self.assertEqual(len(train_y) + len(test_y), 1797)
    self.assertEqual(
      image_data.digits_split_sizes(),
      {"train": len(train_y), "test": len(test_y)},
    )
    self.assertEqual(train_x.dtype, np.float32)
    self.assertEqual(train_y.dtype, np.int64)
    self.assertAllInSet(np.concatenate([train_y, test_y]), range(10))

  @parameterized.parameters(0.1, 0.5)
  def test_test_fraction(self, test_fraction):
    sizes = image_data.digits_split_sizes(test_fraction)
    for split in ("train", "test"):
      _, labels = _concat(
        image_data.digits(split, 500, False, test_fraction=test_fraction)
      )
      self.assertLen(labels, sizes[split])
    self.assertEqual(sum(sizes.values()), image_data.DIGITS_NUM_EXAMPLES)

  def test_split_does_not_depend_on_seed(self):
    test_x, test_y = _concat(image_data.digits("test", 64, False, seed=0))
    other_x, other_y = _concat(image_data.digits("test", 64, False, seed=7))
    self.assertAllEqual(test_x, other_x)
    self.assertAllEqual(test_y, other_y)
    epoch = image_data.DIGITS_NUM_TRAIN
    first = image_data.digits("train", epoch, True, seed=0)
    second = image_data.digits("train", epoch, True, seed=7)
    (first_x,), _ = _take(first, 1)
    (second_x,), _ = _take(second, 1)
    self.assertNotAllEqual(first_x, second_x)
    self.assertEqual(
      sorted(x.tobytes() for x in first_x),
      sorted(x.tobytes() for x in second_x),
    )

  def test_train_and_test_do_not_overlap(self):
    train_x, _ = _concat(image_data.digits("train", 500, False))
    test_x, _ = _concat(image_data.digits("test", 500, False))
    train_bytes = {x.tobytes() for x in train_x}
    test_bytes = {x.tobytes() for x in test_x}
    # load_digits has no duplicate images, so bytes identify examples.
    self.assertLen(train_bytes, len(train_x))
    self.assertLen(test_bytes, len(test_x))
    self.assertEmpty(train_bytes & test_bytes)

  def test_split_is_stratified(self):
    _, train_y = _concat(image_data.digits("train", 500, False))
    _, test_y = _concat(image_data.digits("test", 500, False))
    train_counts = np.bincount(train_y, minlength=10)
    test_counts = np.bincount(test_y, minlength=10)
    # Stratification rounds each class's test share to within one example.
    expected = 0.25 * (train_counts + test_counts)
    self.assertAllClose(test_counts, expected, atol=1.0)

  def test_standardised_with_train_statistics(self):
    train_x, _ = _concat(image_data.digits("train", 500, False))
    test_x, _ = _concat(image_data.digits("test", 500, False))
    self.assertAllClose(train_x.mean(), 0.0, atol=1e-5)
    self.assertAllClose(train_x.std(), 1.0, atol=1e-5)
    self.assertAllClose(test_x.mean(), 0.0, atol=0.1)
    # The blank border maps every split's zero pixels to one value.
    self.assertAllClose(train_x.min(), test_x.min())

  def test_training_batches_shuffle_repeat_and_are_seeded(self):
    batch_size = 100
    per_epoch = image_data.DIGITS_NUM_TRAIN // batch_size
    dataset = image_data.digits("train", batch_size, True, seed=3)
    images, labels = _take(dataset, 2 * per_epoch + 1)
    self.assertTrue(all(len(y) == batch_size for y in labels))
    eval_x, _ = _concat(image_data.digits("train", 500, False))
    epoch_x = np.concatenate(images[:per_epoch])
    # One pass visits distinct examples, in an order that is not the file's.
    self.assertLen({x.tobytes() for x in epoch_x}, len(epoch_x))
    self.assertNotAllEqual(epoch_x, eval_x[: len(epoch_x)])
    # The next pass draws a new permutation.
    self.assertNotAllEqual(images[0], images[per_epoch])
    again, again_labels = _take(
      image_data.digits("train", batch_size, True, seed=3), 2 * per_epoch + 1
    )
    self.assertAllEqual(np.stack(images), np.stack(again))
    self.assertAllEqual(np.stack(labels), np.stack(again_labels))
    other, _ = _take(image_data.digits("train", batch_size, True, seed=4), 1)
    self.assertNotAllEqual(images[0], other[0])


class Cifar10Test(tf.test.TestCase):
  num_examples = 8

  def test_eval_is_normalised_and_not_augmented(self):
    with tfds.testing.mock_data(num_examples=self.num_examples):
      raw_x, raw_y = _raw("cifar10", "test", self.num_examples)
      images, labels = _take(image_data.cifar10("test", 3, False))
      again, _ = _take(image_data.cifar10("test", 3, False, seed=5))
    self.assertEqual([len(y) for y in labels], [3, 3, 2])
    images, labels = np.concatenate(images), np.concatenate(labels)
    self.assertEqual(images.shape, (self.num_examples, 32, 32, 3))
    self.assertEqual(images.dtype, np.float32)
    self.assertEqual(labels.dtype, np.int64)
    self.assertAllInSet(labels, range(10))
    self.assertAllEqual(images, np.concatenate(again))
    self.assertAllEqual(labels, raw_y)
    self.assertAllClose(
      images * _CIFAR_STD + _CIFAR_MEAN,
      np.stack(raw_x) / 255.0,
      atol=1e-5,
    )
    # Mock pixels are uniform on [0, 1]: mean ~0.5, std ~0.29.
    channel_means = images.mean(axis=(0, 1, 2))
    self.assertAllClose(channel_means, np.zeros(3), atol=0.3)
    self.assertAllInRange(images.std(axis=(0, 1, 2)), 0.9, 1.4)

  def test_training_pads_crops_and_flips(self):
    batch_size = 4
    with tfds.testing.mock_data(num_examples=self.num_examples):
      raw_x, raw_y = _raw("cifar10", "train", self.num_examples)
      images, labels = _take(
        image_data.cifar10("train", batch_size, True, seed=1), 4
      )
    self.assertEqual(images[0].shape, (batch_size, 32, 32, 3))
    sources = np.stack(raw_x).astype(np.float32) / 255.0
    matches = []
    for image, label in zip(
      np.concatenate(images), np.concatenate(labels), strict=True
    ):
      error, index, dy, dx, flipped = _match_pad_crop_flip(
        image * _CIFAR_STD + _CIFAR_MEAN, sources
      )
      self.assertLess(error, 1e-5)
      self.assertEqual(label, raw_y[index])
      matches.append((index, dy, dx, flipped))
    # Two passes over the 8 examples, each example once per pass.
    first, second = matches[: self.num_examples], matches[self.num_examples :]
    for epoch in (first, second):
      self.assertCountEqual([m[0] for m in epoch], range(self.num_examples))
    self.assertNotEqual([m[0] for m in first], [m[0] for m in second])
    self.assertLen({m[3] for m in matches}, 2)
    self.assertGreater(len({m[1:3] for m in matches}), 4)
    # Each pass draws new crops and flips for the same example.
    by_index = collections.defaultdict(list)
    for index, *augmentation in matches:
      by_index[index].append(tuple(augmentation))
    self.assertTrue(any(a != b for a, b in by_index.values()))

  def test_training_is_seeded(self):
    with tfds.testing.mock_data(num_examples=self.num_examples):
      first, first_y = _take(image_data.cifar10("train", 4, True, seed=2), 3)
      again, again_y = _take(image_data.cifar10("train", 4, True, seed=2), 3)
      other, _ = _take(image_data.cifar10("train", 4, True, seed=3), 3)
    self.assertAllEqual(np.stack(first), np.stack(again))
    self.assertAllEqual(np.stack(first_y), np.stack(again_y))
    self.assertNotAllEqual(np.stack(first), np.stack(other))


class Imagenet2012Test(tf.test.TestCase):
  num_examples = 6
  image_size = 32

  def test_eval_resizes_and_crops_centrally(self):
    with tfds.testing.mock_data(num_examples=self.num_examples):
      raw_x, raw_y = _raw("imagenet2012", "validation", self.num_examples)
      dataset = image_data.imagenet2012(
        "validation", 4, False, image_size=self.image_size
      )
      images, labels = _take(dataset)
      again, _ = _take(dataset)
    self.assertEqual([len(y) for y in labels], [4, 2])
    images, labels = np.concatenate(images), np.concatenate(labels)
    size = self.image_size
    self.assertEqual(images.shape, (self.num_examples, size, size, 3))
    self.assertEqual(images.dtype, np.float32)
    self.assertEqual(labels.dtype, np.int64)
    self.assertAllInRange(labels, 0, 999)
    self.assertAllEqual(labels, raw_y)
    self.assertAllEqual(images, np.concatenate(again))
    # round(256 / 224 * 32) = 37.
    for image, raw in zip(images, raw_x, strict=True):
      height, width = raw.shape[:2]
      scale = 37 / min(height, width)
      resized = tf.image.resize(
        raw, [round(height * scale), round(width * scale)], antialias=True
      ).numpy()
      top = (resized.shape[0] - size) // 2
      left = (resized.shape[1] - size) // 2
      expected = resized[top : top + size, left : left + size] / 255.0
      self.assertAllClose(
        image * _IMAGENET_STD + _IMAGENET_MEAN, expected, atol=1e-4
      )
    self.assertAllClose(images.mean(axis=(0, 1, 2)), np.zeros(3), atol=0.5)

  def test_training_crops_randomly_and_is_seeded(self):
    def batches(seed):
      dataset = image_data.imagenet2012(
        "train", 3, True, seed=seed, image_size=self.image_size
      )
      return _take(dataset, 4)

    with tfds.testing.mock_data(num_examples=self.num_examples):
      _, raw_y = _raw("imagenet2012", "train", self.num_examples)
      images, labels = batches(seed=0)
      again, again_labels = batches(seed=0)
      other, _ = batches(seed=1)
    size = self.image_size
    self.assertEqual(images[0].shape, (3, size, size, 3))
    self.assertEqual(images[0].dtype, np.float32)
    self.assertEqual(labels[0].dtype, np.int64)
    self.assertAllEqual(np.stack(images), np.stack(again))
    self.assertAllEqual(np.stack(labels), np.stack(again_labels))
    self.assertNotAllEqual(np.stack(images), np.stack(other))
    # Batches 0-1 and 2-3 are two passes, each over every example once.
    first = np.concatenate(labels[:2])
    second = np.concatenate(labels[2:])
    self.assertCountEqual(first, raw_y)
    self.assertCountEqual(second, raw_y)
    # The mock labels are distinct, so they identify the examples: each gets
    # a new crop on the second pass.
    self.assertLen(set(raw_y), self.num_examples)
    first_pass = dict(zip(first, np.concatenate(images[:2]), strict=True))
    second_pass = dict(zip(second, np.concatenate(images[2:]), strict=True))
    for label, image in first_pass.items():
      self.assertNotAllClose(image, second_pass[label])
    self.assertAllClose(
      np.concatenate(images).mean(axis=(0, 1, 2)), np.zeros(3), atol=0.5
    )


class LoadTest(tf.test.TestCase, parameterized.TestCase):
  def test_tables_cover_the_datasets(self):
    for table in (image_data.NUM_CLASSES, image_data.IMAGE_SHAPES):
      self.assertEqual(tuple(table), image_data.DATASETS)
    self.assertEqual(image_data.DATASETS, ("digits", "cifar10", "imagenet2012"))

  def test_dispatches_by_name(self):
    loaded, loaded_y = _concat(image_data.load("digits", "test", 64, False))
    direct, direct_y = _concat(image_data.digits("test", 64, False))
    self.assertAllEqual(loaded, direct)
    self.assertAllEqual(loaded_y, direct_y)
    with tfds.testing.mock_data(num_examples=2):
      (images,), _ = _take(
        image_data.load("cifar10", "train[:50%]", 2, True), 1
      )
    self.assertEqual(images.shape, (2, 32, 32, 3))

  def test_unknown_name(self):
    with self.assertRaisesWithLiteralMatch(
      ValueError,
      "Received an invalid value for `name`, expected one of "
      "['digits', 'cifar10', 'imagenet2012']. Received: name='foo'",
    ):
      image_data.load("foo", "train", 32, True)

  @parameterized.parameters(
    ("digits", "validation"),
    ("digits", "train[:10]"),
    ("cifar10", "validation"),
    ("cifar10", "train[:100]+validation"),
    ("imagenet2012", "test"),
  )
  def test_bad_split(self, name, split):
    with self.assertRaisesRegex(
      ValueError, "invalid value for `split`.*" + re.escape(f"split={split!r}")
    ) as context:
      image_data.load(name, split, 32, False)
    self.assertIn(str(list(image_data.SPLITS[name])), str(context.exception))

  def test_resumes_at_any_step_and_shards_the_global_batch(self):
    context = tf.distribute.InputContext(
      num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2
    )
    with tfds.testing.mock_data(num_examples=40):
      for name in ("digits", "cifar10"):
        full, _ = _take(image_data.load(name, "train", 4, True, seed=2), 6)
        resumed, _ = _take(
          image_data.load(name, "train", 4, True, seed=2, start_step=4), 2
        )
        self.assertAllClose(np.stack(resumed), np.stack(full[4:]), msg=name)
        # Pipeline 1 of 2 keeps the second half of every global batch.
        halves, _ = _take(
          image_data.load(
            name, "train", 4, True, seed=2, start_step=4, input_context=context
          ),
          2,
        )
        self.assertAllClose(
          np.stack(halves), np.stack(full[4:])[:, 2:], msg=name
        )

  @parameterized.parameters(
    dict(batch_size=0),
    dict(batch_size=2, test_fraction=1.0),
    dict(batch_size=2, test_fraction=0),
  )
  def test_bad_arguments(self, **kwargs):
    with self.assertRaisesRegex(ValueError, "Received an invalid value"):
      image_data.load("digits", "train", training=True, **kwargs)


if __name__ == "__main__":
  tf.test.main()
