"""Tests for sobolev_tf.tasks.distillation_task."""

import tensorflow as tf

from launch import loop
from sobolev_tf import testing
from sobolev_tf.layers import atari
from sobolev_tf.tasks import distillation
from sobolev_tf.tasks import distillation_task

testing.configure_logical_cpus(2)


def _teacher(num_actions=4):
  teacher = atari.AtariTeacher(num_actions)
  teacher(tf.zeros([1, *atari.FRAME_SHAPE], tf.uint8))
  return teacher


def _recording(num_states=60, num_actions=4):
  teacher = _teacher(num_actions)
  data = distillation.record(
    lambda frames: teacher.policy_logits(frames).numpy(),
    testing.FakeAtariEnv(num_envs=3, min_length=3, max_length=6),
    num_states,
  )
  train, test = distillation.split_by_episode(data["episodes"], 0.3)
  recording = distillation_task.Recording(
    frames=tf.constant(data["frames"]),
    logits=data["logits"],
    train=train,
    test=test,
  )
  return teacher, recording


class TaskTest(tf.test.TestCase):
  def test_balance_floor_reaches_the_objective_and_names_the_run(self):
    teacher, recording = _recording()
    path = "ram://distillation_task/floor_teacher.npz"
    atari.save_weights(teacher, path)
    config = distillation_task.RunConfig(
      "pong", 0.5, "sobolev", seed=1, steps=2, balance_floor=0.5
    )
    self.assertEqual(config.run_id, "pong-f0.5-sobolev-f0.5-s1")
    task = distillation_task.DistillationTask(config, path, recording)
    task.build()
    self.assertEqual(task.distiller.objective.config.balance_floor, 0.5)
    default = distillation_task.RunConfig("pong", 0.5, "sobolev", seed=1)
    self.assertEqual(default.run_id, "pong-f0.5-sobolev-s1")

  def test_trains_on_its_share_and_scores_the_test_states(self):
    teacher, recording = _recording()
    path = "ram://distillation_task/teacher.npz"
    atari.save_weights(teacher, path)
    config = distillation_task.RunConfig(
      "breakout", 0.5, "sobolev", seed=2, steps=4, batch_size=4
    )
    task = distillation_task.DistillationTask(config, path, recording)
    self.assertEqual(task.run_id, "breakout-f0.5-sobolev-s2")
    self.assertLen(task.chosen, round(0.5 * len(recording.train)))
    self.assertEmpty(set(task.chosen) - set(recording.train))
    task.build()
    batches = list(
      task.dataset(tf.distribute.InputContext(), start_step=0).take(4)
    )
    for frames in batches:
      self.assertEqual(frames.shape, [4, *atari.FRAME_SHAPE])
      task.train_step(frames)
    self.assertEqual(int(task.step_counter.numpy()), 4)
    resumed = list(task.dataset(tf.distribute.InputContext(), 2).take(2))
    self.assertAllEqual(tf.stack(resumed), tf.stack(batches[2:]))
    metrics = task.evaluate()
    student = task.distiller.student(
      tf.gather(recording.frames, recording.test)
    )
    self.assertEqual(
      metrics,
      distillation.policy_metrics(student, recording.logits[recording.test]),
    )
    record = task.record(metrics)
    self.assertEqual(record["train_states"], len(task.chosen))
    self.assertEqual(record["derivative_weight"], 1.0)
    self.assertEqual(record["balance"], "target_scale")
    self.assertEqual(
      task.finish("ram://distillation_task", True), {"scores": []}
    )

  def test_two_replicas_match_one(self):
    # Regular distillation draws no directions: its weights on two replicas
    # are those of one device, up to float rounding.
    teacher, recording = _recording()
    path = "ram://distillation_replicas/teacher.npz"
    atari.save_weights(teacher, path)
    students = []
    for strategy, name in (
      (tf.distribute.get_strategy(), "one"),
      (testing.mirrored_strategy(), "two"),
    ):
      task = distillation_task.DistillationTask(
        distillation_task.RunConfig(
          "breakout", 1.0, "regular", seed=0, steps=6, batch_size=8
        ),
        path,
        recording,
      )
      loop.run(
        task,
        strategy,
        f"ram://distillation_replicas/{name}",
        loop.Settings(steps_per_execution=3),
      )
      students.append(task.distiller.student.variables)
    for a, b in zip(*students, strict=True):
      self.assertAllClose(a, b, rtol=1e-4, atol=1e-6)

  def test_regular_has_no_sobolev_term(self):
    self.assertEqual(
      distillation_task.RunConfig("pong", 1.0, "regular", 0).weight, 0.0
    )
    self.assertEqual(
      distillation_task.RunConfig(
        "pong", 1.0, "sobolev", 0, derivative_weight=7.0
      ).weight,
      7.0,
    )

  def test_invalid_settings(self):
    for kwargs, received in (
      (dict(method="exact"), "method='exact'"),
      (dict(fraction=0.0), "fraction=0.0"),
      (dict(fraction=1.5), "fraction=1.5"),
      (dict(seed=-1), "seed=-1"),
      (dict(steps=0), "steps=0"),
    ):
      arguments = dict(game="pong", fraction=0.5, method="sobolev", seed=0)
      with self.assertRaisesRegex(ValueError, f"Received: {received}"):
        distillation_task.RunConfig(**{**arguments, **kwargs})


if __name__ == "__main__":
  tf.test.main()
