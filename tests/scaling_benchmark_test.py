"""Tests for benchmarks.scaling_benchmark: one process per point, budgets."""

import os
import statistics
import tempfile
import unittest

import tensorflow as tf

from benchmarks import scaling_point

try:
  from benchmarks import scaling_benchmark
except ModuleNotFoundError as error:
  if error.name not in ("jax", "jaxlib"):
    raise
  scaling_benchmark = None

_MIB = 2**20


def _point(framework="jax", input_dim=2, kind="stochastic_o1", **kwargs):
  settings = {"num_outputs": 1, "batch_size": 4, "steps": 2, "repeats": 2}
  settings.update(kwargs)
  return scaling_point.Point(framework, input_dim, kind=kind, **settings)


@unittest.skipIf(
  scaling_benchmark is None,
  "JAX is not installed; the benchmarks need the `bench` extra: "
  'pip install -c requirements.txt -e ".[bench]"',
)
class ScalingBenchmarkTest(tf.test.TestCase):
  def test_sweep_measures_each_point_and_writes_report(self):
    points = [_point("jax"), _point("tf_graph", kind="full_o1")]
    results = scaling_benchmark.run_sweep(points, 4 * 2**30, 300)
    for result in results:
      self.assertEqual(result.status, "ok", result.detail)
      measured = result.measurements
      self.assertLen(measured["repeat_seconds"], 2)
      self.assertAllClose(
        measured["seconds_per_step"],
        statistics.median(measured["repeat_seconds"]) / 2,
      )
      self.assertGreaterEqual(
        measured["peak_rss_bytes"], measured["baseline_rss_bytes"]
      )
    jax_result, tf_result = results
    # Each process loads only its own framework: TensorFlow is the heavier.
    self.assertGreater(
      tf_result.measurements["baseline_rss_bytes"],
      jax_result.measurements["baseline_rss_bytes"],
    )
    directory = tempfile.mkdtemp(dir=self.get_temp_dir())
    output = os.path.join(directory, "scaling.md")
    figure = os.path.join(directory, "scaling.png")
    text = scaling_benchmark.write_report(
      results, ["# Scaling"], output, figure
    )
    with open(output) as written:
      self.assertEqual(written.read(), text)
    self.assertIn("| 1 | full | 1 | TF, no XLA |", text)
    self.assertIn("| 1 | stochastic | 1 | JAX |", text)
    with open(figure, "rb") as png:
      self.assertEqual(png.read(8), b"\x89PNG\r\n\x1a\n")

  def test_point_over_memory_budget_stops_its_series(self):
    points = [_point(input_dim=2), _point(input_dim=4), _point(num_outputs=2)]
    results = scaling_benchmark.run_sweep(points, 50 * _MIB, 300)
    self.assertEqual([r.status for r in results], ["memory"] * 3)
    self.assertEqual(results[0].detail, "over 50 MiB")
    self.assertEqual(results[1].detail, "not run: over budget at d=2")
    # Another series (other outputs) is run, and stopped on its own.
    self.assertEqual(results[2].detail, "over 50 MiB")

  def test_full_order_one_below_outputs_does_not_stop_its_series(self):
    def stops(input_dim, kind):
      point = _point(input_dim=input_dim, kind=kind, num_outputs=8)
      return scaling_benchmark.stops_series(point)

    # Forward mode below d = outputs, reverse mode from there on.
    self.assertFalse(stops(4, "full_o1"))
    self.assertTrue(stops(8, "full_o1"))
    self.assertTrue(stops(4, "full_o2"))
    self.assertTrue(stops(4, "stochastic_o1"))

  def test_point_over_time_budget_is_stopped(self):
    result = scaling_benchmark.run_point(_point(), 4 * 2**30, 0.2)
    self.assertEqual((result.status, result.detail), ("time", "over 0.2 s"))
    self.assertIsNone(result.measurements)

  def test_point_whose_targets_exceed_budget_is_not_started(self):
    point = _point(input_dim=1024, kind="full_o2", num_outputs=64)
    result = scaling_benchmark.run_point(point, 2**30, 300)
    # float32 value, Jacobian and Hessian: 4 * 4 * 64 * (1 + 1024 + 1024^2).
    self.assertEqual(
      (result.status, result.detail),
      ("memory", "not run: targets alone need 1,025 MiB"),
    )

  def test_failed_process_reports_last_error_line(self):
    self.assertEqual(
      scaling_benchmark.error_detail("Traceback\n  ...\nValueError: bad\n", 1),
      ("error", "ValueError: bad"),
    )
    self.assertEqual(
      scaling_benchmark.error_detail("x\nResourceExhaustedError: OOM\n", 1),
      ("memory", "ResourceExhaustedError: OOM"),
    )
    self.assertEqual(
      scaling_benchmark.error_detail("", 1), ("error", "exit status 1")
    )
    self.assertEqual(
      scaling_benchmark.error_detail("ValueError: bad\n", -9),
      ("error", "killed by signal 9"),
    )

  def test_sweep_points_put_smaller_dims_first(self):
    points = scaling_benchmark.sweep_points(
      [8, 2], [1, 4], ["full_o1"], ["jax", "tf_xla"], batch_size=4
    )
    self.assertLen(points, 8)
    self.assertEqual([p.input_dim for p in points], [2] * 4 + [8] * 4)
    self.assertEqual(points[0], _point(kind="full_o1", steps=10, repeats=3))


if __name__ == "__main__":
  tf.test.main()
