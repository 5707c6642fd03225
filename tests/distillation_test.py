"""Tests for recording and distillation (paper Sec. 4.2)."""

import math

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from sobolev_tf import projections
from sobolev_tf import testing
from sobolev_tf.layers import atari
from sobolev_tf.tasks import distillation

testing.configure_logical_cpus(2)


def _teacher(num_actions=4):
  teacher = atari.AtariTeacher(num_actions)
  teacher(tf.zeros([1, *atari.FRAME_SHAPE], tf.uint8))
  return teacher


class RecordTest(tf.test.TestCase):
  def test_records_states_logits_and_episodes(self):
    teacher = _teacher()
    data = distillation.record(
      lambda frames: teacher.policy_logits(frames).numpy(),
      testing.FakeAtariEnv(num_envs=3, min_length=3, max_length=6),
      40,
    )
    self.assertEqual(data["frames"].shape, (40, *atari.FRAME_SHAPE))
    self.assertEqual(data["frames"].dtype, np.uint8)
    self.assertEqual(data["logits"].shape, (40, 4))
    self.assertAllClose(
      data["logits"][:3], teacher.policy_logits(data["frames"][:3])
    )
    # Each environment's episodes get fresh ids; ids never repeat across
    # environments: consecutive states of env 0 are at indices 0, 3, 6, ...
    episodes = data["episodes"]
    for env in range(3):
      own = episodes[env::3]
      self.assertTrue(np.all(np.diff(own) >= 0))
    self.assertGreater(len(np.unique(episodes)), 6)

  def test_split_by_episode(self):
    episodes = np.repeat(np.arange(20), 5)
    train, test = distillation.split_by_episode(episodes, 0.25, seed=1)
    self.assertLen(train, 75)
    self.assertLen(test, 25)
    self.assertEmpty(set(episodes[train]) & set(episodes[test]))
    self.assertEqual(len(train) + len(test), len(episodes))
    with self.assertRaisesRegex(ValueError, "test_fraction=1.5"):
      distillation.split_by_episode(episodes, 1.5)
    with self.assertRaisesRegex(ValueError, "at least two episodes"):
      distillation.split_by_episode(np.zeros(5), 0.5)


class DistillerTest(tf.test.TestCase, parameterized.TestCase):
  def test_sobolev_term_equals_brute_force(self):
    teacher = _teacher()
    distiller = distillation.Distiller(
      distillation.Config(num_actions=4, derivative_weight=1.0), teacher
    )
    frames = tf.constant(
      np.random.default_rng(0).integers(0, 255, (2, *atari.FRAME_SHAPE)),
      tf.uint8,
    )
    x = tf.cast(frames, tf.float32)
    seed = tf.constant([0, 0], tf.int64)
    losses = distiller.objective(
      distiller.student, x, teacher=teacher.policy_logits, seed=seed
    )

    def projected_gradient(fn, v):
      with tf.GradientTape() as tape:
        tape.watch(x)
        projection = tf.reduce_sum(tf.nn.log_softmax(fn(x)) * v)
      return tape.gradient(projection, x).numpy()

    log_student = tf.nn.log_softmax(distiller.student(x))
    v = projections.sample_directions(
      1, log_student, tf.random.experimental.stateless_fold_in(seed, 1)
    )[0]
    student_gradient = projected_gradient(distiller.student, v)
    teacher_gradient = projected_gradient(teacher.policy_logits, v)
    self.assertAllClose(
      losses.terms["d1"],
      np.mean((student_gradient - teacher_gradient) ** 2),
      rtol=1e-4,
    )
    log_teacher = tf.nn.log_softmax(teacher.policy_logits(x))
    kl = np.mean(np.sum(np.exp(log_teacher) * (log_teacher - log_student), -1))
    self.assertAllClose(losses.terms["value"], kl, rtol=1e-5)

  @parameterized.parameters(0.0, 1.0)
  def test_training_moves_the_student_toward_the_teacher(self, weight):
    teacher = _teacher()
    distiller = distillation.Distiller(
      distillation.Config(4, derivative_weight=weight, learning_rate=3e-3),
      teacher,
    )
    frames = tf.constant(
      np.random.default_rng(1).integers(0, 255, (16, *atari.FRAME_SHAPE)),
      tf.uint8,
    )
    step = tf.function(distiller.train_step)
    first = step(frames)
    for _ in range(20):
      last = step(frames)
    self.assertLess(last["value_loss"], first["value_loss"])
    if weight == 0.0:
      self.assertNotIn("d1_loss", last)  # regular distillation skips it
    else:
      # The KL of log-probabilities is unit-free and left alone; the
      # Sobolev term is relative to the teacher's gradients.
      self.assertAllClose(last["value_normalized_loss"], last["value_loss"])
      self.assertAllClose(
        last["loss"],
        last["value_loss"] + weight * last["d1_normalized_loss"],
      )

  def test_seed_fixes_the_student_whatever_ran_before(self):
    teacher = _teacher()
    config = distillation.Config(4)
    first = distillation.Distiller(config, teacher, seed=5).student
    tf.random.set_seed(3)
    tf.random.normal([4])
    again = distillation.Distiller(config, teacher, seed=5).student
    other = distillation.Distiller(config, teacher, seed=6).student
    for a, b, c in zip(
      first.variables, again.variables, other.variables, strict=True
    ):
      self.assertAllEqual(a, b)
      if "/w:" in a.name:
        self.assertNotAllEqual(a, c)


class PolicyMetricsTest(tf.test.TestCase):
  def test_against_hand_computed_values(self):
    # Teacher policies (1/4, 3/4) and (2/3, 1/3); student (1/2, 1/2) twice.
    teacher = np.log([[1.0, 3.0], [2.0, 1.0]])
    student = np.zeros([2, 2])
    metrics = distillation.policy_metrics(student, teacher)
    # Argmax: teacher 1 and 0, student 0 and 0 (ties take the first).
    self.assertAllClose(metrics["action_error"], 0.5)
    kl = [
      0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5),
      2 / 3 * math.log((2 / 3) / 0.5) + 1 / 3 * math.log((1 / 3) / 0.5),
    ]
    self.assertAllClose(metrics["kl"], np.mean(kl), rtol=1e-5)
    same = distillation.policy_metrics(teacher, teacher)
    self.assertEqual(same["action_error"], 0.0)
    self.assertAllClose(same["kl"], 0.0, atol=1e-7)


if __name__ == "__main__":
  tf.test.main()
