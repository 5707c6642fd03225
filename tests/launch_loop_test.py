"""Tests for launch.loop and the resumable regression dataset."""

import os

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from launch import loop
from sobolev_tf import testing
from sobolev_tf.tasks import functions
from sobolev_tf.tasks import regression

testing.configure_logical_cpus(2)


def _data(train_size=24):
  config = regression.RunConfig(
    "booth", 2, train_size, "sobolev", seed=0, steps=40, batch_size=8
  )
  function = functions.get_function("booth")
  (x, y), _ = regression.make_data(config, function)
  return config, function, x, y


def _batches(dataset, count):
  return [x.numpy() for x, _ in dataset.take(count)]


def _build(strategy, config, function, y):
  with strategy.scope():
    model = regression.build_model(config, function, y)
    model.compile(optimizer=regression.build_optimizer(config))
    model.optimizer.build(model.trainable_variables)
  return model


def _train(strategy, directory, num_steps, checkpoint_every=10, data=None):
  config, function, x, y = data or _data()
  model = _build(strategy, config, function, y)
  history = loop.train(
    strategy,
    model.train_step,
    lambda context, step: regression.train_dataset(
      x, y, config.batch_size, config.seed, step, context
    ),
    model.optimizer.iterations,
    num_steps,
    loop.Checkpointer(
      tf.train.Checkpoint(model=model, optimizer=model.optimizer), directory
    ),
    checkpoint_every=checkpoint_every,
    steps_per_loop=4,
    summary_dir=os.path.join(directory, "summaries"),
    reset_fn=model.reset_metrics,
  )
  return model, history


def _input_context(pipelines, pipeline, replicas):
  return tf.distribute.InputContext(
    num_input_pipelines=pipelines,
    input_pipeline_id=pipeline,
    num_replicas_in_sync=replicas,
  )


class TrainDatasetTest(tf.test.TestCase):
  def test_batch_k_depends_only_on_seed_and_k(self):
    _, _, x, y = _data()
    full = _batches(regression.train_dataset(x, y, 8, seed=3), 10)
    resumed = _batches(regression.train_dataset(x, y, 8, 3, start_step=7), 3)
    self.assertAllEqual(np.stack(resumed), np.stack(full[7:10]))
    other_seed = _batches(regression.train_dataset(x, y, 8, seed=4), 10)
    self.assertNotAllEqual(np.stack(other_seed), np.stack(full))

  def test_every_pass_is_a_permutation_of_the_data(self):
    _, _, x, y = _data(train_size=24)
    passes = np.concatenate(
      _batches(regression.train_dataset(x, y, 8, seed=0), 6)
    )
    for first in (0, 24):
      self.assertAllEqual(
        np.sort(passes[first : first + 24], axis=0), np.sort(x, axis=0)
      )
    self.assertNotAllEqual(passes[:24], passes[24:])

  def test_replica_slices_make_the_global_batches(self):
    _, _, x, y = _data()
    full = _batches(regression.train_dataset(x, y, 8, seed=0, start_step=2), 3)
    # Two workers with one replica each: each keeps its own half of every
    # global batch.
    halves = [
      _batches(
        regression.train_dataset(
          x, y, 8, 0, start_step=2, input_context=_input_context(2, worker, 2)
        ),
        3,
      )
      for worker in (0, 1)
    ]
    # One pipeline for two local replicas: consecutive halves.
    local = _batches(
      regression.train_dataset(
        x, y, 8, 0, start_step=2, input_context=_input_context(1, 0, 2)
      ),
      6,
    )
    for k in range(3):
      self.assertAllEqual(np.concatenate([halves[0][k], halves[1][k]]), full[k])
      self.assertAllEqual(np.concatenate(local[2 * k : 2 * k + 2]), full[k])

  def test_batch_must_divide_among_replicas(self):
    _, _, x, y = _data()
    with self.assertRaisesRegex(ValueError, "not divisible"):
      regression.train_dataset(
        x, y, 7, 0, input_context=_input_context(1, 0, 2)
      )


class TrainTest(tf.test.TestCase, parameterized.TestCase):
  def test_trains_logs_and_checkpoints(self):
    directory = self.get_temp_dir() + "/trains"
    model, history = _train(tf.distribute.get_strategy(), directory, 20)
    self.assertEqual(
      [entry["step"] for entry in history], [4, 8, 10, 14, 18, 20]
    )
    self.assertEqual(int(model.optimizer.iterations), 20)
    self.assertLess(history[-1]["loss"], history[0]["loss"])
    self.assertEqual(
      tf.train.latest_checkpoint(directory), os.path.join(directory, "ckpt-20")
    )
    self.assertNotEmpty(tf.io.gfile.glob(directory + "/summaries/events.*"))

  def test_resumed_training_ends_with_uninterrupted_weights(self):
    strategy = tf.distribute.get_strategy()
    straight, _ = _train(strategy, self.get_temp_dir() + "/straight", 30)
    interrupted = self.get_temp_dir() + "/interrupted"
    _train(strategy, interrupted, 20)
    # A new model in the same directory: restores step 20, optimiser state
    # and data position, then trains the last 10 steps.
    resumed, history = _train(strategy, interrupted, 30)
    self.assertEqual(history[0]["step"], 24)
    for a, b in zip(straight.weights, resumed.weights, strict=True):
      self.assertAllClose(a, b, rtol=1e-6, atol=1e-6)

  def test_finished_training_does_nothing(self):
    directory = self.get_temp_dir() + "/finished"
    _train(tf.distribute.get_strategy(), directory, 10)
    model, history = _train(tf.distribute.get_strategy(), directory, 10)
    self.assertEqual(history, [])
    self.assertEqual(int(model.optimizer.iterations), 10)

  def test_two_replicas_match_one(self):
    _, one = _train(
      tf.distribute.get_strategy(), self.get_temp_dir() + "/1", 12
    )
    _, two = _train(testing.mirrored_strategy(), self.get_temp_dir() + "/2", 12)
    self.assertAllClose(
      [entry["loss"] for entry in one],
      [entry["loss"] for entry in two],
      rtol=1e-4,
    )

  def test_step_fn_must_advance_the_counter(self):
    counter = tf.Variable(0, dtype=tf.int64)
    checkpointer = loop.Checkpointer(
      tf.train.Checkpoint(counter=counter), self.get_temp_dir() + "/stuck"
    )
    with self.assertRaisesRegex(RuntimeError, "went from 0 to 0 in 2 steps"):
      loop.train(
        tf.distribute.get_strategy(),
        lambda batch: {"loss": tf.reduce_sum(batch)},
        lambda context, step: tf.data.Dataset.range(10).repeat(),
        counter,
        num_steps=4,
        checkpointer=checkpointer,
        checkpoint_every=2,
        steps_per_loop=2,
      )

  @parameterized.parameters("num_steps", "checkpoint_every", "steps_per_loop")
  def test_non_positive_argument_is_an_error(self, name):
    arguments = dict(num_steps=4, checkpoint_every=2, steps_per_loop=2)
    arguments[name] = 0
    counter = tf.Variable(0, dtype=tf.int64)
    with self.assertRaisesRegex(ValueError, f"Received: {name}=0"):
      loop.train(
        tf.distribute.get_strategy(),
        lambda batch: {},
        lambda context, step: tf.data.Dataset.range(1),
        counter,
        checkpointer=loop.Checkpointer(
          tf.train.Checkpoint(counter=counter), self.get_temp_dir() + "/x"
        ),
        **arguments,
      )


class CheckpointerTest(tf.test.TestCase):
  def test_non_chief_writes_scratch_and_reads_the_chiefs(self):
    directory = self.get_temp_dir() + "/workers"
    value = tf.Variable(1.0)
    chief = loop.Checkpointer(tf.train.Checkpoint(value=value), directory)
    chief.save(1)
    value.assign(5.0)
    worker = loop.Checkpointer(
      tf.train.Checkpoint(value=value), directory, chief=False, worker=1
    )
    worker.save(2)
    self.assertFalse(
      os.path.exists(os.path.join(directory, "worker_1_scratch"))
    )
    self.assertEqual(worker.restore(), os.path.join(directory, "ckpt-1"))
    self.assertEqual(float(value), 1.0)

  def test_nothing_to_restore(self):
    checkpointer = loop.Checkpointer(
      tf.train.Checkpoint(value=tf.Variable(1.0)), self.get_temp_dir() + "/new"
    )
    self.assertIsNone(checkpointer.restore())


if __name__ == "__main__":
  tf.test.main()
