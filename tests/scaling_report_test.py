"""Tests for benchmarks.scaling_report: tables, slopes and the figure."""

import os

from absl.testing import parameterized
from matplotlib import image
import tensorflow as tf

from benchmarks import scaling_point
from benchmarks import scaling_report


def _result(framework, input_dim, kind, seconds=None, status="ok"):
  point = scaling_point.Point(framework, input_dim, 4, kind)
  if seconds is None:
    return scaling_point.Result(point, status, "over budget")
  measurements = {
    "seconds_per_step": seconds,
    "repeat_seconds": [seconds * point.steps] * point.repeats,
    "warm_up_seconds": 2.0,
    "baseline_rss_bytes": 100 * 2**20,
    "peak_rss_bytes": (100 + input_dim) * 2**20,
  }
  return scaling_point.Result(point, "ok", measurements=measurements)


def _results():
  """Full cost linear in d until memory runs out; stochastic cost flat."""
  return [
    _result("jax", 2, "full_o1", 0.002),
    _result("jax", 8, "full_o1", 0.008),
    _result("jax", 32, "full_o1", status="memory"),
    _result("jax", 2, "stochastic_o1", 0.003),
    _result("jax", 8, "stochastic_o1", 0.003),
    _result("jax", 32, "stochastic_o1", 0.003),
    _result("tf_xla", 8, "stochastic_o2", 0.005),
  ]


class ScalingReportTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.parameters(
    ([1.0, 1.0, 1.0], 0.0),
    ([2.0, 8.0, 32.0], 1.0),
    ([4.0, 64.0, 1024.0], 2.0),
  )
  def test_loglog_slope(self, values, slope):
    self.assertAllClose(
      scaling_report.loglog_slope([2, 8, 32], values), slope, atol=1e-12
    )

  def test_loglog_slope_needs_two_sizes(self):
    self.assertIsNone(scaling_report.loglog_slope([8], [1.0]))
    self.assertIsNone(scaling_report.loglog_slope([8, 16], [1.0, 0.0]))

  def test_time_table_has_a_line_per_series_and_budget_cells(self):
    lines = scaling_report.pivot_table(_results(), "time").splitlines()
    self.assertEqual(lines[0], "**Milliseconds per step**")
    self.assertEqual(
      lines[2],
      "| order | mode | outputs | framework | d=2 | d=8 | d=32 | slope in d |",
    )
    self.assertEqual(
      lines[4:],
      [
        "| 1 | full | 4 | JAX | 2 | 8 | mem | 1.00 |",
        "| 1 | stochastic | 4 | JAX | 3 | 3 | 3 | 0.00 |",
        "| 2 | stochastic | 4 | TF, XLA | - | 5 | - | - |",
      ],
    )
    for line in lines[2:]:
      self.assertEqual(line.count("|"), 9, line)

  def test_memory_table_gives_growth_over_baseline(self):
    lines = scaling_report.pivot_table(_results(), "memory").splitlines()
    self.assertEqual(lines[4], "| 1 | full | 4 | JAX | 2 | 8 | mem |")

  def test_markdown_has_header_and_every_table(self):
    text = scaling_report.markdown(_results(), ["# Title", "- a setting"])
    self.assertTrue(text.startswith("# Title\n- a setting\n\n"))
    for title, _ in scaling_report.QUANTITIES.values():
      self.assertIn(f"**{title}**", text)

  def test_figure_has_a_row_per_output_size_and_a_panel_per_quantity(self):
    path = os.path.join(self.get_temp_dir(), "scaling.png")
    scaling_report.write_figure(_results(), path)
    height, width, _ = image.imread(path).shape
    # One output size; time and memory for orders 1 and 2; 72 dpi.
    self.assertEqual((height, width), (int(2.4 * 72), int(4 * 3.2 * 72)))


if __name__ == "__main__":
  tf.test.main()
