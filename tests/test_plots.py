"""Figures of results: drawn data, labels, legends and refusals, on small numpy stand-ins."""

from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest

from agents.common.contract import Score
from purejaxrl_lab import plots

NAN = np.nan
RETURN = Score("episode_return", True, weight="episodes", label="return")


def run(env="CartPole-v1", score=RETURN, unit="env steps", agent="ppo"):
    """A run stand-in: 3 seeds x 4 iterations, 2 evaluations."""
    ret = np.array([[0.0, 2, 4, 6], [3, 5, 7, 9], [6, 8, 10, 12]])  # [seed, iteration]
    return SimpleNamespace(
        agent=agent, env=env, seeds=[0, 1, 2], unit=unit, score=score,
        metrics={score.metric: ret, "loss": -ret, "eval_return": np.array([[1.0, 2], [3, 4], [5, 6]])},
        units=np.array([10, 20, 30, 40]), eval_units=np.array([20, 40]),
        final_score=ret[:, -1])


def sweep():
    """A sweep stand-in: 2 settings x 3 seeds x 4 iterations; setting 1 never finishes an episode."""
    r = run()
    ret = np.stack([r.metrics["episode_return"], np.full((3, 4), NAN)])
    r.settings = [{"learning_rate": 0.001}, {"learning_rate": 0.01}]
    r.metrics = {"episode_return": ret, "eval_return": np.stack([r.metrics["eval_return"]] * 2)}
    r.final_score = ret[:, :, -1]
    return r


def drawn(fig):
    """[(x, y)] of the curves drawn on the first axes."""
    return [(line.get_xdata(), line.get_ydata()) for line in fig.axes[0].lines]


def legend_texts(fig):
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_forward_fill_known_values():
    x = np.array([[NAN, 1, NAN, 3, NAN], [2, NAN, NAN, NAN, 5]])
    np.testing.assert_array_equal(plots.forward_fill(x), [[NAN, 1, 1, 3, 3], [2, 2, 2, 2, 5]])


def test_mean_curve_is_the_mean_across_seeds():
    r = run()
    fig = plots.curves_figure([("ppo", r.units, r.metrics["episode_return"])], statistic="mean",
                              xlabel="env steps (per seed)", ylabel="return")
    [(x, y)] = drawn(fig)
    np.testing.assert_array_equal(x, [10, 20, 30, 40])
    np.testing.assert_allclose(y, [(0 + 3 + 6) / 3, (2 + 5 + 8) / 3, (4 + 7 + 10) / 3, (6 + 9 + 12) / 3])
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("env steps (per seed)", "return")
    assert legend_texts(fig) == ["ppo"]
    assert ax.get_legend().get_title().get_text() == "mean across seeds, 95% bootstrap band"
    plt.close(fig)


def test_nan_points_carry_forward_and_leading_ones_are_left_out():
    values = np.array([[NAN, 1, NAN, 3], [NAN, 3, 5, NAN]])
    fig = plots.curves_figure([("a", np.arange(4), values)], statistic="mean")
    [(x, y)] = drawn(fig)
    np.testing.assert_array_equal(x, [1, 2, 3])
    np.testing.assert_allclose(y, [(1 + 3) / 2, (1 + 5) / 2, (3 + 5) / 2])
    plt.close(fig)


def test_smoothing_is_a_trailing_mean_whose_first_points_average_what_exists():
    # k=2 on [0, 2, 4, 6]: [0, (0+2)/2, (2+4)/2, (4+6)/2] = [0, 1, 3, 5]
    fig = plots.curves_figure([("a", np.arange(4), np.array([[0.0, 2, 4, 6]]))], "mean", smoothing=2)
    np.testing.assert_allclose(drawn(fig)[0][1], [0, 1, 3, 5])
    plt.close(fig)
    # k=3, a leading NaN: [nan, 3, 6, 9] -> [nan, 3, (3+6)/2, (3+6+9)/3] = [-, 3, 4.5, 6]
    fig = plots.curves_figure([("a", np.arange(4), np.array([[NAN, 3, 6, 9]]))], "mean", smoothing=3)
    np.testing.assert_allclose(drawn(fig)[0][1], [3, 4.5, 6])
    plt.close(fig)


def test_at_most_200_points_first_and_last_included():
    values = np.arange(1000.0)[None]
    fig = plots.curves_figure([("a", np.arange(1000), values)], statistic="median")
    [(x, y)] = drawn(fig)
    assert len(x) <= plots.MAX_POINTS and (x[0], x[-1]) == (0, 999)
    np.testing.assert_array_equal(y, x)
    plt.close(fig)


def test_several_curves_put_the_legend_outside_right_of_the_axes():
    r = run()
    items = [("one", r.units, r.metrics["episode_return"]), ("two", r.units, 2 * r.metrics["episode_return"])]
    fig = plots.curves_figure(items)
    assert len(drawn(fig)) == 2
    fig.canvas.draw()
    legend_box = fig.axes[0].get_legend().get_window_extent().transformed(fig.transFigure.inverted())
    axes_box = fig.axes[0].get_position()
    assert legend_box.x0 >= axes_box.x1 and legend_box.x1 <= 1.0
    plt.close(fig)


def test_an_all_nan_item_keeps_a_legend_entry_and_draws_nothing():
    r = run()
    items = [("ok", r.units, r.metrics["episode_return"]), ("dead", r.units, np.full((3, 4), NAN))]
    fig = plots.curves_figure(items)
    assert len(drawn(fig)) == 1
    assert legend_texts(fig) == ["ok", "dead (no value: metric never finite)"]
    plt.close(fig)


def test_a_seed_with_no_value_is_left_out_and_named():
    values = np.array([[1.0, 2], [NAN, NAN], [3, 4]])
    fig = plots.curves_figure([("a", np.arange(2), values)], statistic="mean")
    np.testing.assert_allclose(drawn(fig)[0][1], [2, 3])
    assert legend_texts(fig) == ["a (1 of 3 seeds never finite, left out)"]
    plt.close(fig)


@pytest.mark.parametrize("statistic", ["max", "optimality_gap"])
def test_bad_statistic_is_refused(statistic, tmp_path):
    message = f"statistic={statistic!r} is not allowed: expected one of iqm, mean, median"
    with pytest.raises(ValueError, match=message):
        plots.curves_figure([], statistic=statistic)
    with pytest.raises(ValueError, match=message):
        plots.compare([run()], ["a"], tmp_path, statistic=statistic)


@pytest.mark.parametrize("smoothing", [0, -1, 1.5, True, "2"])
def test_bad_smoothing_is_refused(smoothing):
    with pytest.raises(ValueError, match=r"is not allowed: expected an integer >= 1"):
        plots.curves_figure([], smoothing=smoothing)


def test_curves_creates_missing_folders(tmp_path):
    r = run()
    path = plots.curves([("a", r.units, r.metrics["episode_return"])], tmp_path / "x" / "y" / "c.png")
    assert path == tmp_path / "x" / "y" / "c.png" and path.is_file()


def test_intervals_rows_for_a_sweep(tmp_path):
    paths = plots.compare([sweep(), run()], ["sw", "one"], tmp_path / "cmp")
    assert [p.name for p in paths] == ["curves.png", "final_scores.png"] and all(p.is_file() for p in paths)
    finals = sweep().final_score
    items = [("sw: learning_rate=0.001", finals[0]), ("sw: learning_rate=0.01", finals[1]),
             ("one", np.array([6.0, NAN, 12]))]
    fig = plots.intervals_figure(items, title="final return")
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks == ["sw: learning_rate=0.001", "sw: learning_rate=0.01 (no value)",
                     "one (1 of 3 seeds without value)"]
    assert [len(ax.patches) for ax in fig.axes] == [2, 2]  # no bar for the row without value
    assert [ax.get_title() for ax in fig.axes] == ["IQM", "mean"]
    assert fig.axes[0].get_xlabel() == "final return"
    plt.close(fig)


def test_compare_refuses_mixed_environments_unless_allowed(tmp_path):
    results = [run(env="CartPole-v1"), run(env="Acrobot-v1")]
    message = (r"the results are on different environments \(Acrobot-v1, CartPole-v1\); "
               r"pass allow_mixed_envs=True \(CLI: --mixed-envs\) to overlay them anyway")
    with pytest.raises(ValueError, match=message):
        plots.compare(results, ["a", "b"], tmp_path)
    assert len(plots.compare(results, ["a", "b"], tmp_path, allow_mixed_envs=True)) == 2


def test_compare_refuses_mixed_score_metrics_and_units(tmp_path):
    bandit = run(score=Score("regret", higher_is_better=False))
    with pytest.raises(ValueError, match="different score metrics .*a: episode_return, b: regret"):
        plots.compare([run(), bandit], ["a", "b"], tmp_path)
    with pytest.raises(ValueError, match="different units .*a: env steps, b: rounds"):
        plots.compare([run(), run(unit="rounds")], ["a", "b"], tmp_path)


def test_compare_refuses_an_unknown_metric(tmp_path):
    known = r"\['episode_return', 'eval_return', 'loss'\]"
    with pytest.raises(ValueError, match=r"metric='nope' is not allowed: a has " + known):
        plots.compare([run()], ["a"], tmp_path, metric="nope")


def test_compare_labels_and_eval_metrics_use_eval_units(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    plots.compare([sweep(), run()], ["sw", "one"], tmp_path, statistic="mean")
    curves_fig, intervals_fig = figures
    ax = curves_fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("env steps (per seed)", "return")
    assert ax.get_title() == "CartPole-v1"
    assert legend_texts(curves_fig) == ["sw: learning_rate=0.001",
                                        "sw: learning_rate=0.01 (no value: metric never finite)", "one"]
    assert len(drawn(curves_fig)) == 2
    assert intervals_fig.axes[0].get_xlabel() == "final return"
    figures.clear()
    plots.compare([run()], ["one"], tmp_path, statistic="mean", metric="eval_return")
    [(x, y)] = drawn(figures[0])
    np.testing.assert_array_equal(x, [20, 40])
    np.testing.assert_allclose(y, [3, 4])
    assert figures[0].axes[0].get_ylabel() == "eval return"
    for fig in figures + [curves_fig, intervals_fig]:
        plt.close(fig)


def test_lower_is_better_score_is_named_in_the_intervals_title(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    plots.compare([run(score=Score("regret", higher_is_better=False), unit="rounds")], ["b"], tmp_path)
    assert figures[0].axes[0].get_ylabel() == "regret"
    assert figures[0].axes[0].get_xlabel() == "rounds (per seed)"
    assert figures[1].axes[0].get_xlabel() == "final regret (lower is better)"
    for fig in figures:
        plt.close(fig)


def test_learning_curve_of_a_run_and_of_a_sweep(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    plots.learning_curve(run(), tmp_path / "run.png")
    plots.learning_curve(sweep(), tmp_path / "sweep.png", metric="eval_return", smoothing=2)
    run_fig, sweep_fig = figures
    assert legend_texts(run_fig) == ["ppo (3 seeds)"]
    assert run_fig.axes[0].get_title() == "CartPole-v1"
    assert legend_texts(sweep_fig) == ["learning_rate=0.001", "learning_rate=0.01"]
    assert sweep_fig.axes[0].get_title() == "ppo on CartPole-v1, 3 seeds per setting"
    assert sweep_fig.axes[0].get_ylabel() == "eval return"
    for fig in figures:
        plt.close(fig)


def test_learning_curve_creates_missing_folders(tmp_path):
    path = plots.learning_curve(sweep(), tmp_path / "new" / "curve.png")
    assert path.is_file()
