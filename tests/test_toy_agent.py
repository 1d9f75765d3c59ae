"""The lab serves an agent unlike PPO (tests/toy_agent.py): scored by regret (lower is better),
counted in rounds, with a nested config and an integer tunable, acting on the environment
state. Runs, sweeps, progress, tables, files, plots, logs, checkpoints and resume, policies
and the CLI all work for it."""

import json
import re

import numpy as np
import pytest

import purejaxrl_lab as lab
from purejaxrl_lab import checkpoint as ckpt
from purejaxrl_lab import cli, loggers
from tests import toy_agent
from tests.conftest import assert_same

ENV = "BernoulliBandit-misc"
AGENT = "tests.toy_agent"
CONFIG = {"total_rounds": 8 * 16 * 24, "exploration.epsilon_end": 0.02, "decay_rounds": 128}


class CrashAfter:
    """A log sink that raises after `n` iterations were logged."""

    def __init__(self, n):
        self.n, self.seen = n, 0

    def log(self, step, scalars):
        self.seen += not all(k.startswith("eval_") for k in scalars)
        if self.seen > self.n:
            raise RuntimeError("crash")

    def close(self):
        pass


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """(results, log rows) of 3 seeds, 24 iterations in 6 chunks, checkpointed."""
    d = tmp_path_factory.mktemp("toy")
    sink = loggers.JsonlLogger(d / "log.jsonl", step_name="rounds")
    r = lab.run(AGENT, CONFIG, ENV, seeds=3, num_chunks=6, progress=False, loggers=[sink],
                checkpoint_dir=d / "checkpoints", checkpoint_every=2)
    sink.close()
    return r, [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines()], d


def test_results_speak_in_the_agents_terms(toy):
    r, rows, _ = toy
    assert r.unit == "rounds" and r.units_per_iteration == 8 * 16 and r.num_iterations == 24
    assert r.metrics["regret"].shape == (3, 24) and r.score == toy_agent.SCORE
    np.testing.assert_array_equal(r.units, 128 * np.arange(1, 25))
    # Regret is a cost: win-stay/lose-shift is learned. A random arm costs 0.4 a round
    # (0.9 - 0.5); the learned rule about 0.1 (on the worse arm a tenth of the time: 0.8 / 10).
    assert r.metrics["regret"][:, :2].mean() > 0.3 and np.all(r.final_score < 0.2)
    # episode_return is NaN in iterations where no 100-round episode ended: allowed, not reported.
    assert np.isnan(r.metrics["episode_return"]).any() and r.non_finite() == {}
    with pytest.raises(AttributeError, match="scored by regret: use final_score"):
        r.final_return
    table = r.table()
    for pattern in (r"rounds per seed\s+3,072", r"rounds / s\s+[\d,]+", r"state per seed\s+308 B",
                    r"final regret mean \(lower is better\)\s+0\.\d+  95% CI \[0\.", r"final regret IQM"):
        assert re.search(pattern, table), (pattern, table)
    # The integer tunable is an int32 array in the state.
    assert r.final_state.hparams.decay_rounds.dtype == np.int32
    # Logs are keyed by the agent's unit, in order (wandb drops a step older than the last);
    # the evaluations come after chunks 1..6 (4 iterations each).
    steps = [row["rounds"] for row in rows]
    assert steps == sorted(steps)
    assert [row["rounds"] for row in rows if "regret" in row] == list(r.units)
    assert [row["rounds"] for row in rows if "eval_return" in row] == [512 * k for k in range(1, 7)]
    assert r.eval_iterations == [4, 8, 12, 16, 20, 24]


def test_save_load_plot(toy, tmp_path):
    r, _, _ = toy
    out = r.save(tmp_path / "saved")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unit"] == "rounds" and summary["score"]["higher_is_better"] is False
    assert summary["config"]["exploration"] == {"epsilon_start": 1.0, "epsilon_end": 0.02}
    assert "lower is better" in summary["score"]["definition"]
    loaded = lab.load(out)
    assert loaded.score == r.score and loaded.unit == "rounds"
    timing = ("rounds / s", "run time", "compile time")  # saved rounded to milliseconds
    same_lines = [line for line in r.table().splitlines() if not line.startswith(timing)]
    assert [line for line in loaded.table().splitlines() if not line.startswith(timing)] == same_lines
    np.testing.assert_array_equal(loaded.final_score, r.final_score)
    from purejaxrl_lab import plots

    fig = plots.curves_figure([("toy", r.units, r.metrics["regret"])], xlabel="rounds (per seed)",
                              ylabel="regret")
    assert fig.axes[0].get_xlabel() == "rounds (per seed)" and len(fig.axes[0].lines) == 1
    assert r.plot(tmp_path / "new" / "curve.png").is_file()  # creates the missing folder


def test_resume_is_bit_identical(toy, tmp_path):
    r, _, _ = toy
    d = tmp_path / "ckpt"
    with pytest.raises(RuntimeError, match="crash"):
        lab.run(AGENT, CONFIG, ENV, seeds=3, num_chunks=6, progress=False, checkpoint_dir=d,
                checkpoint_every=2, loggers=[CrashAfter(14)])
    resumed = lab.run(AGENT, CONFIG, ENV, seeds=3, num_chunks=6, progress=False, resume=d)
    assert resumed.resumed_from == 8
    assert_same(resumed, r)


def test_policies_act_on_the_environment_state(toy):
    r, _, d = toy
    import envs
    import jax

    env, params = envs.make(ENV)
    _, state = env.reset(jax.random.key(0), params)
    state = state.replace(last_action=1, last_reward=1)
    for policy in (r.policy(2), lab.load_policy(d, seed=2)):
        assert policy.act_input == "env_state"
        assert int(policy(state)) == int(toy_agent.greedy(jax.tree.map(lambda x: x[2], r.params), state))
    # After a win, stay: the learned rule (the greedy arm after (arm 1, reward 1) is 1).
    assert int(r.policy(2)(state)) == 1
    evaluation = lab.evaluate(r.policy(2), episodes=20, seed=3)
    # 100 rounds per episode; random arms earn 50 on average, the learned rule about 80.
    assert evaluation.returns.shape == (20,) and np.all(evaluation.lengths == 100)
    assert evaluation.mean > 65 and evaluation.ci95[0] <= evaluation.mean <= evaluation.ci95[1]
    assert np.all(r.metrics["eval_length"] == 100) and r.metrics["eval_return"][:, -1].mean() > 65


def test_sweep_over_an_integer_tunable():
    s = lab.sweep(AGENT, CONFIG, ENV, grid={"decay_rounds": [16, 1024]}, seeds=2, num_chunks=3,
                  progress=False, eval_every=0)
    np.testing.assert_array_equal(np.asarray(s.final_state.hparams.decay_rounds), [16, 16, 1024, 1024])
    # Lower regret is better: the short decay explores less and wins here.
    assert s.best() == {"decay_rounds": 16}
    assert s.ranking()[0]["iqm"] < s.ranking()[1]["iqm"]
    assert "IQM final regret" in s.table() and "lower regret is better" in s.table()
    with pytest.raises(ValueError, match=r"decay_rounds=16.5 is not allowed: expected an integer"):
        lab.sweep(AGENT, CONFIG, ENV, grid={"decay_rounds": [16.5]}, progress=False)
    with pytest.raises(ValueError, match=r"exploration.epsilon_end cannot be swept .* fixed when the "
                                         r"program is built"):
        lab.sweep(AGENT, CONFIG, ENV, grid={"exploration.epsilon_end": [0.1, 0.2]}, progress=False)


def test_cli_trains_lists_and_resumes_it(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import agents

    monkeypatch.setitem(agents._AGENTS, "toy", AGENT)
    assert cli.main(["list"]) == 0
    width = max(map(len, agents.available()))  # the name column fits the longest name
    assert f"{'toy':<{width}} counts rounds; scored by regret (lower is better); presets: slow" in \
        capsys.readouterr().out
    args = ["train", "toy", "--env", ENV, "--seeds", "2", "--total-rounds", "3.072e3",
            "--exploration.epsilon-end", "0.02", "--decay-rounds", "128", "--num-chunks", "4",
            "--checkpoint-every", "1", "--no-progress", "--no-compilation-cache", "--out", "run"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "final regret mean (lower is better)" in out and "rounds per seed" in out
    summary = json.loads(open("run/summary.json").read())
    assert summary["config"]["exploration"]["epsilon_end"] == 0.02
    assert summary["config"]["total_rounds"] == 3072
    finished = np.load("run/metrics.npz")["regret"].copy()
    for name in ("summary.json", "metrics.npz", "metrics.jsonl", "params.npz"):
        (tmp_path / "run" / name).unlink()
    assert cli.main(["train", "toy", "--resume", "run", "--no-progress", "--no-compilation-cache"]) == 0
    np.testing.assert_array_equal(np.load("run/metrics.npz")["regret"], finished)
    store = ckpt.Checkpoints(tmp_path / "run" / "checkpoints")
    assert store.meta(store.latest())["config"]["exploration"]["epsilon_end"] == 0.02
    store.close()


def test_progress_speaks_in_the_agents_terms(capsys):
    lab.run(AGENT, CONFIG, ENV, seeds=2, num_chunks=2, progress=True, eval_every=0)
    err = capsys.readouterr().err
    assert "tests.toy_agent BernoulliBandit-misc x2 seeds" in err
    assert "rounds=3,072" in err and "regret=" in err
