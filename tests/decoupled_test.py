"""Tests for the synthetic-gradient networks and decoupled training."""

from absl.testing import parameterized
import keras
import numpy as np
import sonnet as snt
import tensorflow as tf

from sobolev_tf import testing
from sobolev_tf.layers import synthetic_gradients as sg_layers
from sobolev_tf.tasks import decoupled
from sobolev_tf.tasks import synthetic_gradients as sg

testing.configure_logical_cpus(2)


def _batch(batch_size=6, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(batch_size, 8, 8, 1)).astype(np.float32)
  labels = rng.integers(0, 10, size=batch_size).astype(np.int64)
  return tf.constant(images), tf.constant(labels)


def _classifier(variant, **kwargs):
  keras.utils.set_random_seed(0)
  config = sg.Config(variant, channels=(4, 4, 6), **kwargs)
  return decoupled.DecoupledClassifier(config, (8, 8, 1))


def _stage_weights(classifier):
  return [
    [v.numpy().copy() for part in stage for v in part.trainable_variables]
    for stage in classifier.stages
  ]


def _changed(before, after):
  return any(
    not np.array_equal(a, b) for a, b in zip(before, after, strict=True)
  )


def _symmetric_error(fn, h):
  """Max |J - J^T| of `fn`'s per-example Jacobian at `h`, flattened."""
  flat = tf.reshape(h, [h.shape[0], -1])
  with tf.GradientTape() as tape:
    tape.watch(flat)
    out = tf.reshape(fn(tf.reshape(flat, h.shape)), [h.shape[0], -1])
  jacobian = tape.batch_jacobian(out, flat).numpy()
  return np.abs(jacobian - np.transpose(jacobian, (0, 2, 1))).max(), jacobian


def _part_shapes(net, images):
  """The output shape of each of `net`'s parts, applied in turn."""
  shapes = []
  h = images
  for part in net.parts:
    h = part(h, is_training=False)
    shapes.append(h.shape.as_list())
  return shapes


class NetworkTest(tf.test.TestCase):
  def test_shapes(self):
    images, labels = _batch()
    net = sg_layers.SplitConvNet((32, 32, 64), (1, 1, 2), 10)
    shapes = _part_shapes(net, images)
    self.assertEqual(
      shapes, [[6, 8, 8, 32], [6, 8, 8, 32], [6, 4, 4, 64], [6, 10]]
    )
    h = tf.random.normal([6, 4, 4, 64])
    self.assertEqual(sg_layers.DirectSG(10, 64)(h, labels).shape, h.shape)
    self.assertEqual(sg_layers.ScalarCritic(10)(h, labels).shape, [6])
    self.assertEqual(sg_layers.LossCritic(10)(h, labels).shape, [6])

  def test_split_resnet50_is_sonnets_resnet50(self):
    images = tf.zeros([1, 64, 64, 3])
    split = sg_layers.SplitResNet50(1000)
    shapes = _part_shapes(split, images)
    self.assertEqual(
      shapes,
      [[1, 16, 16, 256], [1, 8, 8, 512], [1, 4, 4, 1024], [1, 2, 2, 2048]]
      + [[1, 1000]],
    )
    reference = snt.nets.ResNet50(1000)
    reference(images, is_training=False)

    def sizes(module):
      return sorted(int(np.prod(v.shape)) for v in module.trainable_variables)

    self.assertEqual(sizes(split), sizes(reference))
    self.assertEqual(sum(sizes(split)), 25_557_032)

  def test_resnet50_decoupled_step(self):
    keras.utils.set_random_seed(0)
    classifier = decoupled.DecoupledClassifier(
      sg.Config("sobolev", num_modules=1, architecture="resnet50"),
      (32, 32, 3),
    )
    self.assertLen(classifier.stages, 2)  # split after block group 2
    before = _stage_weights(classifier)
    images = tf.random.stateless_normal([2, 32, 32, 3], seed=[0, 1])
    classifier.train_step((images, tf.constant([1, 2], tf.int64)))
    after = _stage_weights(classifier)
    # The lower stage moved on the critic's synthetic gradient alone.
    for stage in range(2):
      self.assertTrue(_changed(before[stage], after[stage]), stage)

  def test_direct_sg_starts_at_zero(self):
    _, labels = _batch()
    h = tf.random.normal([6, 4, 4, 5])
    self.assertAllEqual(sg_layers.DirectSG(10, 5)(h, labels), tf.zeros_like(h))


class PropositionFourTest(tf.test.TestCase, parameterized.TestCase):
  """Critic SGs are gradients: their Jacobian in h is symmetric."""

  @parameterized.parameters("vfbn", "critic", "sobolev")
  def test_critic_sg_jacobian_is_symmetric(self, variant):
    classifier = _classifier(variant)
    _, labels = _batch(batch_size=2)
    h = tf.random.stateless_normal([2, 4, 4, 6], seed=[1, 2])
    error, jacobian = _symmetric_error(
      lambda a: classifier.synthetic_gradient(2, a, labels), h
    )
    self.assertGreater(np.abs(jacobian).max(), 1e-4)
    self.assertLess(error, 1e-5 * np.abs(jacobian).max() + 1e-7)

  def test_direct_sg_jacobian_is_not(self):
    _, labels = _batch(batch_size=2)
    module = sg_layers.DirectSG(10, 6)
    h = tf.random.stateless_normal([2, 4, 4, 6], seed=[1, 2])
    module(h, labels)
    for variable in module.trainable_variables:  # leave the zero start
      variable.assign(tf.random.stateless_normal(variable.shape, seed=[3, 4]))
    error, jacobian = _symmetric_error(lambda a: module(a, labels), h)
    self.assertGreater(error, 0.1 * np.abs(jacobian).max())


class SGLossTest(tf.test.TestCase, parameterized.TestCase):
  """Each variant's SG training loss against a brute-force computation."""

  @parameterized.product(
    variant=["direct", "vfbn", "critic", "sobolev"],
    balance=["none", "target_scale"],
  )
  def test_sg_loss(self, variant, balance):
    classifier = _classifier(variant, gradient_weight=7.0, balance=balance)
    _, labels = _batch(batch_size=3)
    h = tf.random.stateless_normal([3, 4, 4, 6], seed=[5, 6])
    value_target = tf.constant([2.0, 0.5, 1.0])
    gradient_target = tf.random.stateless_normal(h.shape, seed=[7, 8]) * 0.1
    result, _ = classifier._train_sg_module(
      2, h, labels, value_target, gradient_target
    )
    loss = result.losses.total

    module = classifier.sg_modules[2]
    if variant == "direct":
      expected = 7.0 * np.mean((module(h, labels) - gradient_target) ** 2)
    else:
      with tf.GradientTape() as tape:
        tape.watch(h)
        m = module(h, labels)
      dm_dh = tape.gradient(m, h).numpy()  # per example: m_b depends on h_b
      value_error = np.mean((m.numpy() - value_target.numpy()) ** 2)
      gradient_error = 7.0 * np.mean((dm_dh - gradient_target.numpy()) ** 2)
      if balance == "target_scale":
        # Relative errors: over the targets' variance and mean square (the
        # first training step's statistics are its own batch's).
        value_error /= np.var(value_target.numpy())
        gradient_error /= np.mean(gradient_target.numpy() ** 2)
      expected = {
        "vfbn": gradient_error,
        "critic": value_error,
        "sobolev": value_error + gradient_error,
      }[variant]
    self.assertAllClose(loss, expected, rtol=1e-5)


class TrainStepTest(tf.test.TestCase, parameterized.TestCase):
  def test_no_true_gradient_crosses_a_split(self):
    # A fresh DirectSG outputs zeros, so with no backprop across the splits
    # the lower stages cannot move on the first step, although the loss
    # depends on them; the top stage does move.
    for variant in ("direct", "noprop"):
      classifier = _classifier(variant)
      before = _stage_weights(classifier)
      classifier.train_step(_batch())
      after = _stage_weights(classifier)
      for stage in range(3):
        self.assertFalse(_changed(before[stage], after[stage]), variant)
      self.assertTrue(_changed(before[3], after[3]), variant)

  def test_backprop_moves_every_stage(self):
    classifier = _classifier("backprop")
    before = _stage_weights(classifier)
    classifier.train_step(_batch())
    after = _stage_weights(classifier)
    for stage in range(4):
      self.assertTrue(_changed(before[stage], after[stage]))

  @parameterized.parameters("direct", "vfbn", "critic", "sobolev")
  def test_sg_variants_move_every_stage_after_warmup(self, variant):
    classifier = _classifier(variant, warmup_steps=2)
    step = tf.function(classifier.train_step)
    before = _stage_weights(classifier)
    for seed in range(2):
      logs = step(_batch(seed=seed))
    warm = _stage_weights(classifier)
    self.assertFalse(_changed(before[0], warm[0]))  # SG not applied yet
    for seed in range(2, 4):
      logs = step(_batch(seed=seed))
    after = _stage_weights(classifier)
    for stage in range(4):
      self.assertTrue(_changed(warm[stage], after[stage]), stage)
    self.assertEqual(
      set(logs),
      {"loss", "accuracy"}
      | {f"{name}_{k}" for name in ("sg_loss", "cosine") for k in range(3)},
    )

  @parameterized.parameters(
    ("direct", 1e-3), ("vfbn", 3e-3), ("critic", 1e-3), ("sobolev", 1e-3)
  )
  def test_sg_modules_learn_their_targets(self, variant, sg_learning_rate):
    # A classifier that barely moves keeps the top split's targets fixed.
    classifier = _classifier(
      variant, learning_rate=1e-12, sg_learning_rate=sg_learning_rate
    )
    step = tf.function(classifier.train_step)
    batch = _batch(batch_size=16)
    first = step(batch)
    for _ in range(40):
      last = step(batch)
    self.assertLess(last["sg_loss_2"], 0.5 * first["sg_loss_2"])

  def test_gradient_cosines_match_the_training_logs(self):
    # With no training step between them, the cosines at evaluation (in
    # inference mode, no batch norm here) are the step's logged cosines.
    classifier = _classifier(
      "sobolev", learning_rate=1e-12, sg_learning_rate=1e-12
    )
    batch = _batch(batch_size=8)
    cosines = classifier.gradient_cosines(*batch)
    logs = classifier.train_step(batch)
    self.assertLen(cosines, 3)
    for k in range(3):
      self.assertAllClose(cosines[k], logs[f"cosine_{k}"], rtol=1e-4)
    self.assertEqual(
      decoupled.DecoupledClassifier(
        sg.Config("noprop"), (8, 8, 1)
      ).gradient_cosines(*batch),
      [],
    )

  def test_backprop_training_learns(self):
    classifier = _classifier("backprop", learning_rate=0.02)
    step = tf.function(classifier.train_step)
    batch = _batch(batch_size=16)
    first = step(batch)["loss"]
    for _ in range(60):
      last = step(batch)["loss"]
    self.assertLess(last, 0.7 * first)


class DistributedTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.parameters("backprop", "direct", "vfbn", "critic", "sobolev")
  def test_two_replicas_match_one_device(self, variant):
    batches = [_batch(batch_size=8, seed=seed) for seed in range(3)]
    weights = []
    for strategy in (tf.distribute.get_strategy(), testing.mirrored_strategy()):
      with strategy.scope():
        classifier = _classifier(variant)
      dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(
          tuple(tf.concat(parts, 0) for parts in zip(*batches, strict=True))
        ).batch(8)
      )

      @tf.function
      def step(batch, classifier=classifier, strategy=strategy):
        strategy.run(classifier.train_step, args=(batch,))

      for batch in dataset:
        step(batch)
      weights.append([v.numpy() for v in classifier.network.variables])
    for one, two in zip(*weights, strict=True):
      self.assertAllClose(one, two, rtol=1e-4, atol=1e-5)


if __name__ == "__main__":
  tf.test.main()
