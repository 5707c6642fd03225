"""Sobolev training under Keras mixed-precision policies, on the CPU."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import derivatives
from sobolev_tf import model as model_lib


def _data(num=256, scale_x=1.0, scale_y=1.0):
  """f(x) = 3 + sin(x0) cos(x1) on [-2, 2]^2, in units scaled by a and b."""
  x = np.random.default_rng(0).uniform(-2, 2, (num, 2))
  s0, c0 = np.sin(x[:, 0]), np.cos(x[:, 0])
  s1, c1 = np.sin(x[:, 1]), np.cos(x[:, 1])
  value = (3 + s0 * c1)[:, None]
  d1 = np.stack([c0 * c1, -s0 * s1], -1)[:, None]
  d2 = np.stack(
    [np.stack([-s0 * c1, -c0 * s1], -1), np.stack([-c0 * s1, -s0 * c1], -1)],
    -2,
  )[:, None]
  targets = {
    "value": scale_y * value,
    "d1": scale_y / scale_x * d1,
    "d2": scale_y / scale_x**2 * d2,
  }
  return (scale_x * x).astype("float32"), {
    k: v.astype("float32") for k, v in targets.items()
  }


def _network(scale_x, scale_y):
  """An MLP whose unit conversions and output stay in float32."""
  return keras.Sequential(
    [
      keras.Input((2,)),
      keras.layers.Rescaling(1 / scale_x, dtype="float32"),
      keras.layers.Dense(64, activation="tanh"),
      keras.layers.Dense(64, activation="tanh"),
      keras.layers.Dense(1, dtype="float32"),
      keras.layers.Rescaling(scale_y, dtype="float32"),
    ]
  )


class MixedPrecisionTest(tf.test.TestCase, parameterized.TestCase):
  def tearDown(self):
    keras.mixed_precision.set_global_policy("float32")
    super().tearDown()

  def _curve(self, policy, order, scale_x=1.0, scale_y=1.0):
    """Normalised terms per epoch and the steps applied."""
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    x, y = _data(scale_x=scale_x, scale_y=scale_y)
    y = {k: y[k] for k in ("value", "d1", "d2")[: order + 1]}
    model = model_lib.SobolevModel(_network(scale_x, scale_y), order=order)
    optimizer = keras.optimizers.Adam(3e-3)
    if policy == "mixed_float16":
      # A first scale that does not overflow, so no step is skipped.
      optimizer = keras.optimizers.LossScaleOptimizer(
        optimizer, initial_scale=2.0**10
      )
    model.compile(optimizer=optimizer)
    history = model.fit(
      x, y, batch_size=32, epochs=4, shuffle=False, verbose=0
    ).history
    keras.mixed_precision.set_global_policy("float32")
    keys = [f"{k}_normalized_loss" for k in ("value", "d1", "d2")[: order + 1]]
    return (
      np.array([history[k] for k in keys]),
      int(model.optimizer.iterations.numpy()),
    )

  # The curves agree to 1% (bfloat16 keeps 8 bits of mantissa).
  @parameterized.product(
    policy=["mixed_bfloat16", "mixed_float16"], order=[1, 2]
  )
  def test_same_curve_as_float32(self, policy, order):
    reference, reference_steps = self._curve("float32", order)
    curve, steps = self._curve(policy, order)
    self.assertEqual(steps, reference_steps)
    self.assertAllClose(curve, reference, rtol=1e-2)

  def test_bfloat16_in_small_units(self):
    # Inputs in 0-255 units, outputs in thousandths: d2 targets ~1e-8.
    reference, _ = self._curve("float32", 2, 255.0, 1e-3)
    curve, _ = self._curve("mixed_bfloat16", 2, 255.0, 1e-3)
    self.assertAllClose(curve, reference, rtol=1e-2)

  def test_loss_scale_keeps_float16_derivatives_from_underflowing(self):
    keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(0)
    x, _ = _data(num=32, scale_x=255.0, scale_y=1e-3)
    model = model_lib.SobolevModel(_network(255.0, 1e-3), order=2)
    model.build((None, 2))
    keras.mixed_precision.set_global_policy("float32")
    reference = model_lib.SobolevModel(_network(255.0, 1e-3), order=2)
    reference.build((None, 2))
    reference.set_weights(model.get_weights())
    # The float32 network's own derivatives (Hessian entries ~1e-8).
    exact = dict(
      zip(
        ("value", "d1", "d2"),
        derivatives.value_and_derivatives(reference, x, 2),
        strict=True,
      )
    )

    def relative_error(scale):
      losses = model.objective(model, x, exact, derivative_scale=scale)
      mean_square = float(tf.reduce_mean(tf.square(exact["d2"])))
      return float(losses.terms["d2"]) / mean_square

    # Unscaled, the float16 backward pass flushes them to zero; scaled by
    # the loss scale they keep float16's precision (a relative mean square
    # error below 1%, an error of a few percent per entry).
    self.assertGreater(relative_error(None), 0.5)
    self.assertLess(relative_error(tf.constant(2.0**10)), 1e-2)


if __name__ == "__main__":
  tf.test.main()
