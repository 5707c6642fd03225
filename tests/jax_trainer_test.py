"""Tests for benchmarks.jax_trainer: Adam and a training step as Keras's."""

import unittest

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from benchmarks import tf_trainer
from benchmarks import workloads

try:
  import jax

  from benchmarks import jax_reference
  from benchmarks import jax_trainer
except ModuleNotFoundError as error:
  if error.name not in ("jax", "jaxlib"):
    raise
  jax = jax_reference = jax_trainer = None


@unittest.skipIf(
  jax_trainer is None,
  "JAX is not installed; the JAX reference needs the `bench` extra: "
  'pip install -c requirements.txt -e ".[bench]"',
)
class JaxTrainerTest(tf.test.TestCase, parameterized.TestCase):
  def test_adam_steps_equal_keras(self):
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=shape).astype(np.float32) for shape in (4, 3)]
    variables = [keras.Variable(w) for w in weights]
    optimizer = keras.optimizers.Adam(workloads.LEARNING_RATE)
    params = [tuple(jax.numpy.asarray(w) for w in weights)]
    state = jax_trainer.adam_init(params)
    for _ in range(3):  # Later steps check the bias corrections.
      gradients = [rng.normal(size=w.shape).astype(np.float32) for w in weights]
      optimizer.apply([tf.constant(g) for g in gradients], variables)
      params, state = jax_trainer.adam_update(
        [tuple(jax.numpy.asarray(g) for g in gradients)], state, params
      )
    self.assertEqual(int(state["step"]), 3)
    for variable, param, initial in zip(
      variables, params[0], weights, strict=True
    ):
      self.assertNotAllClose(variable.numpy(), initial)
      self.assertAllClose(np.asarray(param), variable.numpy(), rtol=1e-6)

  # One output: the stochastic step's loss does not depend on the draw, so
  # both frameworks take the same step from their own random directions.
  @parameterized.parameters("full_o1", "stochastic_o1")
  def test_training_step_equals_sobolev_model(self, kind_name):
    kind = workloads.KINDS[kind_name]
    workload = workloads.Workload(
      name="small",
      label="MLP 3-16-16-1",
      batch_size=5,
      input_shape=(3,),
      layers=(("dense", 16), ("dense", 16), ("dense", 1)),
      kinds=(kind_name,),
    )
    rng = np.random.default_rng(0)
    x = workloads.inputs(rng, workload)
    targets = workloads.array_targets(rng, workload, kind.order)
    net = tf_trainer.keras_net(workload, kind.activation, seed=0)
    initial_weights = net.get_weights()
    tf_side = tf_trainer.TfTrainer(
      net,
      kind,
      x,
      targets,
      None,
      steps=1,
      seed=0,
      variant=tf_trainer.TfVariant(xla=False),
    )
    jax_side = jax_trainer.JaxTrainer(
      workload,
      kind,
      jax_reference.params_from_weights(initial_weights),
      x,
      targets,
      steps=1,
      seed=0,
    )
    self.assertAllClose(jax_side.run(), tf_side.initial_loss(), rtol=2e-5)
    tf_side.run()
    jax_weights = [np.asarray(w) for pair in jax_side.params for w in pair]
    tf_weights = net.get_weights()
    self.assertLen(jax_weights, len(tf_weights))
    for jax_weight, tf_weight, initial in zip(
      jax_weights, tf_weights, initial_weights, strict=True
    ):
      self.assertNotAllClose(tf_weight, initial)
      self.assertAllClose(jax_weight, tf_weight, rtol=1e-5, atol=1e-7)


if __name__ == "__main__":
  tf.test.main()
