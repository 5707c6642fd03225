"""The scaling benchmark's Markdown tables and log-log figure."""

import math
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

from matplotlib import figure as figure_lib
from matplotlib import ticker

from benchmarks import scaling_point
from benchmarks import workloads

_MIB = 2.0**20
_FRAMEWORK_LABELS = {
  "tf_xla": "TF, XLA",
  "tf_graph": "TF, no XLA",
  "jax": "JAX",
}
_LINESTYLES = {"tf_xla": "-", "tf_graph": "--", "jax": ":"}
_MODE_COLORS = {"full": "C0", "stochastic": "C1"}
_STATUS_CELLS = {"memory": "mem", "time": "time", "error": "err"}


Series = Tuple[str, int, str]


def _milliseconds(measurements) -> float:
  return 1e3 * measurements["seconds_per_step"]


def _warm_up(measurements) -> float:
  return measurements["warm_up_seconds"]


def _memory(measurements) -> float:
  growth = measurements["peak_rss_bytes"] - measurements["baseline_rss_bytes"]
  return growth / _MIB


# Title, unit and value of each reported quantity.
QUANTITIES: Dict[str, Tuple[str, Callable[[dict], float]]] = {
  "time": ("Milliseconds per step", _milliseconds),
  "warm_up": ("Warm-up seconds (first call, compilation included)", _warm_up),
  "memory": ("Peak memory over the post-import baseline, MiB", _memory),
}


def loglog_slope(
  dims: Sequence[float], values: Sequence[float]
) -> Optional[float]:
  """Least-squares slope of log(values) against log(dims).

  Args:
    dims: the input sizes.
    values: positive measurements, one per size.

  Returns:
    The slope (0: flat, 1: linear), or None for fewer than two sizes.
  """
  points = [
    (math.log(d), math.log(v))
    for d, v in zip(dims, values, strict=True)
    if v > 0
  ]
  if len({x for x, _ in points}) < 2:
    return None
  mean_x = sum(x for x, _ in points) / len(points)
  mean_y = sum(y for _, y in points) / len(points)
  covariance = sum((x - mean_x) * (y - mean_y) for x, y in points)
  variance = sum((x - mean_x) ** 2 for x, _ in points)
  return covariance / variance


def _series_key(series: Series) -> tuple:
  framework, num_outputs, kind_name = series
  kind = workloads.KINDS[kind_name]
  frameworks = list(scaling_point.FRAMEWORKS)
  return (kind.order, kind.mode, num_outputs, frameworks.index(framework))


def _by_series(
  results: Sequence[scaling_point.Result],
) -> Dict[Series, List[scaling_point.Result]]:
  grouped = {}
  for result in results:
    grouped.setdefault(result.point.series, []).append(result)
  ordered = sorted(grouped, key=_series_key)
  return {
    series: sorted(grouped[series], key=lambda r: r.point.input_dim)
    for series in ordered
  }


def _cell(result: scaling_point.Result, value: Callable[[dict], float]) -> str:
  if result.measurements is None:
    return _STATUS_CELLS.get(result.status, result.status)
  return f"{value(result.measurements):.3g}"


def _ok(
  results: Sequence[scaling_point.Result], value
) -> Tuple[List[int], List[float]]:
  measured = [r for r in results if r.measurements is not None]
  return (
    [r.point.input_dim for r in measured],
    [value(r.measurements) for r in measured],
  )


def pivot_table(results: Sequence[scaling_point.Result], quantity: str) -> str:
  """One quantity as a Markdown table: a line per series, a column per d.

  Args:
    results: the sweep's results.
    quantity: a key of `QUANTITIES`.

  Returns:
    The table, with the log-log slope in d of each series when
    `quantity` is `time`.
  """
  title, value = QUANTITIES[quantity]
  dims = sorted({r.point.input_dim for r in results})
  columns = ["order", "mode", "outputs", "framework"]
  columns += [f"d={d}" for d in dims]
  if quantity == "time":
    columns.append("slope in d")
  lines = [
    f"**{title}**",
    "",
    "| " + " | ".join(columns) + " |",
    "|" + "---|" * 4 + "--:|" * (len(columns) - 4),
  ]
  for (framework, num_outputs, kind_name), series in _by_series(
    results
  ).items():
    kind = workloads.KINDS[kind_name]
    by_dim = {r.point.input_dim: r for r in series}
    cells = [str(kind.order), kind.mode, str(num_outputs)]
    cells.append(_FRAMEWORK_LABELS[framework])
    cells += [_cell(by_dim[d], value) if d in by_dim else "-" for d in dims]
    if quantity == "time":
      slope = loglog_slope(*_ok(series, value))
      cells.append("-" if slope is None else f"{slope:.2f}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def markdown(
  results: Sequence[scaling_point.Result], header: Sequence[str]
) -> str:
  """The report: `header` lines, then one table per quantity and a legend."""
  tables = [pivot_table(results, quantity) for quantity in QUANTITIES]
  legend = (
    "`mem`: over the memory budget (or its targets alone are); `time`: "
    "over the time budget; `err`: failed otherwise (see the log). A series "
    "over a budget at some d is not run at larger d. Slope: least-squares "
    "slope of log(ms per step) against log(d), about 0 when the cost is "
    "flat in d and about 1 when linear."
  )
  return "\n\n".join(["\n".join(header), *tables, legend]) + "\n"


def _plot_series(axes, results, series, value) -> None:
  framework, _, kind_name = series
  dims, values = _ok(results, value)
  if not dims:
    return
  kind = workloads.KINDS[kind_name]
  axes.loglog(
    dims,
    values,
    marker="o",
    markersize=3,
    color=_MODE_COLORS[kind.mode],
    linestyle=_LINESTYLES[framework],
    label=f"{kind.mode}, {_FRAMEWORK_LABELS[framework]}",
  )


def _decorate(axes, quantity: str, title: str, dims: Sequence[int]) -> None:
  """Log axes with plain numbers: d at the measured sizes, y at 1-2-5."""
  axes.set_xscale("log")
  axes.set_yscale("log")
  axes.set_xticks(dims)
  axes.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
  axes.xaxis.set_minor_locator(ticker.NullLocator())
  axes.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
  axes.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
  axes.yaxis.set_minor_formatter(ticker.NullFormatter())
  unit = "ms / step" if quantity == "time" else "MiB over baseline"
  axes.set_title(f"{title}: {quantity}", fontsize=8)
  axes.set_xlabel("input size d", fontsize=7)
  axes.set_ylabel(unit, fontsize=7)
  axes.tick_params(labelsize=6)


def write_figure(results: Sequence[scaling_point.Result], path: str) -> None:
  """Log-log plots of time and memory against d, per output size and order.

  Args:
    results: the sweep's results; points not measured are left out, so a
      line ends where its series went over a budget.
    path: the PNG file to write.
  """
  grouped = _by_series(results)
  dims = sorted({result.point.input_dim for result in results})
  outputs = sorted({num_outputs for _, num_outputs, _ in grouped})
  orders = sorted({workloads.KINDS[kind].order for _, _, kind in grouped})
  panels = [(q, order) for q in ("time", "memory") for order in orders]
  figure = figure_lib.Figure(
    figsize=(3.2 * len(panels), 2.4 * len(outputs)), layout="constrained"
  )
  grid = figure.subplots(len(outputs), len(panels), squeeze=False)
  for row, num_outputs in enumerate(outputs):
    for column, (quantity, order) in enumerate(panels):
      axes = grid[row][column]
      value = QUANTITIES[quantity][1]
      for series, series_results in grouped.items():
        kind = workloads.KINDS[series[2]]
        if series[1] == num_outputs and kind.order == order:
          _plot_series(axes, series_results, series, value)
      _decorate(axes, quantity, f"order {order}, {num_outputs} outputs", dims)
  legend = {}
  for axes in figure.axes:
    for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
      legend.setdefault(label, handle)
  if legend:
    figure.legend(
      legend.values(), legend.keys(), loc="outside lower center", ncols=6
    )
  figure.savefig(path, dpi=72)
