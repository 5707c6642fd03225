"""Tests for sobolev_tf.private_api: each entry point and its fallback.

Every private entry point is forced to fail (its lookup raises, as it would
in a TensorFlow or Keras release that moved it), and the library must give
the same results through the public fallback.
"""

from unittest import mock
import warnings

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import sobolev_tf
from sobolev_tf import derivatives
from sobolev_tf import finite_updates
from sobolev_tf import private_api
from sobolev_tf import testing

testing.configure_logical_cpus(2)


def _broken(*unused_args, **unused_kwargs):
  raise AttributeError("module has no attribute (a newer release)")


def _fail(name):
  """Makes `private_api`'s lookup `name` fail, warnings silenced."""
  patch = mock.patch.object(private_api, name, side_effect=_broken)
  private_api._warn_once.cache_clear()
  return patch


class InXlaContextTest(tf.test.TestCase):
  def _seen(self):
    seen = []

    def probe():
      seen.append(private_api.in_xla_context())
      return tf.constant(0.0)

    seen.append(private_api.in_xla_context())
    tf.function(probe)()
    tf.function(probe, jit_compile=True)()
    return seen

  def test_tells_xla_from_graphs_and_eager(self):
    self.assertEqual(self._seen(), [False, False, True])

  def test_fallback_says_not_under_xla_and_warns_once(self):
    with (
      _fail("_xla_context_lookup"),
      warnings.catch_warnings(record=True) as w,
    ):
      warnings.simplefilter("always")
      self.assertEqual(self._seen(), [False, False, False])
    self.assertLen([x for x in w if "GraphOrParents" in str(x.message)], 1)

  def test_training_under_xla_is_right_with_the_fallback(self):
    # Under the fallback, XLA traces the graph-mode programs (a conditional
    # update, Philox directions, forward-mode Jacobians by accumulators).
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = {"value": np.sin(x[:, :2]), "d1": np.ones((8, 2, 3), "float32")}

    def fit():
      keras.utils.set_random_seed(1)
      net = keras.Sequential(
        [
          keras.Input((3,)),
          keras.layers.Dense(4, "tanh"),
          keras.layers.Dense(2),
        ]
      )
      model = sobolev_tf.SobolevModel(net, order=1, jacobian_mode="forward")
      model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=True)
      model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
      return model.get_weights()

    expected = fit()
    with _fail("_xla_context_lookup"):
      actual = fit()
    for a, b in zip(actual, expected, strict=True):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)


class VectorizedLoopTest(tf.test.TestCase, parameterized.TestCase):
  def _jacobian_and_gradients(self, net, x):
    with tf.GradientTape() as tape:
      y, jacobian = derivatives.value_and_jacobian(net, x, "reverse")
      loss = tf.reduce_sum(tf.square(jacobian)) + tf.reduce_sum(y)
    return jacobian, tape.gradient(loss, net.trainable_variables)

  @parameterized.parameters(
    AttributeError, ImportError, TypeError, RuntimeError
  )
  def test_any_failure_falls_back_to_unrolled_products(self, error):
    net = keras.Sequential(
      [keras.Input((3,)), keras.layers.Dense(5, "tanh"), keras.layers.Dense(4)]
    )
    x = tf.random.stateless_normal([6, 3], seed=[1, 2])
    expected = self._jacobian_and_gradients(net, x)  # Eager: unrolled.
    with mock.patch.object(private_api, "_pfor_lookup", side_effect=error):
      private_api._warn_once.cache_clear()
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        actual = tf.function(self._jacobian_and_gradients, jit_compile=True)(
          net, x
        )
    tf.nest.map_structure(
      lambda a, e: self.assertAllClose(a, e, rtol=1e-5, atol=1e-6),
      actual,
      expected,
    )

  def test_returns_none_when_it_cannot_convert(self):
    refuse = mock.Mock(side_effect=ValueError("No converter for SomeOp"))
    with mock.patch.object(private_api, "_pfor_lookup", return_value=refuse):
      self.assertIsNone(private_api.vectorized_loop(lambda i: i, 3))


class MergeCallTest(tf.test.TestCase):
  def _step(self, strategy):
    with strategy.scope():
      variable = tf.Variable([1.0, 2.0])
      optimizer = keras.optimizers.SGD(0.5)
      optimizer.build([variable])

    def replica_step(bad):
      gradient = tf.stack([bad, 1.0])
      return finite_updates.apply_if_finite(
        optimizer, [gradient], [variable], tf.constant(True)
      )[0]

    @tf.function
    def step(bad):
      return strategy.run(replica_step, args=(bad,))

    return variable, step

  def test_fallback_merges_and_skips_the_same(self):
    for strategy in (tf.distribute.get_strategy(), testing.mirrored_strategy()):
      # SGD(0.5) on the replicas' summed gradients [0.5, 1].
      replicas = strategy.num_replicas_in_sync
      expected = [1.0 - 0.25 * replicas, 2.0 - 0.5 * replicas]
      for fail in (False, True):
        variable, step = self._step(strategy)
        with (
          mock.patch.object(
            private_api,
            "_merge_call_lookup",
            side_effect=_broken if fail else private_api._merge_call_lookup,
          ),
          warnings.catch_warnings(),
        ):
          warnings.simplefilter("ignore")
          step(tf.constant(0.5))
          self.assertAllClose(variable.numpy(), expected)
          step(tf.constant(np.nan))
          self.assertAllClose(variable.numpy(), expected)

  def test_fallback_answers_from_public_api(self):
    with _fail("_merge_call_lookup"), warnings.catch_warnings():
      warnings.simplefilter("ignore")
      self.assertTrue(private_api.strategy_supports_no_merge_call())
      with testing.mirrored_strategy().scope():
        self.assertFalse(private_api.strategy_supports_no_merge_call())


class _Block(keras.layers.Layer):
  """A layer that holds layers in attributes, a list and a dict."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.dense = keras.layers.Dense(2)
    self.stack = [keras.layers.Dense(2), keras.layers.BatchNormalization()]
    self.named = {"out": keras.layers.Dense(1)}

  def call(self, x):
    x = self.stack[1](self.stack[0](self.dense(x)))
    return self.named["out"](x)


class NestedLayersTest(tf.test.TestCase, parameterized.TestCase):
  def _model(self):
    inputs = keras.Input((3,))
    block = _Block(name="block")
    inner = keras.Sequential([keras.layers.Dense(3)], name="inner")
    return keras.Model(inputs, block(inner(inputs)))

  def test_fallback_finds_every_layer(self):
    # Every layer that computes: a Sequential's `layers` leaves out its
    # InputLayer, which holds no weights.
    def names(layers):
      return [
        layer.name
        for layer in layers
        if not isinstance(layer, keras.layers.InputLayer)
      ]

    model = self._model()
    expected = names(private_api.nested_layers(model))
    with _fail("_flatten_layers_lookup"), warnings.catch_warnings():
      warnings.simplefilter("ignore")
      fallback = names(private_api.nested_layers(model))
    self.assertCountEqual(fallback, expected)
    self.assertLen(expected, 8)  # The model, inner, 1 + block, 4.

  @parameterized.parameters(False, True)
  def test_sobolev_model_refuses_a_nested_batch_norm(self, fail):
    patch = (
      _fail("_flatten_layers_lookup")
      if fail
      else mock.patch.object(private_api, "_warn_once")
    )
    with patch, warnings.catch_warnings():
      warnings.simplefilter("ignore")
      with self.assertRaisesRegex(ValueError, "BatchNormalization"):
        sobolev_tf.SobolevModel(self._model())


if __name__ == "__main__":
  tf.test.main()
