"""Tests for launch.common."""

import json
import types

from absl import flags
from absl.testing import parameterized
import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402
import tensorflow as tf  # noqa: E402

from launch import common  # noqa: E402
from sobolev_tf import testing  # noqa: E402

testing.configure_logical_cpus(2)


def _on_cluster(task_type, task_id, cluster):
  """A stand-in strategy whose cluster resolver names this task."""
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
    tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
  )
  return types.SimpleNamespace(cluster_resolver=resolver)


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

  def test_unknown_strategy(self):
    with self.assertRaisesRegex(
      ValueError,
      r"one of \['default', 'one_device', 'mirrored', "
      r"'multi_worker_mirrored', 'tpu'\]. Received: strategy='gpu'",
    ):
      common.make_strategy("gpu")

  def test_negative_gpus(self):
    with self.assertRaisesRegex(ValueError, r"num_gpus=-1"):
      common.make_strategy("mirrored", num_gpus=-1)

  def test_barrier_returns_under_any_local_strategy(self):
    common.barrier(tf.distribute.get_strategy())
    common.barrier(testing.mirrored_strategy())


class ChiefTest(tf.test.TestCase):
  def test_worker_zero_leads_a_cluster_of_workers(self):
    workers = {"worker": ["a:1", "b:1", "c:1"]}
    self.assertTrue(common.is_chief(_on_cluster("worker", 0, workers)))
    self.assertFalse(common.is_chief(_on_cluster("worker", 2, workers)))
    self.assertEqual(common.task_id(_on_cluster("worker", 2, workers)), 2)

  def test_a_chief_task_leads_its_workers(self):
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    self.assertTrue(common.is_chief(_on_cluster("chief", 0, cluster)))
    self.assertFalse(common.is_chief(_on_cluster("worker", 0, cluster)))

  def test_without_a_cluster_the_only_task_leads(self):
    self.assertTrue(common.is_chief(tf.distribute.get_strategy()))
    self.assertIsNone(common.task_id(tf.distribute.get_strategy()))


class ResultStoreTest(tf.test.TestCase):
  def _path(self, name):
    return f"ram://results_{self._testMethodName}/{name}.jsonl"

  def test_round_trip_and_first_record_wins(self):
    store = common.ResultStore(self._path("a"))
    self.assertEqual(store.records(), [])
    store.add({"run_id": "a", "x": 1})
    store.add({"run_id": "b", "x": 2})
    store.add({"run_id": "a", "x": 3})
    self.assertEqual(
      store.records(), [{"run_id": "a", "x": 1}, {"run_id": "b", "x": 2}]
    )
    self.assertEqual(store.finished(), {"a", "b"})

  def test_a_line_cut_by_a_crash_does_not_swallow_the_next_record(self):
    path = self._path("cut")
    common.write_file(path, json.dumps({"run_id": "a"}) + '\n{"run_id": "b"')
    store = common.ResultStore(path)
    with self.assertLogs(level="WARNING") as logs:
      self.assertEqual(store.finished(), {"a"})
    self.assertIn(f"line 2 of {path}: incomplete JSON", logs.output[0])
    store.add({"run_id": "b", "x": 2})
    with self.assertLogs(level="WARNING"):
      self.assertEqual(
        store.records(), [{"run_id": "a"}, {"run_id": "b", "x": 2}]
      )

  def test_lines_that_are_not_records_are_skipped_and_reported(self):
    path = self._path("bad")
    lines = [
      b'{"run_id": "a"}',
      b"[1, 2]",
      b'{"x": 1}',
      b'{"run_id": 3}',
      b'"text"',
      b"\xff\xfe\x00 not text",
      b'{"run_id": "b"}',
    ]
    common.write_file(path, b"\n".join(lines) + b"\n")
    with self.assertLogs(level="WARNING") as logs:
      records = common.ResultStore(path).records()
    self.assertEqual(records, [{"run_id": "a"}, {"run_id": "b"}])
    self.assertLen(logs.output, 5)
    self.assertIn("line 2 of", logs.output[0])
    self.assertIn("not a result record", logs.output[0])
    self.assertIn("line 6 of", logs.output[4])
    self.assertIn("not UTF-8", logs.output[4])

  def test_writes_whole_files_only(self):
    store = common.ResultStore(self._path("whole"))
    store.add({"run_id": "a"})
    store.add({"run_id": "b"})
    directory = f"ram://results_{self._testMethodName}"
    self.assertEqual(tf.io.gfile.listdir(directory), ["whole.jsonl"])

  def test_record_needs_a_string_run_id(self):
    store = common.ResultStore(self._path("c"))
    for record in ({"x": 1}, {"run_id": 7}):
      with self.assertRaisesRegex(ValueError, "string 'run_id'"):
        store.add(record)


class FilesTest(tf.test.TestCase):
  def test_write_file_makes_directories_and_replaces(self):
    path = "ram://files/deep/er/file.txt"
    common.write_file(path, "first")
    common.write_file(path, b"second \xff")
    self.assertEqual(common.read_file(path), b"second \xff")
    self.assertEqual(tf.io.gfile.listdir("ram://files/deep/er"), ["file.txt"])

  def test_save_figure_writes_a_png(self):
    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    common.save_figure(figure, "ram://files/figure.png")
    plt.close(figure)
    self.assertStartsWith(
      common.read_file("ram://files/figure.png"), b"\x89PNG\r\n"
    )

  def test_write_config_holds_every_flag(self):
    flag_values = flags.FlagValues()
    flags.DEFINE_integer(
      "own", 3, "A launcher's flag.", flag_values=flag_values
    )
    common.define_common_flags(flag_values, steps_per_execution=7)
    testing.parse_flags(flag_values, ["--workdir=ram://config", "--own=4"])
    config = common.write_config("ram://config", flag_values, replicas=1)
    with tf.io.gfile.GFile("ram://config/config.json") as f:
      self.assertEqual(json.load(f), config)
    self.assertEqual(config["replicas"], 1)
    self.assertEqual(
      set(config["flags"]),
      {
        "own",
        "workdir",
        "strategy",
        "num_gpus",
        "tpu",
        "cpu_devices",
        "deterministic",
        "steps_per_execution",
        "checkpoints_per_run",
      },
    )
    self.assertEqual(config["flags"]["own"], 4)
    self.assertEqual(config["flags"]["steps_per_execution"], 7)


class FlagChecksTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    self.flag_values = flags.FlagValues()
    flags.DEFINE_list("sizes", ["1"], "Sizes.", flag_values=self.flag_values)
    flags.DEFINE_string("name", "a", "Name.", flag_values=self.flag_values)
    flags.DEFINE_float("rate", 0.1, "Rate.", flag_values=self.flag_values)
    common.check_list_flag(self.flag_values, "sizes", common.positive_int)
    common.check_flag(
      self.flag_values, "name", lambda v: common.one_of(v, ("a", "b"))
    )
    common.check_flag(self.flag_values, "rate", common.positive_number)

  def test_good_values_parse(self):
    testing.parse_flags(
      self.flag_values, ["--sizes=1,20", "--name=b", "--rate=3"]
    )
    self.assertEqual(self.flag_values.sizes, ["1", "20"])

  @parameterized.parameters(
    (
      "--sizes=1,0",
      r"flag --sizes=\['1', '0'\]: expected positive integers, got '0'",
    ),
    ("--sizes=x", "got 'x'"),
    ("--sizes=", "expected at least one value"),
    ("--name=c", r"expected values among \['a', 'b'\], got 'c'"),
    ("--rate=0", "flag --rate=0.0: expected a positive number, got 0.0"),
  )
  def test_bad_values_name_the_flag(self, argument, message):
    with self.assertRaisesRegex(flags.IllegalFlagValueError, message):
      testing.parse_flags(self.flag_values, [argument])


class TablesTest(tf.test.TestCase):
  def test_markdown_table(self):
    self.assertEqual(
      common.markdown_table(["a", "b"], [[1, "x"], [2.5, "–"]]),
      "| a | b |\n|---|---|\n| 1 | x |\n| 2.5 | – |\n",
    )
    with self.assertRaisesRegex(ValueError, "rows of 2 cells.*\\[1\\]"):
      common.markdown_table(["a", "b"], [[1]])

  def test_mean_and_std(self):
    self.assertIsNone(common.mean_and_std([]))
    self.assertAllClose(common.mean_and_std([1.0, 3.0]), (2.0, 1.0))
    self.assertEqual(common.mean_std_cell([1.0, 3.0]), "2.0 ± 1.0")
    self.assertEqual(common.mean_std_cell([0.5], digits=3), "0.500 ± 0.000")
    self.assertEqual(common.mean_std_cell([]), "–")


if __name__ == "__main__":
  tf.test.main()
