"""Figures of results: learning curves with bootstrap bands, and interval estimates of final scores.

Inputs are plain arrays, so any agent's metric plots against any unit (env steps,
rounds, tokens):

- `curves_figure(items)` / `curves(items, path)`: one curve per `(label, x [n],
  values [seed, n])`, the IQM (or mean, median) across seeds with a 95% bootstrap band.
  Each seed's NaN points (an iteration in which no episode finished) carry its previous
  value forward; an optional trailing moving average smooths each seed before the
  statistic.
- `intervals_figure(items)` / `intervals(items, path)`: for each `(label, values [seed])`
  the IQM and the mean with 95% stratified-bootstrap intervals, one row per label (as
  in rliable, Agarwal et al. 2021).
- `learning_curve(result, path)`: the figure of one run or one sweep (what
  `Results.plot` and `SweepResults.plot` draw).
- `compare(results, names, out_dir)`: what `purejaxrl-lab plot DIR [DIR ...]` draws:
  every run (and every setting of a sweep) as one curve on `curves.png`, and one row
  each on `final_scores.png`.

A results object here is anything with the attributes of `purejaxrl_lab.results.Results`
(`agent`, `env`, `seeds`, `metrics`, `unit`, `units`, `eval_units`, `score`,
`final_score`); a sweep also has `settings`, and its arrays have a leading setting axis.

Figures are `matplotlib.figure.Figure`s on the Agg canvas, made without pyplot: nothing
switches the session's backend and nothing needs closing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from purejaxrl_lab import stats

STATISTICS = ("iqm", "mean", "median")
MAX_POINTS = 200  # points drawn per curve at most
NO_VALUE = "no value: metric never finite"


def forward_fill(x: np.ndarray) -> np.ndarray:
    """Replaces each NaN along the last axis by the latest earlier non-NaN value.

    Leading NaNs (before the first value) stay NaN.

    Args:
      x: values [..., n].
    Returns:
      float64 values [..., n].
    """
    x = np.asarray(x, dtype=np.float64)
    idx = np.where(np.isnan(x), 0, np.arange(x.shape[-1]))
    np.maximum.accumulate(idx, axis=-1, out=idx)
    return np.take_along_axis(x, idx, axis=-1)


def _statistic(statistic: str) -> Callable:
    if statistic not in STATISTICS:
        raise ValueError(f"statistic={statistic!r} is not allowed: expected one of {', '.join(STATISTICS)}")
    return stats.STATISTICS[statistic]


def _check_smoothing(smoothing) -> int:
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, np.integer)) or smoothing < 1:
        raise ValueError(f"smoothing={smoothing!r} is not allowed: expected an integer >= 1")
    return int(smoothing)


def _trailing_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Mean of the finite values among the last k points (point t included) along the last axis.

    The first k-1 points average what exists: with k=2, [0, 2, 4, 6] -> [0, 1, 3, 5].
    A window with no finite value gives NaN.

    Args:
      x: values [..., n].
    Returns:
      values [..., n].
    """
    if k == 1:
        return x
    finite = np.isfinite(x)
    pad = [(0, 0)] * (x.ndim - 1) + [(1, 0)]
    total = np.pad(np.cumsum(np.where(finite, x, 0.0), axis=-1), pad)  # [..., n + 1]
    count = np.pad(np.cumsum(finite, axis=-1), pad)
    end = np.arange(1, x.shape[-1] + 1)
    start = np.maximum(end - k, 0)
    n = count[..., end] - count[..., start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (total[..., end] - total[..., start]) / n, np.nan)


def _prepare(label: str, x, values, smoothing: int):
    """The drawable part of one curve item.

    Seeds with no finite value are left out (and the label says so); then points before
    every kept seed has a value are left out, and at most MAX_POINTS evenly spaced
    points (first and last included) are kept.

    Returns:
      (label, x [m], values [kept seed, m]); m is 0 when nothing can be drawn.
    """
    x = np.asarray(x, dtype=np.float64)
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if values.ndim != 2 or values.shape[-1] != x.shape[0]:
        raise ValueError(f"curve {label!r}: values of shape {values.shape} do not match x of "
                         f"shape {x.shape}: expected [seed, {x.shape[0]}]")
    values = _trailing_mean(forward_fill(values), smoothing)
    has_value = np.isfinite(values).any(axis=-1)  # [seed]
    if not has_value.any():
        return f"{label} ({NO_VALUE})", x[:0], values[:, :0]
    if not has_value.all():
        label = f"{label} ({(~has_value).sum()} of {len(has_value)} seeds never finite, left out)"
    values = values[has_value]
    keep = np.isfinite(values).all(axis=0)
    x, values = x[keep], values[:, keep]
    idx = np.unique(np.linspace(0, x.shape[0] - 1, min(x.shape[0], MAX_POINTS)).round().astype(int))
    return label, x[idx], values[:, idx]


def _new_figure(width: float, height: float, **subplots):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(**subplots)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


def _legend(ax, handles: list, labels: list[str], statistic: str) -> None:
    """Inside the axes ("best") for one entry; outside on the right for several."""
    if not handles:
        return
    where = dict(loc="best") if len(handles) == 1 else dict(bbox_to_anchor=(1.02, 1), loc="upper left",
                                                            borderaxespad=0.0)
    ax.legend(handles, labels, fontsize="small", title_fontsize="small",
              title=f"{statistic} across seeds, 95% bootstrap band", **where)


def curves_figure(items: Sequence[tuple[str, np.ndarray, np.ndarray]], statistic: str = "iqm",
                  ylabel: str = "", xlabel: str = "", title: str = "", smoothing: int = 1):
    """Learning curves: for each item, `statistic` across seeds with a 95% bootstrap band.

    Each seed's NaN points carry its previous value forward (`forward_fill`); points
    before every seed has a value are left out. An item with no finite value keeps a
    legend entry, "LABEL (no value: metric never finite)", and draws nothing.

    Args:
      items: (label, x [n], values [seed, n]) per curve.
      statistic: "iqm", "mean" or "median", across seeds at each point.
      ylabel: the y-axis label.
      xlabel: the x-axis label.
      title: the figure's title.
      smoothing: k >= 1: each seed's values become the trailing mean of its last k points
        before the statistic (the first k-1 points average what exists); 1 is none.
    Returns:
      a matplotlib Figure; with several curves the legend lies right of the axes.
    """
    fn = _statistic(statistic)
    smoothing = _check_smoothing(smoothing)
    prepared = [_prepare(label, x, values, smoothing) for label, x, values in items]
    longest = max((len(label) for label, _, _ in prepared), default=0)
    width = 7.0 if len(prepared) <= 1 else 7.0 + min(8.0, 0.8 + 0.06 * longest)
    fig, ax = _new_figure(width, 4.4)
    handles = [_draw_curve(ax, x, values, fn) for _, x, values in prepared]
    _legend(ax, handles, [label for label, _, _ in prepared], statistic)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _draw_curve(ax, x: np.ndarray, values: np.ndarray, fn: Callable):
    """Draws fn across seeds of values [seed, m] with its bootstrap band; returns the legend handle."""
    from matplotlib.lines import Line2D

    if not x.size:
        return Line2D([], [], color="none")
    # At most ~2e7 resampled values: 1,000 resamples for up to 20k (seed, point) pairs, fewer
    # (at least 100) beyond, e.g. for a bandit's thousands of runs.
    resamples = int(np.clip(2e7 / values.size, 100, 1000))
    low, high = stats.bootstrap_ci(values.T, fn, num_resamples=resamples)
    (line,) = ax.plot(x, fn(values, axis=0))
    ax.fill_between(x, low, high, alpha=0.2, color=line.get_color())
    return line


def curves(items: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | os.PathLike,
           statistic: str = "iqm", ylabel: str = "", xlabel: str = "", title: str = "",
           smoothing: int = 1) -> Path:
    """Writes `curves_figure(items, ...)` as a PNG at `path` (parent folders created).

    Returns:
      the Path written.
    """
    return _save(curves_figure(items, statistic, ylabel, xlabel, title, smoothing), path)


def intervals_figure(items: Sequence[tuple[str, np.ndarray]], title: str = "final score"):
    """Interval estimates: IQM and mean with 95% stratified-bootstrap intervals, one row per item.

    NaN values are left out (the row says how many); a row with no finite value is named
    "LABEL (no value)" and has no bar.

    Args:
      items: (label, values [seed]) per row, top to bottom.
      title: the x-axis label of both panels (e.g. "final return").
    Returns:
      a matplotlib Figure with two panels, "IQM" and "mean".
    """
    rows = [_interval_row(label, values) for label, values in items]
    longest = max((len(label) for label, _ in rows), default=0)
    width = 6.0 + 0.07 * longest  # room for the row labels beside two panels
    fig, axes = _new_figure(width, 0.9 + 0.45 * max(1, len(rows)), ncols=2, sharey=True, squeeze=False)
    for ax, (name, fn) in zip(axes[0], (("IQM", stats.iqm), ("mean", stats.mean))):
        for row, (_, finite) in enumerate(rows):
            if finite.size:
                low, high = stats.stratified_bootstrap_ci(finite, fn)
                ax.barh(row, high - low, left=low, height=0.6, alpha=0.6)
                ax.plot([fn(finite)], [row], "k|", markersize=14)
        ax.set(title=name, xlabel=title)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(rows)), [label for label, _ in rows])
    axes[0][0].set_ylim(len(rows) - 0.5, -0.5)  # first item on top
    fig.tight_layout()
    return fig


def _interval_row(label: str, values) -> tuple[str, np.ndarray]:
    """(row label, finite values [k])."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = values[np.isfinite(values)]
    if not finite.size:
        return f"{label} (no value)", finite
    if finite.size < values.size:
        label = f"{label} ({values.size - finite.size} of {values.size} seeds without value)"
    return label, finite


def intervals(items: Sequence[tuple[str, np.ndarray]], path: str | os.PathLike,
              title: str = "final score") -> Path:
    """Writes `intervals_figure(items, title)` as a PNG at `path` (parent folders created).

    Returns:
      the Path written.
    """
    return _save(intervals_figure(items, title), path)


def _is_sweep(r) -> bool:
    return hasattr(r, "settings")


def _metric_of(r, name: str, metric: str | None) -> str:
    metric = r.score.metric if metric is None else metric
    if metric not in r.metrics:
        raise ValueError(f"metric={metric!r} is not allowed: {name} has {sorted(r.metrics)}")
    return metric


def _curve_items(r, metric: str, prefix: str | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """One item per run (labelled prefix) or per setting of a sweep ("prefix: setting")."""
    from purejaxrl_lab.grid import label as setting_label

    x = r.eval_units if metric.startswith("eval_") else r.units
    if not _is_sweep(r):
        return [(prefix, x, r.metrics[metric])]
    return [(setting_label(s) if prefix is None else f"{prefix}: {setting_label(s)}", x, r.metrics[metric][j])
            for j, s in enumerate(r.settings)]


def _final_items(r, prefix: str) -> list[tuple[str, np.ndarray]]:
    from purejaxrl_lab.grid import label as setting_label

    if not _is_sweep(r):
        return [(prefix, r.final_score)]
    return [(f"{prefix}: {setting_label(s)}", r.final_score[j]) for j, s in enumerate(r.settings)]


def _axis_labels(r, metric: str) -> tuple[str, str]:
    """(x label, y label): "UNIT (per seed)", and the score's name or the metric's."""
    ylabel = r.score.name if metric == r.score.metric else metric.replace("_", " ")
    return f"{r.unit} (per seed)", ylabel


def learning_curve(result, path: str | os.PathLike, statistic: str = "iqm", metric: str | None = None,
                   smoothing: int = 1) -> Path:
    """Writes the learning-curve PNG of one run or one sweep (parent folders created).

    A run gives one curve, "AGENT (N seeds)", titled with the env; a sweep one curve per
    setting, labelled by the setting.

    Args:
      result: a run (metrics [seed, iteration]) or a sweep (metrics [setting, seed, iteration]).
      metric: a key of `result.metrics`; None: the score's metric. "eval_*" metrics plot
        against `eval_units`, others against `units`.
      statistic: as in `curves_figure`.
      smoothing: as in `curves_figure`.
    Returns:
      the Path written.
    """
    _statistic(statistic)
    name = f"{result.agent} ({len(result.seeds)} seeds)"
    metric = _metric_of(result, name, metric)
    if _is_sweep(result):
        title = f"{result.agent} on {result.env}, {len(result.seeds)} seeds per setting"
        items = _curve_items(result, metric, None)
    else:
        title, items = result.env, _curve_items(result, metric, name)
    xlabel, ylabel = _axis_labels(result, metric)
    return curves(items, path, statistic, ylabel, xlabel, title, smoothing)


def _check_comparable(results: Sequence, names: Sequence[str], metric: str | None,
                      allow_mixed_envs: bool) -> None:
    if len(results) != len(names) or not results:
        raise ValueError(f"compare needs one name per result and at least one result: "
                         f"got {len(results)} results and {len(names)} names")
    envs = {r.env for r in results}
    if len(envs) > 1 and not allow_mixed_envs:
        raise ValueError(f"the results are on different environments ({', '.join(sorted(envs))}); "
                         f"pass allow_mixed_envs=True (CLI: --mixed-envs) to overlay them anyway")
    if metric is None and len({r.score.metric for r in results}) > 1:
        found = ", ".join(f"{n}: {r.score.metric}" for n, r in zip(names, results))
        raise ValueError(f"the results have different score metrics ({found}); "
                         f"pass metric=NAME (CLI: --metric) to plot one metric they all have")
    if len({r.unit for r in results}) > 1:
        found = ", ".join(f"{n}: {r.unit}" for n, r in zip(names, results))
        raise ValueError(f"the results count different units ({found}); their curves cannot share an x axis")


def compare(results: Sequence, names: Sequence[str], out_dir: str | os.PathLike, statistic: str = "iqm",
            metric: str | None = None, smoothing: int = 1, allow_mixed_envs: bool = False) -> list[Path]:
    """Writes curves.png and final_scores.png into `out_dir` (created), comparing runs and sweeps.

    Every run, and every setting of a sweep ("NAME: SETTING"), is one curve and one row
    of the final-score intervals.

    Args:
      results: runs and sweeps, all with the same unit (and score metric when metric is None).
      names: one short name per result.
      metric: a key every result's metrics has; None: their shared score metric.
      statistic: as in `curves_figure`.
      smoothing: as in `curves_figure`.
      allow_mixed_envs: overlay results of different environments.
    Returns:
      the paths written; final_scores.png only when the results share a score metric.
    """
    _statistic(statistic)
    _check_smoothing(smoothing)
    _check_comparable(results, names, metric, allow_mixed_envs)
    metrics = [_metric_of(r, n, metric) for n, r in zip(names, results)]
    out_dir = Path(out_dir)
    curve_items = [item for n, r, m in zip(names, results, metrics) for item in _curve_items(r, m, n)]
    xlabel, ylabel = _axis_labels(results[0], metrics[0])
    title = ", ".join(sorted({r.env for r in results}))
    paths = [curves(curve_items, out_dir / "curves.png", statistic, ylabel, xlabel, title, smoothing)]
    score = results[0].score
    if all(r.score.metric == score.metric for r in results):
        final_items = [item for n, r in zip(names, results) for item in _final_items(r, n)]
        worse = "" if score.higher_is_better else " (lower is better)"
        paths.append(intervals(final_items, out_dir / "final_scores.png", title=f"final {score.name}{worse}"))
    return paths
