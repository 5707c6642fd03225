"""Tests for the Atari networks and their weight files."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from sobolev_tf.layers import atari


def _built(module):
  module(tf.zeros([1, *atari.FRAME_SHAPE], tf.uint8))
  return module


def _frames(count, seed=0):
  return np.random.default_rng(seed).integers(
    0, 255, (count, *atari.FRAME_SHAPE), dtype=np.uint8
  )


class NetworkTest(tf.test.TestCase, parameterized.TestCase):
  def test_teacher_shapes_and_parameters(self):
    teacher = atari.AtariTeacher(6)
    frames = tf.zeros([3, *atari.FRAME_SHAPE], tf.uint8)
    logits, values = teacher(frames)
    self.assertEqual(logits.shape, [3, 6])
    self.assertEqual(values.shape, [3])
    self.assertEqual(teacher.features(frames).shape, [3, 512])
    self.assertAllClose(teacher.policy_logits(frames), logits)
    self.assertEqual(atari.num_parameters(teacher), 1_687_719)

  def test_student_shapes_and_parameters(self):
    student = atari.AtariStudent(6)
    logits = student(tf.zeros([3, *atari.FRAME_SHAPE], tf.uint8))
    self.assertEqual(logits.shape, [3, 6])
    self.assertEqual(atari.num_parameters(student), 677_686)

  def test_module_names_are_fixed(self):
    teacher = _built(atari.AtariTeacher(4))
    self.assertIn(
      "atari_teacher/conv_0/w:0", [v.name for v in teacher.variables]
    )

  def test_first_policy_is_near_uniform(self):
    teacher = atari.AtariTeacher(6)
    probabilities = tf.nn.softmax(teacher.policy_logits(_frames(8)))
    self.assertAllClose(probabilities, tf.fill([8, 6], 1 / 6), atol=0.02)

  @parameterized.parameters(atari.AtariTeacher, atari.AtariStudent)
  def test_seed_fixes_the_weights_whatever_ran_before(self, network):
    first = _built(network(4, seed=3))
    tf.random.set_seed(1)
    tf.random.normal([10])
    again = _built(network(4, seed=3))
    other = _built(network(4, seed=4))
    for a, b, c in zip(
      first.variables, again.variables, other.variables, strict=True
    ):
      self.assertAllEqual(a, b)
      if "/w:" in a.name:
        self.assertNotAllEqual(a, c)

  @parameterized.parameters(atari.AtariTeacher, atari.AtariStudent)
  def test_arguments_are_checked(self, network):
    with self.assertRaisesRegex(ValueError, "Received: num_actions=0"):
      network(0)
    with self.assertRaisesRegex(ValueError, "Received: seed=-1"):
      network(4, seed=-1)


class WeightsTest(tf.test.TestCase):
  def test_round_trip_as_float16_on_any_file_system(self):
    teacher = _built(atari.AtariTeacher(4))
    path = "ram://round_trip/teacher.npz"
    atari.save_weights(teacher, path)
    self.assertEqual(tf.io.gfile.listdir("ram://round_trip"), ["teacher.npz"])
    loaded = atari.load_teacher(path, 4)
    for a, b in zip(teacher.variables, loaded.variables, strict=True):
      self.assertAllClose(a, b, atol=1e-3, rtol=1e-3)
      self.assertAllEqual(b, tf.cast(tf.cast(a, tf.float16), tf.float32))

  def test_mismatches_name_the_file(self):
    path = "ram://mismatch/four.npz"
    atari.save_weights(_built(atari.AtariTeacher(4)), path)
    with self.assertRaisesRegex(ValueError, f"{path} do not match"):
      atari.load_weights(_built(atari.AtariStudent(4)), path)
    with self.assertRaisesRegex(ValueError, f"Shape mismatch.*{path}"):
      atari.load_teacher(path, 5)


if __name__ == "__main__":
  tf.test.main()
