"""purejaxrl_lab.stats against direct computations on known data."""

import numpy as np
import pytest

from purejaxrl_lab import stats


def test_point_estimates():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 100.0])
    # IQM: trim 25% (2 of 8) from each end, mean of [3, 4, 5, 6] = 4.5
    assert stats.iqm(x) == pytest.approx(4.5)
    assert stats.mean(x) == pytest.approx(128.0 / 8)
    assert stats.median(x) == pytest.approx(4.5)  # (4 + 5) / 2
    # optimality gap to 5: shortfalls 4, 3, 2, 1, 0, 0, 0, 0 -> 10 / 8
    assert stats.optimality_gap(x, threshold=5.0) == pytest.approx(1.25)
    assert stats.optimality_gap(np.array([0.5, 1.5])) == pytest.approx(0.25)  # threshold 1
    # aggregate pools runs and tasks: [runs=2, tasks=2]
    assert stats.aggregate([[1.0, 2.0], [3.0, 4.0]], stats.mean) == pytest.approx(2.5)


def test_bootstrap_intervals():
    low, high = stats.bootstrap_ci(np.full(10, 3.0), stats.mean)
    assert low == high == pytest.approx(3.0)
    low, high = stats.bootstrap_ci(np.arange(100.0), stats.mean)
    assert low < 49.5 < high and high - low < 25
    # Stratified: task 0 scores all 0, task 1 all 10. Resampling runs within each task keeps
    # 4 zeros and 4 tens in every resample, so the mean is exactly 5 every time; pooled
    # resampling (one task of 8 scores) varies.
    scores = np.array([[0.0, 10.0]] * 4)
    assert stats.stratified_bootstrap_ci(scores, stats.mean) == (pytest.approx(5.0), pytest.approx(5.0))
    low, high = stats.stratified_bootstrap_ci(scores.reshape(-1), stats.mean)
    assert low < 5.0 < high
    # Same seed, same interval.
    rng = np.random.default_rng(1)
    data = rng.normal(size=(10, 3))
    assert stats.stratified_bootstrap_ci(data) == stats.stratified_bootstrap_ci(data)
    low, high = stats.stratified_bootstrap_ci(data, stats.iqm)
    assert low <= stats.aggregate(data, stats.iqm) <= high


def test_probability_of_improvement():
    # x = [1, 3], y = [2, 2]: pairs (1,2) lose, (3,2) win -> 2 of 4 -> 0.5
    assert stats.probability_of_improvement([1.0, 3.0], [2.0, 2.0]) == pytest.approx(0.5)
    # ties count one half: x = [2], y = [2, 1] -> (0.5 + 1) / 2 = 0.75
    assert stats.probability_of_improvement([2.0], [2.0, 1.0]) == pytest.approx(0.75)
    # two tasks, averaged: task 0 always better (1), task 1 always worse (0) -> 0.5
    x = np.array([[5.0, 0.0], [6.0, 1.0]])
    y = np.array([[1.0, 7.0], [2.0, 8.0]])
    assert stats.probability_of_improvement(x, y) == pytest.approx(0.5)
    assert stats.probability_of_improvement(y, x) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="x has 2 tasks, y has 1"):
        stats.probability_of_improvement(x, [1.0, 2.0])


def test_performance_profile():
    scores = np.array([0.0, 1.0, 2.0, 3.0])
    # fraction strictly above tau: tau=-1 -> 4/4, 0 -> 3/4, 1.5 -> 2/4, 3 -> 0
    np.testing.assert_allclose(stats.performance_profile(scores, [-1.0, 0.0, 1.5, 3.0]),
                               [1.0, 0.75, 0.5, 0.0])
    taus = np.linspace(-5, 5, 11)  # the 40 standard normals lie well inside [-5, 5]
    low, high = stats.performance_profile_ci(np.random.default_rng(0).normal(size=(20, 2)), taus)
    point = stats.performance_profile(np.random.default_rng(0).normal(size=(20, 2)), taus)
    assert np.all(low <= point + 1e-12) and np.all(point <= high + 1e-12)
    # The band is not trivial: below the lowest score every resample gives 1, above the
    # highest 0; in between the band has width.
    assert low[0] == high[0] == 1.0 and low[-1] == high[-1] == 0.0
    middle = np.argmin(np.abs(taus))  # tau = 0, about half of 40 standard normals above it
    assert 0.2 < low[middle] < point[middle] < high[middle] < 0.8
