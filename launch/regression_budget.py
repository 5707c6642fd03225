r"""The regression budget study: Sobolev training's gain against the budget.

Reads regression sweeps (`launch.regression`) that differ only in `--steps`,
each run with `--eval_every` so that its record carries the curve of its
evaluations (the `eval/test_mse` and `eval/test_gradient_mse` of its
TensorBoard log), and writes to `--output`:

* `budget_table.md`: per function, training size and budget, log10 test MSE
  and test gradient MSE of regular and Sobolev training (mean ± std over
  seeds) and the gap between them (log10 regular − log10 Sobolev: 1 is a
  ten times smaller error with Sobolev training), at the last step and, for
  sweeps run with `--validation_fraction`, at each run's best validation
  evaluation (`best_test_mse`, ...);
* `budget_gap.png`: that gap against the budget, per function;
* `budget_curves.png`: test MSE and test gradient MSE against the step, per
  function and size, mean of log10 over seeds, one line per method and
  budget;
* `budget_train_curves.png`: the same for the value and gradient errors at
  the training points (`train_mse`, `train_gradient_mse`): where they rise
  with the test errors, the optimisation is unstable; where they fall while
  the test errors rise, the network overfits.

    python -m launch.regression_budget \
      --workdirs=workdir/budget_2k,workdir/budget_10k,workdir/budget_50k \
      --output=workdir/budget
"""

import collections
import os
from typing import Any
from typing import Dict
from typing import List
from typing import Sequence
from typing import Tuple

from absl import flags
import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from launch import common  # noqa: E402
from launch import files  # noqa: E402
from launch import regression_report  # noqa: E402

FLAGS = flags.FlagValues()
_WORKDIRS = flags.DEFINE_list(
  "workdirs",
  None,
  "Workdirs of regression sweeps that differ in --steps.",
  flag_values=FLAGS,
)
_OUTPUT = flags.DEFINE_string(
  "output", None, "Directory of the table and figures.", flag_values=FLAGS
)
flags.mark_flags_as_required(["workdirs", "output"], flag_values=FLAGS)

METHODS = ("regular", "sobolev")
Key = Tuple[str, int, int]  # (function, train_size, steps)


def load(workdirs: Sequence[str]) -> List[Dict[str, Any]]:
  """The records of regular and Sobolev runs of every workdir.

  Raises:
    ValueError: if a workdir holds no such record.
  """
  records = []
  for workdir in workdirs:
    found = [
      record
      for record in files.ResultStore(os.path.join(workdir, "results.jsonl"))
      if record.get("method") in METHODS
    ]
    if not found:
      raise ValueError(
        f"Expected regular and Sobolev regression records in {workdir}/"
        "results.jsonl. Received none."
      )
    records += found
  return records


def group(records: Sequence[Dict[str, Any]]) -> Dict[Key, Dict[str, list]]:
  """`(function, train_size, steps) -> method -> records`."""
  groups = collections.defaultdict(lambda: collections.defaultdict(list))
  for record in records:
    key = (record["function"], record["train_size"], record["steps"])
    groups[key][record["method"]].append(record)
  return groups


def _log10(records: Sequence[Dict[str, Any]], metric: str) -> np.ndarray:
  return np.log10([record[metric] for record in records])


def gap(by_method: Dict[str, list], metric: str) -> float:
  """Mean log10 `metric` of regular training minus that of Sobolev."""
  return float(
    _log10(by_method["regular"], metric).mean()
    - _log10(by_method["sobolev"], metric).mean()
  )


def _selected(records: Sequence[Dict[str, Any]]) -> bool:
  return all(
    f"best_{metric}" in record
    for record in records
    for metric, _ in regression_report.METRICS
  )


def table(records: Sequence[Dict[str, Any]]) -> str:
  """The Markdown table of the study.

  With validation-selected runs, each metric has the last step's columns
  and the best validation evaluation's (`best ...`) beside them.
  """
  selected = _selected(records)
  header = ["function", "points", "steps"]
  for _, label in regression_report.METRICS:
    header += [f"{label}: {method}" for method in METHODS] + ["gap"]
    if selected:
      header += [f"best-validation {method}" for method in METHODS]
      header.append("best-validation gap")
  header.append("seeds")
  rows = []
  for key, by_method in sorted(group(records).items()):
    if not all(by_method[method] for method in METHODS):
      continue
    row = list(key)
    for metric, _ in regression_report.METRICS:
      names = [metric] + ([f"best_{metric}"] if selected else [])
      for name in names:
        row += [
          files.mean_std_cell(list(_log10(by_method[method], name)), 2)
          for method in METHODS
        ]
        row.append(f"{gap(by_method, name):.2f}")
    row.append(min(len(by_method[method]) for method in METHODS))
    rows.append(row)
  return files.markdown_table(header, rows)


def gap_figure(records: Sequence[Dict[str, Any]], path: str) -> None:
  """The gap against the budget: one panel per function."""
  groups = group(records)
  functions = sorted({key[0] for key in groups})
  figure, axes = plt.subplots(
    1, len(functions), figsize=(3.2 * len(functions), 3), squeeze=False
  )
  for axis, function in zip(axes[0], functions, strict=True):
    sizes = sorted({key[1] for key in groups if key[0] == function})
    for size in sizes:
      budgets = sorted(k[2] for k in groups if k[:2] == (function, size))
      for metric, what, style in (
        ("test_mse", "value", "-o"),
        ("test_gradient_mse", "gradient", "--s"),
      ):
        axis.plot(
          budgets,
          [gap(groups[(function, size, b)], metric) for b in budgets],
          style,
          label=f"{size} points, {what}",
        )
    axis.axhline(0.0, color="grey", linewidth=0.8)
    axis.set_xscale("log")
    budgets = sorted({key[2] for key in groups if key[0] == function})
    axis.set_xticks(budgets, [f"{budget:,}" for budget in budgets])
    axis.minorticks_off()
    axis.set_title(function)
    axis.set_xlabel("training steps")
  axes[0][0].set_ylabel("log10 regular − log10 Sobolev")
  axes[0][-1].legend(fontsize=7)
  figure.tight_layout()
  files.save_figure(figure, path)
  plt.close(figure)


def _mean_curve(runs: Sequence[Dict[str, Any]], metric: str):
  steps = [point["step"] for point in runs[0]["curve"]]
  values = np.log10(
    [[point[metric] for point in run["curve"]] for run in runs]
  ).mean(axis=0)
  return steps, values


TRAIN_METRICS = (
  ("train_mse", "log10 train MSE"),
  ("train_gradient_mse", "log10 train gradient MSE"),
)


def curves_figure(
  records: Sequence[Dict[str, Any]],
  path: str,
  metrics: Sequence[Tuple[str, str]] = regression_report.METRICS,
) -> None:
  """Errors per step: rows are functions, columns size × metric."""
  groups = group(records)
  functions = sorted({key[0] for key in groups})
  sizes = sorted({key[1] for key in groups})
  budgets = sorted({key[2] for key in groups})
  columns = [(s, m) for s in sizes for m in metrics]
  figure, axes = plt.subplots(
    len(functions),
    len(columns),
    figsize=(3.2 * len(columns), 2.4 * len(functions)),
    squeeze=False,
  )
  styles = [":", "--", "-", "-."]
  for row, function in zip(axes, functions, strict=True):
    for axis, (size, (metric, label)) in zip(row, columns, strict=True):
      for budget, style in zip(budgets, styles, strict=False):
        by_method = groups.get((function, size, budget), {})
        for method, color in zip(METHODS, ("C0", "C1"), strict=True):
          runs = [
            r
            for r in by_method.get(method, [])
            if r.get("curve") and metric in r["curve"][0]
          ]
          if runs:
            axis.plot(
              *_mean_curve(runs, metric),
              style,
              color=color,
              label=f"{method}, {budget} steps",
            )
      axis.set_xscale("log")
      axis.set_title(f"{function}, {size} points", fontsize=9)
      axis.set_ylabel(label, fontsize=8)
  for axis in axes[-1]:
    axis.set_xlabel("step")
  axes[0][-1].legend(fontsize=6)
  figure.tight_layout()
  files.save_figure(figure, path, dpi=64)
  plt.close(figure)


def main(argv: Sequence[str]) -> None:
  """Writes the table and figures of `--workdirs` to `--output`."""
  del argv
  records = load(_WORKDIRS.value)
  output = _OUTPUT.value
  files.write_file(os.path.join(output, "budget_table.md"), table(records))
  gap_figure(records, os.path.join(output, "budget_gap.png"))
  curves_figure(records, os.path.join(output, "budget_curves.png"))
  curves_figure(
    records, os.path.join(output, "budget_train_curves.png"), TRAIN_METRICS
  )
  print(f"Table and figures: {output}/budget_table.md, budget_*.png")


if __name__ == "__main__":
  common.run_main(main, FLAGS)
