"""Tests for sobolev_tf.tasks.synthetic_gradients: the settings."""

from absl.testing import parameterized
import tensorflow as tf

from sobolev_tf.layers import synthetic_gradients as sg_layers
from sobolev_tf.tasks import synthetic_gradients as sg


class ConfigTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.parameters(((3, 3), [0, 1, 2]), ((3, 1), [1]), ((4, 1), [1]))
  def test_split_points(self, blocks_and_modules, expected):
    self.assertEqual(sg.split_points(*blocks_and_modules), expected)

  def test_unknown_variant(self):
    with self.assertRaisesRegex(ValueError, r"Received: variant='dni'"):
      sg.Config("dni")

  def test_unknown_architecture(self):
    with self.assertRaisesRegex(ValueError, r"Received: architecture='vgg'"):
      sg.Config("sobolev", architecture="vgg")

  def test_too_many_modules(self):
    with self.assertRaisesRegex(ValueError, r"Received: num_modules=4"):
      sg.Config("sobolev", num_modules=4)

  def test_one_stride_per_block(self):
    with self.assertRaisesRegex(ValueError, "one stride per block"):
      sg_layers.SplitConvNet((4, 4), (1,), 10)
    with self.assertRaisesRegex(ValueError, "at least one conv block"):
      sg_layers.SplitConvNet((), (), 10)

  @parameterized.parameters(
    (lambda: sg_layers.ConvBlock(0), "channels=0"),
    (lambda: sg_layers.ConvBlock(4, stride=0), "stride=0"),
    (lambda: sg_layers.Head(0), "num_classes=0"),
    (lambda: sg_layers.SplitConvNet((4, -1), (1, 1), 10), "channels=-1"),
    (lambda: sg_layers.SplitResNet50(0), "num_classes=0"),
    (lambda: sg_layers.DirectSG(10, 0), "channels=0"),
    (lambda: sg_layers.DirectSG(10, 4, hidden_channels=0), "hidden_channels=0"),
    (lambda: sg_layers.ScalarCritic(0), "num_classes=0"),
    (lambda: sg_layers.ScalarCritic(10, hidden_size=0), "hidden_size=0"),
    (
      lambda: sg_layers.LossCritic(10, hidden_channels=-2),
      "hidden_channels=-2",
    ),
  )
  def test_modules_check_their_arguments(self, make, received):
    with self.assertRaisesRegex(
      ValueError, f"expected a positive integer. Received: {received}"
    ):
      make()

  @parameterized.parameters(
    dict(learning_rate=0.0),
    dict(sg_learning_rate=-1.0),
    dict(warmup_steps=-1),
    dict(num_classes=0),
  )
  def test_invalid_settings(self, **kwargs):
    ((name, value),) = kwargs.items()
    with self.assertRaisesRegex(ValueError, f"Received: {name}={value}"):
      sg.Config("sobolev", **kwargs)


if __name__ == "__main__":
  tf.test.main()
