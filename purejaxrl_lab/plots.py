"""Figures: learning curves with bootstrap bands, and interval estimates of final returns.

`compare(results, out_dir)` is what `purejaxrl-lab plot DIR [DIR ...]` draws: every run
(and every setting of a sweep) as one curve on one figure, and one row per run in an
interval-estimate chart (IQM and mean of final returns with 95% stratified-bootstrap
intervals, as in rliable).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from purejaxrl_lab import stats


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves(items: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | os.PathLike,
           statistic: str = "iqm", metric: str = "episode_return", title: str = "") -> Path:
    """One curve per (label, env_steps [iteration], values [seed, iteration]): `statistic`
    across seeds with a 95% bootstrap band.

    Iterations in which a seed finished no episode carry that seed's previous value
    forward (and are left out before its first finished episode).
    """
    from purejaxrl_lab.results import _forward_fill

    if statistic not in ("iqm", "mean", "median"):
        raise ValueError(f"statistic={statistic!r} is not allowed: expected one of iqm, mean, median")
    fn = stats.STATISTICS[statistic]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.4), dpi=120)
    for label, steps, values in items:
        values = _forward_fill(values)
        stride = max(1, values.shape[-1] // 200)  # at most ~200 points per curve
        values, steps = values[:, ::stride], np.asarray(steps)[::stride]
        keep = np.isfinite(values).all(axis=0)
        values, steps = values[:, keep], steps[keep]
        if not values.size:
            continue
        center = fn(values, axis=0)
        low, high = stats.bootstrap_ci(values.T, fn, num_resamples=1000)
        (line,) = ax.plot(steps, center, label=f"{label}")
        ax.fill_between(steps, low, high, alpha=0.2, color=line.get_color())
    if ax.lines:
        ax.legend(loc="best", fontsize="small", title=f"{statistic}, 95% bootstrap band")
    ax.set_xlabel("environment steps (per seed)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def intervals(items: Sequence[tuple[str, np.ndarray]], path: str | os.PathLike,
              title: str = "final return") -> Path:
    """Interval estimates: for each (label, final returns [seeds]) the IQM and the mean with
    95% stratified-bootstrap intervals, one row per label."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8.0, 0.9 + 0.45 * max(1, len(items))), dpi=120,
                             sharey=True, squeeze=False)
    for ax, (name, fn) in zip(axes[0], (("IQM", stats.iqm), ("mean", stats.mean))):
        for row, (label, values) in enumerate(items):
            finite = np.asarray(values, dtype=np.float64)
            finite = finite[np.isfinite(finite)]
            if not finite.size:
                continue
            low, high = stats.stratified_bootstrap_ci(finite, fn)
            ax.barh(row, high - low, left=low, height=0.6, alpha=0.6)
            ax.plot([fn(finite)], [row], "k|", markersize=14)
        ax.set_title(name)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel(title)
    axes[0][0].set_yticks(range(len(items)), [label for label, _ in items])
    axes[0][0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def compare(results: Sequence, names: Sequence[str], out_dir: str | os.PathLike,
            statistic: str = "iqm", metric: str = "episode_return") -> list[Path]:
    """Writes curves.png and final_returns.png into `out_dir` comparing runs and sweeps."""
    from purejaxrl_lab.grid import label as setting_label
    from purejaxrl_lab.results import SweepResults

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curve_items, final_items = [], []
    for name, r in zip(names, results):
        if metric not in r.metrics:
            raise ValueError(f"metric={metric!r} is not allowed: {name} has {sorted(r.metrics)}")
        if isinstance(r, SweepResults):
            for j, s in enumerate(r.settings):
                label = f"{name}: {setting_label(s)}"
                curve_items.append((label, r.env_steps, r.metrics[metric][j]))
                final_items.append((label, r.final_return[j]))
        else:
            curve_items.append((name, r.env_steps, r.metrics[metric]))
            final_items.append((name, r.final_return))
    envs = sorted({r.env for r in results})
    return [
        curves(curve_items, out_dir / "curves.png", statistic, metric, title=", ".join(envs)),
        intervals(final_items, out_dir / "final_returns.png"),
    ]
