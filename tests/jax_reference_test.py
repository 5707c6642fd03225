"""Tests for benchmarks.jax_reference: it computes what sobolev_tf computes.

The benchmark's TF/JAX ratios compare like with like only if the JAX
reference's loss is the library's loss; these tests check it, and its
gradients with respect to the weights, on small networks for every step kind
the benchmark runs.
"""

import unittest

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from benchmarks import tf_trainer
from benchmarks import workloads
import sobolev_tf

try:
  import jax

  from benchmarks import jax_reference
except ModuleNotFoundError as error:
  if error.name not in ("jax", "jaxlib"):
    raise
  jax = jax_reference = None

_NEEDS_JAX = unittest.skipIf(
  jax_reference is None,
  "JAX is not installed; the JAX reference needs the `bench` extra: "
  'pip install -c requirements.txt -e ".[bench]"',
)
_KINDS = workloads.KINDS
# float32 round-off of a few hundred operations.
_RTOL = 2e-5
_GRADIENT_RTOL = 2e-4


def _mlp(input_dim, num_outputs, batch_size=5):
  return workloads.Workload(
    name=f"mlp_{input_dim}_{num_outputs}",
    label="small MLP",
    batch_size=batch_size,
    input_shape=(input_dim,),
    layers=(("dense", 16), ("dense", 16), ("dense", num_outputs)),
    kinds=tuple(_KINDS),
  )


def _convnet(num_outputs, teacher):
  return workloads.Workload(
    name=f"conv_{num_outputs}",
    label="small convnet",
    batch_size=3,
    input_shape=(9, 9, 2),
    layers=(
      ("conv", 3, 3, 2),
      ("conv", 4, 2, 1),
      ("flatten",),
      ("dense", 8),
      ("dense", num_outputs),
    ),
    kinds=("plain", "stochastic_o1"),
    teacher=teacher,
  )


class _Case:
  """A network, its weights, a batch and targets in both frameworks."""

  def __init__(self, workload, kind, seed=0):
    self.workload, self.kind = workload, kind
    rng = np.random.default_rng(seed)
    self.x = workloads.inputs(rng, workload)
    self.activation = workload.activation_for(kind)
    self.net = tf_trainer.keras_net(workload, self.activation, seed)
    self.params = jax_reference.params_from_weights(self.net.get_weights())
    self.teacher = self.targets = None
    if workload.teacher:
      self.teacher = tf_trainer.keras_net(workload, self.activation, seed + 1)
      teacher_params = self.teacher.get_weights()
      self.aux = {"teacher": jax_reference.params_from_weights(teacher_params)}
    else:
      self.targets = workloads.array_targets(rng, workload, kind.order)
      self.aux = self.targets

  def jax_loss_and_gradients(self, directions=None, method="auto"):
    loss = jax_reference.sobolev_loss(
      self.workload,
      self.activation,
      workloads.objective_kwargs(self.kind),
      teacher=self.teacher is not None,
      method=method,
    )
    value, gradients = jax.value_and_grad(loss)(
      self.params, self.x, self.aux, directions
    )
    return float(value), [np.asarray(g) for pair in gradients for g in pair]

  def tf_loss_and_gradients(self, loss_fn):
    with tf.GradientTape() as tape:
      total = loss_fn()
    gradients = tape.gradient(total, self.net.trainable_weights)
    return float(total), [g.numpy() for g in gradients]


def _objective_loss(case):
  """The library's objective on `case`, traced as the benchmark runs it."""
  objective = sobolev_tf.SobolevObjective(
    **workloads.objective_kwargs(case.kind)
  )
  targets = None
  if case.targets is not None:
    targets = {key: tf.constant(v) for key, v in case.targets.items()}

  @tf.function
  def total():
    return objective(
      case.net,
      tf.constant(case.x),
      targets,
      teacher=case.teacher,
      seed=tf.constant([0, 1], tf.int64),
    ).total

  return total


def _flat(tensor):
  return tf.reshape(tensor, [tf.shape(tensor)[0], -1])  # [B, D]


def _projected_loss(case, v1, v2):
  """The objective on given directions, from sobolev_tf's public helpers."""
  x = tf.constant(case.x)
  output_directions = [tf.constant(v1)]
  input_directions = None if v2 is None else [tf.constant(v2)]

  def projections(fn):
    y, first, second = sobolev_tf.value_and_projected_derivatives(
      fn, x, output_directions, input_directions
    )
    return [y] + first + second

  def total():
    predictions = projections(case.net)
    if case.teacher is not None:
      targets = [tf.stop_gradient(t) for t in projections(case.teacher)]
    else:
      d1 = tf.constant(case.targets["d1"])
      targets = [
        tf.constant(case.targets["value"]),
        sobolev_tf.project_jacobian(d1, output_directions[0]),
      ]
      if v2 is not None:
        d2 = tf.constant(case.targets["d2"])
        targets.append(
          sobolev_tf.project_hessian(
            d2, output_directions[0], input_directions[0]
          )
        )
    mse = keras.losses.MeanSquaredError()
    pairs = zip(targets, predictions, strict=True)
    return tf.add_n([mse(_flat(t), _flat(p)) for t, p in pairs])

  return total


@_NEEDS_JAX
class JaxReferenceTest(tf.test.TestCase, parameterized.TestCase):
  def assertSameLoss(self, tf_result, jax_result):
    (tf_loss, tf_gradients), (jax_loss, jax_gradients) = tf_result, jax_result
    self.assertGreater(tf_loss, 0.0)
    self.assertAllClose(jax_loss, tf_loss, rtol=_RTOL, atol=0.0)
    self.assertLen(jax_gradients, len(tf_gradients))
    for jax_gradient, tf_gradient in zip(
      jax_gradients, tf_gradients, strict=True
    ):
      scale = np.max(np.abs(tf_gradient))
      self.assertGreater(scale, 0.0)
      self.assertAllClose(
        jax_gradient, tf_gradient, rtol=_GRADIENT_RTOL, atol=1e-5 * scale
      )

  # The stochastic cases have one output (and, at order 2, one input): every
  # direction is +-1, the loss does not depend on the draw, and the objective
  # can draw its own.
  @parameterized.named_parameters(
    ("plain", _mlp(3, 2), "plain", "auto"),
    ("full_o1_vmap", _mlp(3, 2), "full_o1", "vmap"),
    ("full_o1_unrolled", _mlp(3, 2), "full_o1", "unrolled"),
    ("full_o1_more_outputs", _mlp(2, 5), "full_o1", "unrolled"),
    ("full_o2_vmap", _mlp(3, 2), "full_o2", "vmap"),
    ("full_o2_unrolled", _mlp(3, 2), "full_o2", "unrolled"),
    ("stochastic_o1_one_output", _mlp(3, 1), "stochastic_o1", "auto"),
    ("stochastic_o2_one_dimension", _mlp(1, 1), "stochastic_o2", "auto"),
    ("convnet_plain", _convnet(3, teacher=False), "plain", "auto"),
    ("convnet_teacher", _convnet(1, teacher=True), "stochastic_o1", "auto"),
  )
  def test_equals_objective(self, workload, kind_name, method):
    case = _Case(workload, _KINDS[kind_name])
    directions = None
    if case.kind.mode == "stochastic":
      directions = jax_reference.sample_directions(
        jax.random.key(3), case.x, workload.num_outputs, case.kind.order
      )
    self.assertSameLoss(
      case.tf_loss_and_gradients(_objective_loss(case)),
      case.jax_loss_and_gradients(directions, method),
    )

  @parameterized.named_parameters(
    ("o1", _mlp(3, 2), "stochastic_o1"),
    ("o2", _mlp(3, 2), "stochastic_o2"),
    ("convnet_teacher", _convnet(3, teacher=True), "stochastic_o1"),
  )
  def test_equals_projections_on_given_directions(self, workload, kind_name):
    case = _Case(workload, _KINDS[kind_name])
    v1, v2 = jax_reference.sample_directions(
      jax.random.key(4), case.x, workload.num_outputs, case.kind.order
    )
    v1 = np.asarray(v1)
    v2 = None if v2 is None else np.asarray(v2)
    self.assertSameLoss(
      case.tf_loss_and_gradients(_projected_loss(case, v1, v2)),
      case.jax_loss_and_gradients((v1, v2)),
    )

  def test_stochastic_loss_needs_directions(self):
    case = _Case(_mlp(3, 2), _KINDS["stochastic_o1"])
    with self.assertRaisesRegex(ValueError, "needs `directions`"):
      case.jax_loss_and_gradients(None)

  def test_init_params_has_keras_shapes_and_glorot_range(self):
    workload = _mlp(3, 2)
    params = jax_reference.init_params(workload, seed=0)
    keras_weights = tf_trainer.keras_net(workload, "relu", 0).get_weights()
    self.assertEqual(
      [w.shape for pair in params for w in pair],
      [w.shape for w in keras_weights],
    )
    for kernel, bias in params:
      fan_in, fan_out = kernel.shape
      limit = np.sqrt(6.0 / (fan_in + fan_out))
      self.assertLessEqual(float(np.max(np.abs(kernel))), limit)
      self.assertGreater(float(np.std(kernel)), limit / 4)
      self.assertAllEqual(bias, np.zeros_like(bias))

  def test_rejects_unknown_activation(self):
    with self.assertRaisesRegex(ValueError, "activation='tanh'"):
      jax_reference.sobolev_loss(
        _mlp(3, 2),
        "tanh",
        workloads.objective_kwargs(_KINDS["plain"]),
        teacher=False,
      )

  def test_init_params_rejects_convnets(self):
    with self.assertRaisesRegex(ValueError, "MLPs only"):
      jax_reference.init_params(_convnet(2, teacher=False), seed=0)

  @parameterized.parameters(
    ({"num_projections": 2}, "num_projections=2"),
    ({"losses": "mean_absolute_error"}, "mean_absolute_error"),
    ({"loss_weights": (1.0,)}, "Expected 2 loss weights"),
    ({"mode": "exact"}, "mode='exact'"),
  )
  def test_rejects_settings_it_does_not_implement(self, change, message):
    objective = {**workloads.objective_kwargs(_KINDS["full_o1"]), **change}
    with self.assertRaisesRegex(ValueError, message):
      jax_reference.objective_settings(objective)


if __name__ == "__main__":
  tf.test.main()
