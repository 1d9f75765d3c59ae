"""Aggregate statistics for seed-level results, after Agarwal et al. 2021, "Deep RL at the Edge of
the Statistical Precipice" (rliable): point estimates, stratified-bootstrap confidence intervals,
probability of improvement and performance profiles.

Scores are arrays [runs, tasks] (a 1-D array is one task). Aggregates pool every
(run, task) score; the stratified bootstrap resamples runs within each task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as _stats


def _scores(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"scores: expected an array [runs, tasks] or [runs], got shape {x.shape}")
    return x


def mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def median(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(x, axis=axis)


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% (25% trimmed from each end)."""
    return _stats.trim_mean(x, 0.25, axis=axis)


def optimality_gap(x: np.ndarray, axis: int = -1, threshold: float = 1.0) -> np.ndarray:
    """Mean shortfall below `threshold`: mean(max(threshold - x, 0)). Lower is better.

    With normalised scores the threshold is 1; for raw returns pass the target return
    (e.g. 500 on CartPole-v1)."""
    return np.mean(np.maximum(threshold - np.asarray(x, dtype=np.float64), 0.0), axis=axis)


STATISTICS: dict[str, Callable] = {"mean": mean, "median": median, "iqm": iqm,
                                   "optimality_gap": optimality_gap}


def aggregate(scores, statistic: Callable = iqm) -> float:
    """`statistic` over every (run, task) score pooled."""
    return float(statistic(_scores(scores).reshape(-1), axis=-1))


def bootstrap_ci(
    x: np.ndarray,
    statistic: Callable = iqm,
    confidence: float = 0.95,
    num_resamples: int = 2000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of `statistic` over the last axis (the seeds).

    Args:
      x: values [..., num_seeds]; leading axes are kept (e.g. one interval per iteration).
      statistic: reduces the last axis, e.g. `iqm` or `mean`.
    Returns:
      (low, high), each shaped x.shape[:-1].
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(num_resamples, n))
    resampled = statistic(x[..., idx], axis=-1)  # [..., num_resamples]
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled, [alpha, 1.0 - alpha], axis=-1)
    return low, high


def stratified_bootstrap(scores, statistic: Callable = iqm, num_resamples: int = 2000,
                         seed: int = 0) -> np.ndarray:
    """[num_resamples] values of the pooled `statistic`, each on a resample that draws
    `runs` scores with replacement within every task separately."""
    x = _scores(scores)
    runs, tasks = x.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, runs, size=(num_resamples, runs, tasks))
    resampled = np.take_along_axis(x[None], idx, axis=1)  # [resamples, runs, tasks]
    return statistic(resampled.reshape(num_resamples, -1), axis=-1)


def stratified_bootstrap_ci(scores, statistic: Callable = iqm, confidence: float = 0.95,
                            num_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the pooled `statistic` under the stratified bootstrap."""
    values = stratified_bootstrap(scores, statistic, num_resamples, seed)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def probability_of_improvement(x, y) -> float:
    """P(X > Y) for a random run of X and of Y on the same task, ties counting one half,
    averaged over tasks (the normalised Mann-Whitney U statistic). x: [runs_x, tasks],
    y: [runs_y, tasks]."""
    x, y = _scores(x), _scores(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"probability_of_improvement: x has {x.shape[1]} tasks, y has {y.shape[1]}")
    per_task = [
        np.mean((x[:, t, None] > y[None, :, t]) + 0.5 * (x[:, t, None] == y[None, :, t]))
        for t in range(x.shape[1])
    ]
    return float(np.mean(per_task))


def performance_profile(scores, taus: Sequence[float]) -> np.ndarray:
    """Fraction of (run, task) scores strictly above each tau [len(taus)] (the run-score
    distribution of rliable)."""
    x = _scores(scores).reshape(-1)
    taus = np.asarray(taus, dtype=np.float64)
    return (x[None, :] > taus[:, None]).mean(axis=1)


def performance_profile_ci(scores, taus: Sequence[float], confidence: float = 0.95,
                           num_resamples: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified-bootstrap percentile band of `performance_profile`, (low, high) [len(taus)]."""
    taus = np.asarray(taus, dtype=np.float64)
    values = stratified_bootstrap(
        scores, lambda s, axis: (s[..., None] > taus).mean(axis=-2), num_resamples, seed)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha], axis=0)
    return low, high


def per_episode(values, episodes, num_episodes: int | None = None) -> np.ndarray:
    """Per-step metrics [..., steps] as per-episode series [..., num_episodes].

    An agent that reports per environment step (a tabular TD agent: `episode_return` and
    `episode_length` on the step an episode ended, `episodes` 1 there and 0 elsewhere) gives
    the i-th finished episode's value at index i; runs that finished fewer episodes are
    padded with NaN. `num_episodes` defaults to the most any run finished.
    """
    values = np.asarray(values, dtype=np.float64)
    ended = np.asarray(episodes) > 0
    if values.shape != ended.shape:
        raise ValueError(f"values {values.shape} and episodes {ended.shape}: expected the same shape")
    flat_v, flat_e = values.reshape(-1, values.shape[-1]), ended.reshape(-1, ended.shape[-1])
    n = int(flat_e.sum(-1).max(initial=0)) if num_episodes is None else int(num_episodes)
    out = np.full((flat_v.shape[0], n), np.nan)
    for i, (v, e) in enumerate(zip(flat_v, flat_e)):
        series = v[e][:n]
        out[i, :len(series)] = series
    return out.reshape(values.shape[:-1] + (n,))
