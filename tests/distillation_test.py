"""Tests for recording and distillation (paper Sec. 4.2)."""

import json
import os
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from sobolev_tf import derivatives
from sobolev_tf import testing
from sobolev_tf.layers import atari
from sobolev_tf.tasks import a2c
from sobolev_tf.tasks import distillation


class FakeEnv:
  """Vector env of random frames whose episodes last 3 to 6 steps."""

  def __init__(self, num_envs=3):
    self.num_envs = num_envs
    self._rng = np.random.default_rng(0)

  def _observe(self):
    return self._rng.integers(
      0, 255, (self.num_envs, *atari.FRAME_SHAPE), dtype=np.uint8
    )

  def reset(self, seed=None):
    self._rng = np.random.default_rng(seed)
    self._left = self._rng.integers(3, 7, self.num_envs)
    return self._observe(), {}

  def step(self, actions):
    del actions
    self._left -= 1
    done = self._left == 0
    self._left[done] = self._rng.integers(3, 7, done.sum())
    return (
      self._observe(),
      np.zeros(self.num_envs),
      done,
      np.zeros_like(done),
      {},
    )


def _teacher(num_actions=4):
  teacher = atari.AtariTeacher(num_actions)
  teacher(tf.zeros([1, *atari.FRAME_SHAPE], tf.uint8))
  return teacher


class RecordTest(tf.test.TestCase):
  def test_records_states_logits_and_episodes(self):
    teacher = _teacher()
    data = distillation.record(
      lambda frames: teacher.policy_logits(frames).numpy(), FakeEnv(), 40
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
    v = derivatives.sample_directions(
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
    self.assertLess(last["value"], first["value"])
    if weight == 0.0:
      self.assertNotIn("d1", last)  # regular distillation skips the term
    metrics = distillation.policy_metrics(
      distiller.student(frames), teacher.policy_logits(frames)
    )
    self.assertBetween(metrics["action_error"], 0.0, 1.0)
    self.assertGreaterEqual(metrics["kl"], 0.0)


class LauncherTest(tf.test.TestCase):
  def test_record_and_distil_end_to_end(self):
    workdir = tempfile.mkdtemp(dir=self.get_temp_dir())
    teacher_path = os.path.join(workdir, "teacher.npz")
    a2c.save_weights(_teacher(num_actions=4), teacher_path)  # Breakout: 4
    output = testing.run_launcher(
      "launch.distill",
      [
        f"--workdir={workdir}",
        "--game=breakout",
        f"--teacher={teacher_path}",
        "--num_states=64",
        "--num_envs=4",
        "--test_fraction=0.3",
        "--fractions=0.5,1.0",
        "--seeds=1",
        "--steps=6",
        "--eval_every=3",
        "--batch_size=8",
        "--play_episodes=2",
      ],
    )
    self.assertIn("| 0.5 |", output)
    for name in ("recording.npz", "table.md", "figure4.png", "results.jsonl"):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    with np.load(os.path.join(workdir, "recording.npz")) as data:
      self.assertEqual(data["frames"].shape, (64, *atari.FRAME_SHAPE))
    with open(os.path.join(workdir, "results.jsonl")) as f:
      records = [json.loads(line) for line in f]
    self.assertLen(records, 4)
    self.assertEqual([p["step"] for p in records[0]["curve"]], [3, 6])
    for record in records:
      self.assertLen(record["scores"], 2)
    with open(os.path.join(workdir, "play_reference.json")) as f:
      reference = json.load(f)
    self.assertEqual(set(reference), {"teacher", "random"})
    self.assertLen(reference["random"], 2)
    self.assertIn("| | | teacher | | |", output)


if __name__ == "__main__":
  tf.test.main()
