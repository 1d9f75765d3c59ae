import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "purejaxrl_lab", *args], capture_output=True,
                          text=True, env=ENV, cwd=cwd, timeout=600)


def test_train_end_to_end(tmp_path):
    out = tmp_path / "run"
    p = cli("train", "ppo", "--env", "CartPole-v1", "--seeds", "2", "--out", str(out),
            "--total-timesteps", "1024", "--num-steps", "64", "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "final return mean" in p.stdout and f"results: {out}" in p.stdout
    assert {"summary.json", "metrics.jsonl", "metrics.npz", "curve.png"} <= {f.name for f in out.iterdir()}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_seeds"] == 2 and summary["config"]["num_steps"] == 64
    assert summary["seeds"] == [0, 1] and "jax" in summary["versions"]
    # The same directory again: refused, results untouched.
    before = (out / "summary.json").read_text()
    p = cli("train", "ppo", "--out", str(out), "--total-timesteps", "1024")
    assert p.returncode == 2 and "already exists" in p.stderr
    assert (out / "summary.json").read_text() == before


@pytest.mark.parametrize("args, message", [
    (["trian"], "unknown command 'trian'; closest: 'train'"),
    (["train", "ppp"], "unknown agent 'ppp'; closest: 'ppo'"),
    (["train", "ppo", "--env", "CartPole-v2"], "closest: 'CartPole-v1'"),
    (["train", "ppo", "--lerning-rate", "1e-3"], "unknown option --lerning-rate; closest: --learning-rate"),
    (["train", "ppo", "--seeds", "0"], "seeds=0 is not allowed"),
    (["train", "ppo", "--num-envs", "0"], "num_envs=0 is not allowed"),
    (["train", "ppo", "--num-envs", "four"], "--num-envs"),
    (["train", "ppo", "--num-minibatches", "3"], "must divide"),
    (["train", "ppo", "--log-std-init", "0.5"], "continuous action spaces only"),
])
def test_bad_input_one_line_exit_2(args, message):
    p = cli(*args)
    assert p.returncode == 2
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("purejaxrl-lab: error:"), p.stderr
    assert message in lines[0] and "Traceback" not in p.stderr


def test_list():
    p = cli("list")
    assert p.returncode == 0 and "ppo" in p.stdout and "CartPole-v1" in p.stdout
