"""Tests for launch.strategies."""

import types

from absl.testing import parameterized
import tensorflow as tf

from launch import strategies
from sobolev_tf import testing

testing.configure_logical_cpus(2)


def _on_cluster(task_type, task_id, cluster):
  """A stand-in strategy whose cluster resolver names this task."""
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
    tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
  )
  return types.SimpleNamespace(cluster_resolver=resolver)


class MakeStrategyTest(tf.test.TestCase, parameterized.TestCase):
  def test_default(self):
    self.assertIs(
      strategies.make_strategy("default"), tf.distribute.get_strategy()
    )

  def test_one_device(self):
    strategy = strategies.make_strategy("one_device")
    self.assertIsInstance(strategy, tf.distribute.OneDeviceStrategy)
    self.assertEqual(strategy.num_replicas_in_sync, 1)

  def test_mirrored_over_logical_cpus(self):
    strategy = strategies.make_strategy("mirrored")
    self.assertIsInstance(strategy, tf.distribute.MirroredStrategy)
    self.assertEqual(strategy.num_replicas_in_sync, 2)

  def test_unknown_strategy(self):
    with self.assertRaisesRegex(
      ValueError,
      r"one of \['default', 'one_device', 'mirrored', "
      r"'multi_worker_mirrored', 'tpu'\]. Received: strategy='gpu'",
    ):
      strategies.make_strategy("gpu")

  def test_negative_gpus(self):
    with self.assertRaisesRegex(ValueError, r"num_gpus=-1"):
      strategies.make_strategy("mirrored", num_gpus=-1)

  def test_barrier_returns_under_any_local_strategy(self):
    strategies.barrier(tf.distribute.get_strategy())
    strategies.barrier(testing.mirrored_strategy())


class ChiefTest(tf.test.TestCase):
  def test_worker_zero_leads_a_cluster_of_workers(self):
    workers = {"worker": ["a:1", "b:1", "c:1"]}
    self.assertTrue(strategies.is_chief(_on_cluster("worker", 0, workers)))
    self.assertFalse(strategies.is_chief(_on_cluster("worker", 2, workers)))
    self.assertEqual(strategies.task_id(_on_cluster("worker", 2, workers)), 2)

  def test_a_chief_task_leads_its_workers(self):
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    self.assertTrue(strategies.is_chief(_on_cluster("chief", 0, cluster)))
    self.assertFalse(strategies.is_chief(_on_cluster("worker", 0, cluster)))

  def test_without_a_cluster_the_only_task_leads(self):
    self.assertTrue(strategies.is_chief(tf.distribute.get_strategy()))
    self.assertIsNone(strategies.task_id(tf.distribute.get_strategy()))

  def test_distributed_is_several_replicas_or_a_cluster(self):
    self.assertFalse(strategies.is_distributed(tf.distribute.get_strategy()))
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    self.assertTrue(strategies.is_distributed(mirrored))
    worker = _on_cluster("worker", 1, {"worker": ["a:1", "b:1"]})
    worker.num_replicas_in_sync = 1
    self.assertTrue(strategies.is_distributed(worker))


if __name__ == "__main__":
  tf.test.main()
