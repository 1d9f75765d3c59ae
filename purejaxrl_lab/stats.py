"""Aggregate statistics for seed-level results (Agarwal et al. 2021, "Deep RL at the Edge of
the Statistical Precipice"): interquartile mean and percentile-bootstrap confidence intervals."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats as _stats


def mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% (25% trimmed from each end)."""
    return _stats.trim_mean(x, 0.25, axis=axis)


STATISTICS: dict[str, Callable] = {"mean": mean, "iqm": iqm}


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
