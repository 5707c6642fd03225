"""Tests for launch.files."""

import json

from absl import flags
import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402
import tensorflow as tf  # noqa: E402

from launch import common  # noqa: E402
from launch import files  # noqa: E402
from sobolev_tf import testing  # noqa: E402


class ResultStoreTest(tf.test.TestCase):
  def _path(self, name):
    return f"ram://results_{self._testMethodName}/{name}.jsonl"

  def test_round_trip_and_first_record_wins(self):
    store = files.ResultStore(self._path("a"))
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
    files.write_file(path, json.dumps({"run_id": "a"}) + '\n{"run_id": "b"')
    store = files.ResultStore(path)
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
    files.write_file(path, b"\n".join(lines) + b"\n")
    with self.assertLogs(level="WARNING") as logs:
      records = files.ResultStore(path).records()
    self.assertEqual(records, [{"run_id": "a"}, {"run_id": "b"}])
    self.assertLen(logs.output, 5)
    self.assertIn("line 2 of", logs.output[0])
    self.assertIn("not a result record", logs.output[0])
    self.assertIn("line 6 of", logs.output[4])
    self.assertIn("not UTF-8", logs.output[4])

  def test_writes_whole_files_only(self):
    store = files.ResultStore(self._path("whole"))
    store.add({"run_id": "a"})
    store.add({"run_id": "b"})
    directory = f"ram://results_{self._testMethodName}"
    self.assertEqual(tf.io.gfile.listdir(directory), ["whole.jsonl"])

  def test_record_needs_a_string_run_id(self):
    store = files.ResultStore(self._path("c"))
    for record in ({"x": 1}, {"run_id": 7}):
      with self.assertRaisesRegex(ValueError, "string 'run_id'"):
        store.add(record)


class FilesTest(tf.test.TestCase):
  def test_write_file_makes_directories_and_replaces(self):
    path = "ram://files/deep/er/file.txt"
    files.write_file(path, "first")
    files.write_file(path, b"second \xff")
    self.assertEqual(files.read_file(path), b"second \xff")
    self.assertEqual(tf.io.gfile.listdir("ram://files/deep/er"), ["file.txt"])

  def test_save_figure_writes_a_png(self):
    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    files.save_figure(figure, "ram://files/figure.png")
    plt.close(figure)
    self.assertStartsWith(
      files.read_file("ram://files/figure.png"), b"\x89PNG\r\n"
    )

  def test_write_config_holds_every_flag(self):
    flag_values = flags.FlagValues()
    flags.DEFINE_integer(
      "own", 3, "A launcher's flag.", flag_values=flag_values
    )
    common.define_common_flags(flag_values, steps_per_execution=7)
    testing.parse_flags(flag_values, ["--workdir=ram://config", "--own=4"])
    config = files.write_config("ram://config", flag_values, replicas=1)
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
        "checkpoint_secs",
      },
    )
    self.assertEqual(config["flags"]["own"], 4)
    self.assertEqual(config["flags"]["steps_per_execution"], 7)


class TablesTest(tf.test.TestCase):
  def test_markdown_table(self):
    self.assertEqual(
      files.markdown_table(["a", "b"], [[1, "x"], [2.5, "–"]]),
      "| a | b |\n|---|---|\n| 1 | x |\n| 2.5 | – |\n",
    )
    with self.assertRaisesRegex(ValueError, "rows of 2 cells.*\\[1\\]"):
      files.markdown_table(["a", "b"], [[1]])

  def test_mean_and_std(self):
    self.assertIsNone(files.mean_and_std([]))
    self.assertAllClose(files.mean_and_std([1.0, 3.0]), (2.0, 1.0))
    self.assertEqual(files.mean_std_cell([1.0, 3.0]), "2.0 ± 1.0")
    self.assertEqual(files.mean_std_cell([0.5], digits=3), "0.500 ± 0.000")
    self.assertEqual(files.mean_std_cell([]), "–")


if __name__ == "__main__":
  tf.test.main()
