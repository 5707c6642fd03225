"""Tests for launch.regression_budget: the budget study's table and figures."""

import json
import os

from absl.testing import absltest
import tensorflow as tf

from launch import files
from launch import regression_budget
from sobolev_tf import testing


def _record(method, steps, seed, mse, gradient_mse):
  curve = [
    {"step": s, "test_mse": mse * steps / s, "test_gradient_mse": gradient_mse}
    for s in (steps // 2, steps)
  ]
  return {
    "run_id": f"booth-{method}-{steps}-{seed}",
    "function": "booth",
    "dim": 2,
    "train_size": 20,
    "method": method,
    "seed": seed,
    "steps": steps,
    "test_mse": mse,
    "test_gradient_mse": gradient_mse,
    "curve": curve,
  }


def _write(workdir, records):
  files.write_file(
    os.path.join(workdir, "results.jsonl"),
    "".join(json.dumps(record) + "\n" for record in records),
  )


class BudgetTest(tf.test.TestCase):
  def setUp(self):
    super().setUp()
    self.root = "ram://budget_" + self.id()
    # Sobolev 10x better at 100 steps, 1000x at 1000; a stochastic run too.
    _write(
      self.root + "/short",
      [
        _record("regular", 100, 0, 10.0, 1.0),
        _record("sobolev", 100, 0, 1.0, 1.0),
        _record("regular", 100, 1, 10.0, 1.0),
        _record("sobolev", 100, 1, 1.0, 1.0),
        {**_record("stochastic", 100, 0, 5.0, 1.0), "run_id": "x"},
      ],
    )
    _write(
      self.root + "/long",
      [
        _record("regular", 1000, 0, 1.0, 10.0),
        _record("sobolev", 1000, 0, 1e-3, 1.0),
      ],
    )

  def test_gaps_per_budget(self):
    records = regression_budget.load(
      [self.root + "/short", self.root + "/long"]
    )
    self.assertLen(records, 6)
    groups = regression_budget.group(records)
    self.assertAlmostEqual(
      regression_budget.gap(groups[("booth", 20, 100)], "test_mse"), 1.0
    )
    self.assertAlmostEqual(
      regression_budget.gap(groups[("booth", 20, 1000)], "test_mse"), 3.0
    )
    self.assertAlmostEqual(
      regression_budget.gap(groups[("booth", 20, 1000)], "test_gradient_mse"),
      1.0,
    )
    lines = regression_budget.table(records).splitlines()
    self.assertLen(lines, 4)
    self.assertEqual(
      [cell.strip() for cell in lines[2].split("|")[1:-1]],
      ["booth", "20", "100", "1.00 ± 0.00", "0.00 ± 0.00", "1.00"]
      + ["0.00 ± 0.00", "0.00 ± 0.00", "0.00", "2"],
    )
    self.assertIn("| 3.00 |", lines[3])

  def test_main_writes_table_and_figures(self):
    output = self.root + "/report"
    testing.parse_flags(
      regression_budget.FLAGS,
      [
        "regression_budget",
        f"--workdirs={self.root}/short,{self.root}/long",
        f"--output={output}",
      ],
    )
    regression_budget.main([])
    for name in (
      "budget_gap.png",
      "budget_curves.png",
      "budget_train_curves.png",
    ):
      self.assertTrue(
        files.read_file(os.path.join(output, name)).startswith(b"\x89PNG")
      )
    table = files.read_file(os.path.join(output, "budget_table.md")).decode()
    self.assertIn("| booth | 20 | 1000 |", table)

  def test_best_validation_columns_beside_the_last(self):
    # Validation-selected runs: Sobolev's best evaluation is 100x better
    # than regular's, its last only 10x.
    records = []
    for method, last, best in (("regular", 10.0, 10.0), ("sobolev", 1.0, 0.1)):
      record = _record(method, 100, 0, last, 1.0)
      record.update(best_test_mse=best, best_test_gradient_mse=1.0)
      for point in record["curve"]:
        point.update(train_mse=1.0, train_gradient_mse=1.0)
      records.append(record)
    lines = regression_budget.table(records).splitlines()
    self.assertIn("best-validation gap", lines[0])
    self.assertEqual(
      [cell.strip() for cell in lines[2].split("|")[1:-1]],
      ["booth", "20", "100"]
      + ["1.00 ± 0.00", "0.00 ± 0.00", "1.00"]
      + ["1.00 ± 0.00", "-1.00 ± 0.00", "2.00"]
      + ["0.00 ± 0.00", "0.00 ± 0.00", "0.00"] * 2
      + ["1"],
    )

  def test_workdir_without_records(self):
    with self.assertRaisesRegex(ValueError, "empty.*Received none"):
      regression_budget.load([self.root + "/empty"])


if __name__ == "__main__":
  absltest.main()
