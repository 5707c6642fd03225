"""Tests for sobolev_tf.tasks.surfaces."""

import tensorflow as tf

from sobolev_tf.tasks import functions
from sobolev_tf.tasks import regression
from sobolev_tf.tasks import regression_model
from sobolev_tf.tasks import surfaces


def _config():
  return regression.RunConfig("booth", 2, 24, "sobolev", seed=0, steps=5)


class SurfacesTest(tf.test.TestCase):
  def test_grid_values(self):
    function = functions.get_function("booth")
    config = _config()
    (_, y), _ = regression.make_data(config, function)
    network = regression_model.build_model(config, function, y).model
    x1, x2, values, gradients = surfaces.grid_values(network, function, 8)
    self.assertEqual(values.shape, (8, 8))
    self.assertEqual(gradients.shape, (8, 8, 2))
    self.assertAllClose(
      x1[[0, -1]], function.lower[0:1].tolist() + function.upper[0:1].tolist()
    )
    self.assertEqual(x2.shape, (8,))

  def test_surface_image_spans_zero_to_one(self):
    function = functions.get_function("booth")
    config = _config()
    (_, y), _ = regression.make_data(config, function)
    network = regression_model.build_model(config, function, y).model
    image = surfaces.surface_image(network, function)
    self.assertEqual(image.shape, (1, 64, 64, 1))
    self.assertAllClose([image.numpy().min(), image.numpy().max()], [0.0, 1.0])

  def test_surface_image_of_compiled_values_is_the_network_s(self):
    function = functions.get_function("booth")
    config = _config()
    (_, y), _ = regression.make_data(config, function)
    network = regression_model.build_model(config, function, y).model
    scorer = regression_model.Scorer(network)
    self.assertAllClose(
      surfaces.surface_image(scorer.values, function, 16),
      surfaces.surface_image(network, function, 16),
    )
    # The first row is the domain's top: the values of the last grid row.
    _, _, values, _ = surfaces.grid_values(network, function, 16)
    image = surfaces.surface_image(network, function, 16)[0, :, :, 0]
    scaled = (values - values.min()) / (values.max() - values.min())
    self.assertAllClose(image, scaled[::-1], atol=1e-6)


if __name__ == "__main__":
  tf.test.main()
