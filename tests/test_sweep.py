"""Sweeps: one compiled program for every setting x seed, equal to the plain runs."""

import dataclasses
import json

import jax
import numpy as np
import pytest

import envs
import purejaxrl_lab as lab
from agents import ppo
from purejaxrl_lab import grid, runtime
from tests.conftest import SMALL

GRID = {"learning_rate": [1e-3, 3e-4], "env.length": [0.5, 0.8]}


class CountCompilations:
    """XLA compilations while the block runs, counted through jax.monitoring."""

    def __enter__(self):
        self.events = []
        self._listener = lambda name, duration, **kw: self.events.append(name)
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)

    @property
    def count(self):
        return self.events.count("/jax/core/compile/backend_compile_duration")


@pytest.fixture(scope="module")
def swept():
    return lab.sweep("ppo", SMALL, "CartPole-v1", grid=GRID, seeds=2, num_chunks=3, progress=False)


def test_shapes_order_and_ranking(swept):
    n = SMALL.num_iterations
    assert swept.metrics["loss"].shape == (4, 2, n)
    # cartesian order, last name fastest
    assert swept.settings == [{"learning_rate": 1e-3, "env.length": 0.5},
                              {"learning_rate": 1e-3, "env.length": 0.8},
                              {"learning_rate": 3e-4, "env.length": 0.5},
                              {"learning_rate": 3e-4, "env.length": 0.8}]
    assert swept.final_return.shape == (4, 2)
    ranking = swept.ranking()
    iqms = [r["iqm"] for r in ranking]
    assert iqms == sorted(iqms, reverse=True) and [r["rank"] for r in ranking] == [1, 2, 3, 4]
    best = ranking[0]
    assert swept.best() == swept.settings[best["index"]] and swept.best_index() == best["index"]
    assert best["iqm"] == pytest.approx(float(np.mean(swept.final_return[best["index"]])))  # 2 seeds
    low, high = best["iqm_ci95"]
    assert low <= best["iqm"] <= high
    table = swept.table()
    assert table.splitlines()[0].split()[:2] == ["rank", "setting"]
    assert grid.label(swept.settings[best["index"]]) in table.splitlines()[2]
    # the hyperparameters really differ per run inside the state
    lr = np.asarray(swept.final_state.hparams.learning_rate).reshape(4, 2)
    np.testing.assert_allclose(lr, [[1e-3] * 2, [1e-3] * 2, [3e-4] * 2, [3e-4] * 2], rtol=1e-6)


def test_setting_and_seed_equal_the_plain_run(swept):
    # Setting j with seed i is exactly the plain run with that config, env and seed.
    for j in (1, 2):
        s = swept.settings[j]
        plain = lab.run("ppo", dataclasses.replace(SMALL, learning_rate=s["learning_rate"]),
                        envs.make("CartPole-v1", length=s["env.length"]), seeds=[0, 1],
                        num_chunks=3, progress=False)
        for k, v in plain.metrics.items():
            np.testing.assert_array_equal(swept.metrics[k][j], v, err_msg=f"setting {j} {k}")
    view = swept.result(2)
    assert view.config["learning_rate"] == 3e-4 and view.env_params["length"] == 0.5
    np.testing.assert_array_equal(view.final_return, swept.final_return[2])
    # One setting's view names its setting and keeps the throughput of the whole program.
    assert view.setting == swept.settings[2] and view.throughput == pytest.approx(swept.throughput)
    assert "setting                 learning_rate=0.0003 env.length=0.5" in view.table()


def test_one_compilation_however_many_settings():
    lab.sweep("ppo", SMALL, "CartPole-v1", grid={"ent_coef": [0.0, 0.01]}, seeds=2, progress=False)
    with CountCompilations() as two:
        r2 = lab.sweep("ppo", SMALL, "CartPole-v1", grid={"ent_coef": [0.0, 0.02]}, seeds=2,
                       num_chunks=3, progress=False)
    with CountCompilations() as six:
        r6 = lab.sweep("ppo", SMALL, "CartPole-v1", settings={"ent_coef": [0.0, 0.01, 0.02, 0.03, 0.04, 0.05]},
                       seeds=2, num_chunks=3, progress=False)
    # init, evaluation and one chunk program, each compiled once (the chunk runs 3 times); the
    # 6-setting sweep has a new batch size, so it compiles the same three programs once more.
    assert two.count == 3 and six.count == 3
    assert r2.compilations + r2.cache_hits == 3 and r6.compilations + r6.cache_hits == 3
    # ent_coef 0.02 in both. Batches of 12 and 4 runs compile to different kernels, which
    # round differently in the last bits (README, "Same numbers"): equal to float32 rounding.
    np.testing.assert_allclose(r6.metrics["loss"][2], r2.metrics["loss"][1], rtol=1e-5, atol=1e-6)


def test_gamma_sweep_reaches_reward_scaling():
    # normalize_reward tracks the discounted return; a swept gamma must reach it.
    cfg = dataclasses.replace(SMALL, normalize_reward=True)
    r = lab.sweep("ppo", cfg, "CartPole-v1", grid={"gamma": [0.9, 0.99]}, seeds=1, progress=False)
    np.testing.assert_allclose(np.asarray(r.final_state.env_state.gamma), [0.9, 0.99], rtol=1e-6)


def test_save_load_plot(swept, tmp_path):
    out = swept.save(tmp_path / "sweep")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "sweep" and summary["num_settings"] == 4
    assert summary["ranking"][0]["setting"] == swept.best()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 * 2 * SMALL.num_iterations
    assert set(json.loads(lines[0])) >= {"setting", "seed", "iteration", "env_steps", "loss"}
    loaded = lab.load(out)
    assert isinstance(loaded, lab.SweepResults) and loaded.settings == swept.settings
    np.testing.assert_array_equal(loaded.final_return, swept.final_return)
    assert loaded.ranking() == json.loads(json.dumps(swept.ranking()))
    paths = lab.plots.compare([loaded, swept.result(0)], ["sweep", "one"], tmp_path / "cmp")
    assert [p.name for p in paths] == ["curves.png", "final_scores.png"]
    # Each setting's policy, from memory and from the saved params.
    obs = np.zeros((3, 4), np.float32)
    for j in (0, 3):
        np.testing.assert_array_equal(loaded.policy(1, setting=j)(obs), swept.policy(1, setting=j)(obs))
    with pytest.raises(ValueError, match="this sweep has 4 settings"):
        swept.policy(1)


def test_best_breaks_ties_by_area_under_the_curve():
    """Four settings all at 500 in the end: the one that got there first wins."""
    curves = np.array([[400.0, 450, 500, 500], [100, 300, 500, 500], [490, 500, 500, 500],
                       [200, 200, 500, 500]] * 1)[:, None, :].repeat(2, axis=1)  # [setting, seed, it]
    s = lab.SweepResults(agent="ppo", env="CartPole-v1", config={}, seeds=[0, 1],
                         settings=[{"ent_coef": v} for v in (0.0, 0.01, 0.02, 0.03)],
                         metrics={"episode_return": curves, "episodes": np.ones_like(curves)},
                         score=ppo.SCORE, unit="env steps", units_per_iteration=512,
                         compile_time=1.0, run_time=1.0, versions={}, device={})
    assert [r["iqm"] for r in s.ranking()] == [500.0] * 4
    # Areas: (400+450+500+500)/4 = 462.5, 350, 497.5, 350: setting 2 first, then 0; 1 and 3 tie.
    assert [r["index"] for r in s.ranking()] == [2, 0, 1, 3] and s.best() == {"ent_coef": 0.02}
    assert s.ranking()[0]["auc_iqm"] == pytest.approx(497.5)
    assert s.best(rank_by="auc") == {"ent_coef": 0.02}
    with pytest.raises(ValueError, match="rank_by='last' is not allowed"):
        s.ranking(rank_by="last")
    # A cost (lower is better) ranks the other way round.
    low = dataclasses.replace(s, score=dataclasses.replace(ppo.SCORE, higher_is_better=False))
    assert [r["index"] for r in low.ranking()] == [1, 3, 0, 2]


def _refused(match, **kwargs):
    args = {"grid": {"learning_rate": [1e-3]}, **kwargs}
    config = args.pop("config", SMALL)
    # gymnax's spaces and a first PRNG key run eager ops, which XLA compiles the first time
    # in a process: done here, uncounted (otherwise this test fails when run alone).
    env, env_params = envs.make("CartPole-v1")
    env.observation_space(env_params), env.action_space(env_params), jax.random.key(0)
    with CountCompilations() as c, pytest.raises(ValueError, match=match):
        lab.sweep("ppo", config, "CartPole-v1", seeds=1, progress=False, **args)
    assert c.count == 0, "the error must come before any compilation"


def test_bad_sweeps_are_refused_before_compilation():
    _refused(r"grid=\{\} is not allowed", grid={})
    _refused(r"grid\['ent_coef'\]=\[\] is not allowed", grid={"ent_coef": []})
    _refused(r"grid\['ent_coef'\]=0.1 is not allowed: expected a list", grid={"ent_coef": 0.1})
    _refused(r"unknown config field .* 'lerning_rate'; closest: 'learning_rate'",
             grid={"lerning_rate": [1e-3]})
    _refused(r"unknown environment parameter 'env.lenght'; closest: 'env.length'",
             grid={"env.lenght": [1.0]})
    _refused(r"num_envs cannot be swept in one compiled program: it fixes array shapes.*"
             r"Tunable: learning_rate, gamma", grid={"num_envs": [4, 8]})
    _refused(r"hidden_sizes cannot be swept .* fixes array shapes", grid={"hidden_sizes": [(32,), (64,)]})
    _refused(r"anneal_lr cannot be swept .* it is fixed when the program is built",
             grid={"anneal_lr": [True, False]})
    _refused(r"gamma=1.5 is not allowed", grid={"gamma": [0.9, 1.5]})
    _refused(r"env.max_steps_in_episode=10.5 is not allowed: expected an integer",
             grid={"env.max_steps_in_episode": [10.5]})
    _refused(r"settings: the value lists must have equal lengths \(learning_rate has 2, ent_coef has 1\)",
             grid=None, settings={"learning_rate": [1e-3, 1e-4], "ent_coef": [0.0]})
    _refused(r"settings\[1\] has names \['ent_coef'\] but settings\[0\] has \['learning_rate'\]",
             grid=None, settings=[{"learning_rate": 1e-3}, {"ent_coef": 0.0}])
    _refused(r"appears twice", grid=None, settings=[{"ent_coef": 0.0}, {"ent_coef": 0.0}])
    _refused(r"exactly one of grid= .* or settings=", settings=[{"ent_coef": 0.0}])
    _refused(r"devices=99 is not allowed: only", devices=99)


def test_cli_grid_parsing():
    assert grid.parse_cli(["learning_rate=1e-3,3e-4", "env.max_steps_in_episode=100,200"]) == {
        "learning_rate": [1e-3, 3e-4], "env.max_steps_in_episode": [100, 200]}
    with pytest.raises(ValueError, match="--grid ent_coef: 'x' is not a number"):
        grid.parse_cli(["ent_coef=0,x"])
    with pytest.raises(ValueError, match="expected NAME=V1,V2"):
        grid.parse_cli(["ent_coef"])


def test_layout_pads_to_two_runs_per_device():
    layout = runtime.Layout(6, jax.devices()[:1])
    assert layout.padded == 6 and layout.padding == 0
    assert runtime.Layout(1, jax.devices()[:1]).padded == 1  # a single run, unbatched
    layout.num_devices, layout.padded = 4, 8  # the arithmetic, without 4 devices in this process
    np.testing.assert_array_equal(layout.pad(np.arange(6)), [0, 1, 2, 3, 4, 5, 5, 5])
