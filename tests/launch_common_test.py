"""Tests for launch.common."""

import json
import os

from absl.testing import parameterized
import tensorflow as tf

from launch import common
from sobolev_tf import testing

testing.configure_logical_cpus(2)


class MakeStrategyTest(tf.test.TestCase, parameterized.TestCase):
  def test_default(self):
    self.assertIs(common.make_strategy("default"), tf.distribute.get_strategy())

  def test_one_device(self):
    strategy = common.make_strategy("one_device")
    self.assertIsInstance(strategy, tf.distribute.OneDeviceStrategy)
    self.assertEqual(strategy.num_replicas_in_sync, 1)

  def test_mirrored_over_logical_cpus(self):
    strategy = common.make_strategy("mirrored")
    self.assertIsInstance(strategy, tf.distribute.MirroredStrategy)
    self.assertEqual(strategy.num_replicas_in_sync, 2)
    self.assertTrue(common.is_chief(strategy))

  def test_unknown_strategy(self):
    with self.assertRaisesRegex(
      ValueError,
      r"one of \['default', 'one_device', 'mirrored', "
      r"'multi_worker_mirrored', 'tpu'\]. Received: strategy='gpu'",
    ):
      common.make_strategy("gpu")

  def test_require_one_replica(self):
    common.require_one_replica(tf.distribute.get_strategy(), "default", "x")
    with self.assertRaisesRegex(
      ValueError,
      r"`strategy`: needs one; use default or one_device. "
      r"Received: strategy='mirrored' with 2 replicas",
    ):
      common.require_one_replica(
        testing.mirrored_strategy(), "mirrored", "needs one"
      )

  def test_negative_gpus(self):
    with self.assertRaisesRegex(ValueError, r"num_gpus=-1"):
      common.make_strategy("mirrored", num_gpus=-1)


class ResultStoreTest(tf.test.TestCase):
  def test_round_trip_and_first_record_wins(self):
    store = common.ResultStore(os.path.join(self.get_temp_dir(), "a.jsonl"))
    self.assertEqual(store.records(), [])
    store.add({"run_id": "a", "x": 1})
    store.add({"run_id": "b", "x": 2})
    store.add({"run_id": "a", "x": 3})
    self.assertEqual(
      store.records(), [{"run_id": "a", "x": 1}, {"run_id": "b", "x": 2}]
    )
    self.assertEqual(store.finished(), {"a", "b"})

  def test_truncated_line_is_ignored(self):
    path = os.path.join(self.get_temp_dir(), "b.jsonl")
    with open(path, "w") as f:
      f.write(json.dumps({"run_id": "a"}) + "\n" + '{"run_id": "b", "x"')
    self.assertEqual(common.ResultStore(path).finished(), {"a"})

  def test_record_needs_run_id(self):
    store = common.ResultStore(os.path.join(self.get_temp_dir(), "c.jsonl"))
    with self.assertRaisesRegex(ValueError, "run_id"):
      store.add({"x": 1})

  def test_write_config(self):
    workdir = os.path.join(self.get_temp_dir(), "w")
    common.write_config(workdir, {"b": 1, "a": [1, 2]})
    with open(os.path.join(workdir, "config.json")) as f:
      self.assertEqual(json.load(f), {"a": [1, 2], "b": 1})

  def test_mean_and_std(self):
    self.assertIsNone(common.mean_and_std([]))
    self.assertAllClose(common.mean_and_std([1.0, 3.0]), (2.0, 1.0))


if __name__ == "__main__":
  tf.test.main()
