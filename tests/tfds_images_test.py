"""Tests for sobolev_tf.tasks.tfds_images.

The pipelines run offline on `tfds.testing.mock_data`: deterministic random
examples (uniform uint8 noise; ImageNet images of random sizes from 5 to 50
pixels, served as real JPEGs), the same for every split.
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from sobolev_tf.tasks import tfds_images

_CIFAR_MEAN = np.array(tfds_images.CIFAR10_MEAN, np.float32)
_CIFAR_STD = np.array(tfds_images.CIFAR10_STD, np.float32)
_IMAGENET_MEAN = np.array(tfds_images.IMAGENET_MEAN, np.float32)
_IMAGENET_STD = np.array(tfds_images.IMAGENET_STD, np.float32)


def _take(dataset, count=None):
  """`(images, labels)` of the first `count` batches (all if `None`)."""
  if count is not None:
    dataset = dataset.take(count)
  images, labels = zip(
    *[(x.numpy(), y.numpy()) for x, y in dataset], strict=True
  )
  return images, labels


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


class Cifar10Test(tf.test.TestCase):
  num_examples = 8

  def test_eval_is_normalised_and_not_augmented(self):
    with tfds.testing.mock_data(num_examples=self.num_examples):
      raw_x, raw_y = _raw("cifar10", "test", self.num_examples)
      images, labels = _take(tfds_images.cifar10("test", 3, False))
      again, _ = _take(tfds_images.cifar10("test", 3, False, seed=5))
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
        tfds_images.cifar10("train", batch_size, True, seed=1), 4
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
      first, first_y = _take(tfds_images.cifar10("train", 4, True, seed=2), 3)
      again, again_y = _take(tfds_images.cifar10("train", 4, True, seed=2), 3)
      other, _ = _take(tfds_images.cifar10("train", 4, True, seed=3), 3)
    self.assertAllEqual(np.stack(first), np.stack(again))
    self.assertAllEqual(np.stack(first_y), np.stack(again_y))
    self.assertNotAllEqual(np.stack(first), np.stack(other))


class Imagenet2012Test(tf.test.TestCase):
  num_examples = 6
  image_size = 32

  def test_eval_resizes_and_crops_centrally(self):
    with tfds.testing.mock_data(num_examples=self.num_examples):
      raw_x, raw_y = _raw("imagenet2012", "validation", self.num_examples)
      dataset = tfds_images.imagenet2012(
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
      dataset = tfds_images.imagenet2012(
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


if __name__ == "__main__":
  tf.test.main()
