"""Tests for sobolev_tf.tasks.image_data.

The tfds pipelines run offline on `tfds.testing.mock_data`: deterministic
random examples, the same for every split.
"""

import re

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from sobolev_tf.tasks import image_data


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
    ("digits", "valid"),
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
