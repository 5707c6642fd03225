"""Tables and figures of the regression sweep, from its result records."""

import collections
import math
from typing import Any
from typing import Dict
from typing import List
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from launch import files  # noqa: E402

METRICS = (
  ("test_mse", "log10 test MSE"),
  ("test_gradient_mse", "log10 test gradient MSE"),
)


def _key(record: Dict[str, Any]) -> tuple:
  return (record["function"], record["dim"], record["train_size"])


def _function_label(function: str, dim: int) -> str:
  return function if dim == 2 else f"{function} (d={dim})"


def group(records: Sequence[Dict[str, Any]]) -> Dict[tuple, Dict[str, list]]:
  """`{(function, dim, size): {method: [record, ...]}}`, in sweep order."""
  grouped = collections.defaultdict(lambda: collections.defaultdict(list))
  for record in records:
    grouped[_key(record)][record["method"]].append(record)
  return grouped


def _log10_stats(records: List[Dict[str, Any]], metric: str) -> str:
  values = [math.log10(max(r[metric], 1e-30)) for r in records]
  mean, std = files.mean_and_std(values)
  return f"{mean:.2f} ± {std:.2f}"


def markdown_table(records: Sequence[Dict[str, Any]]) -> str:
  """log10 test MSE and gradient MSE, mean ± std over seeds, per cell."""
  methods = list(dict.fromkeys(r["method"] for r in records))
  header = ["function", "points"]
  for _, label in METRICS:
    header += [f"{label}: {method}" for method in methods]
  header.append("seeds")
  rows = []
  for (function, dim, size), by_method in group(records).items():
    row = [_function_label(function, dim), size]
    for metric, _ in METRICS:
      row += [
        _log10_stats(by_method[m], metric) if by_method.get(m) else "–"
        for m in methods
      ]
    row.append(max(len(v) for v in by_method.values()))
    rows.append(row)
  return files.markdown_table(header, rows)


def figure2(records: Sequence[Dict[str, Any]], path: str) -> None:
  """Figure 2 (right) of the paper: log test MSE per function and size."""
  grouped = group(records)
  functions = list(dict.fromkeys((r["function"], r["dim"]) for r in records))
  methods = list(dict.fromkeys(r["method"] for r in records))
  sizes = sorted({r["train_size"] for r in records})
  figure, axes = plt.subplots(
    1,
    len(functions),
    figsize=(2.2 * len(functions), 2.6),
    squeeze=False,
    sharey=False,
  )
  width = 0.8 / len(methods)
  for ax, (function, dim) in zip(axes[0], functions, strict=True):
    for m, method in enumerate(methods):
      means, stds = [], []
      for size in sizes:
        values = [
          math.log10(max(r["test_mse"], 1e-30))
          for r in grouped[(function, dim, size)].get(method, [])
        ]
        mean, std = files.mean_and_std(values) or (np.nan, 0.0)
        means.append(mean)
        stds.append(std)
      ax.bar(
        np.arange(len(sizes)) + (m - (len(methods) - 1) / 2) * width,
        means,
        width,
        yerr=stds,
        label=method,
        capsize=2,
      )
    ax.set_xticks(range(len(sizes)), [str(s) for s in sizes], fontsize=7)
    ax.set_title(_function_label(function, dim), fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
  axes[0][0].set_ylabel("log10 test MSE", fontsize=8)
  axes[0][-1].legend(fontsize=7)
  figure.supxlabel("training points", fontsize=8)
  figure.tight_layout()
  files.save_figure(figure, path)
  plt.close(figure)


def figure3(panels: Sequence[tuple], path: str) -> None:
  """Figure 3 of the paper: surfaces with their gradient fields.

  Args:
    panels: `(title, x1, x2, values [R, R], gradients [R, R, 2])` each; the
      values are drawn as filled contours and the gradients as arrows.
    path: PNG file to write (a `tf.io.gfile` path).
  """
  figure, axes = plt.subplots(
    1, len(panels), figsize=(2.6 * len(panels), 2.6), squeeze=False
  )
  levels = np.linspace(
    min(p[3].min() for p in panels), max(p[3].max() for p in panels), 30
  )
  x1, x2 = panels[0][1], panels[0][2]
  step = max(len(x1) // 16, 1)
  # One arrow scale for all panels: the true field's longest arrow spans one
  # arrow spacing.
  longest = np.max(np.linalg.norm(panels[0][4], axis=-1))
  arrow_scale = longest / ((x1[1] - x1[0]) * step)
  for ax, (title, x1, x2, values, gradients) in zip(
    axes[0], panels, strict=True
  ):
    ax.contourf(x1, x2, values, levels=levels, cmap="viridis")
    ax.quiver(
      x1[::step],
      x2[::step],
      gradients[::step, ::step, 0],
      gradients[::step, ::step, 1],
      color="white",
      width=0.006,
      angles="xy",
      scale_units="xy",
      scale=arrow_scale,
    )
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
  figure.tight_layout()
  files.save_figure(figure, path)
  plt.close(figure)


def write_table(records: Sequence[Dict[str, Any]], path: str) -> str:
  """Writes the table to `path` and returns it."""
  table = markdown_table(records)
  files.write_file(path, table)
  return table
