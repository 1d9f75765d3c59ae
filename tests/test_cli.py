import json
import os
import subprocess
import sys

import tempfile

import numpy as np
import pytest

# The compilation cache goes to a temporary XDG cache home, not the user's.
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "XDG_CACHE_HOME": tempfile.mkdtemp(prefix="pjl-cache-")}
SMALL = ["--total-timesteps", "768", "--num-envs", "4", "--num-steps", "32", "--update-epochs", "2",
         "--num-minibatches", "2", "--num-chunks", "3", "--no-progress"]


def cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "purejaxrl_lab", *args], capture_output=True,
                          text=True, env=env or ENV, cwd=cwd, timeout=600)


def test_train_end_to_end(tmp_path):
    out = tmp_path / "run"
    p = cli("train", "ppo", "--env", "CartPole-v1", "--seeds", "2", "--out", str(out),
            "--total-timesteps", "1024", "--num-steps", "64", "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "final return mean" in p.stdout and f"results: {out}" in p.stdout
    assert {"summary.json", "metrics.jsonl", "metrics.npz", "curve.png", "log.jsonl",
            "checkpoints"} <= {f.name for f in out.iterdir()}
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
    (["train", "ppo", "--devices", "99"], "devices=99 is not allowed: only"),
    (["train", "ppo", "--log", "tensorbord"], "unknown log sink 'tensorbord'; closest: 'tensorboard'"),
    (["train", "ppo", "--resume", "no/such/dir"], "resume='no/such/dir' is not allowed"),
    (["train", "ppo", "--num-processes", "2"], "coordinator_address, num_processes and process_id go together"),
    (["sweep", "ppo"], "sweep needs --grid NAME=V1,V2"),
    (["sweep", "ppo", "--grid", "num_envs=4,8"], "num_envs cannot be swept in one compiled program"),
    (["sweep", "ppo", "--grid", "lerning_rate=1e-3"], "closest: 'learning_rate'"),
    (["sweep", "ppo", "--grid", "ent_coef=0,x"], "--grid ent_coef: 'x' is not a number"),
    (["sweep", "ppo", "--grid", "ent_coef"], "expected NAME=V1,V2"),
    (["sweep", "ppo", "--grid", "env.lenght=1,2"], "closest: 'env.length'"),
    (["plot", "no/such/dir"], "holds no summary.json"),
    (["plot"], "dirs"),
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


def test_sweep_plot_and_compilation_cache(tmp_path):
    out = tmp_path / "sweep"
    p = cli("sweep", "ppo", "--seeds", "2", "--grid", "learning_rate=1e-3,3e-4", "env.length=0.5,1.0",
            "--out", str(out), "--checkpoint-every", "0", *SMALL)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("rank"))
    assert lines[header].split()[:2] == ["rank", "setting"] and lines[header + 2].startswith("1 ")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "sweep" and summary["num_settings"] == 4 and summary["compilations"] == 2
    assert summary["programs_cached"] is False
    assert not (out / "checkpoints").exists()
    # The same sweep again: both programs come from the caches, lowered (program cache) and
    # compiled (JAX's persistent compilation cache).
    again = tmp_path / "again"
    p = cli("sweep", "ppo", "--seeds", "2", "--grid", "learning_rate=1e-3,3e-4", "env.length=0.5,1.0",
            "--out", str(again), "--checkpoint-every", "0", *SMALL)
    assert p.returncode == 0, p.stderr
    s2 = json.loads((again / "summary.json").read_text())
    assert s2["compilations"] == 0 and s2["compilation_cache_hits"] == 2 and s2["programs_cached"] is True
    assert "no tracing (program cache)" in p.stdout
    a, b = np.load(out / "metrics.npz"), np.load(again / "metrics.npz")
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])
    # plot compares directories on one figure
    run = tmp_path / "run"
    assert cli("train", "ppo", "--seeds", "2", "--out", str(run), *SMALL).returncode == 0
    p = cli("plot", str(out), str(run), "--out", str(tmp_path / "figs"))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "figs" / "curves.png").stat().st_size > 5000
    assert (tmp_path / "figs" / "final_returns.png").stat().st_size > 5000
    assert "sweep: ppo on CartPole-v1, 2 seeds, 4 settings" in p.stdout


def test_resume_after_interruption(tmp_path):
    out = tmp_path / "run"
    p = cli("train", "ppo", "--seeds", "2", "--out", str(out), "--checkpoint-every", "1", *SMALL)
    assert p.returncode == 0, p.stderr
    finished = np.load(out / "metrics.npz")["loss"].copy()
    # As if it had died before writing results: resume from the end checkpoint, options
    # taken from it; a differing shape field is refused by name.
    for name in ("summary.json", "metrics.npz", "metrics.jsonl"):
        (out / name).unlink()
    p = cli("train", "ppo", "--resume", str(out), "--num-envs", "8")
    assert p.returncode == 2 and "num_envs=8 differs from the checkpoint's 4 (it fixes array shapes)" in p.stderr
    p = cli("sweep", "ppo", "--resume", str(out))
    assert p.returncode == 2 and "the checkpoint is of a train run; use `purejaxrl-lab train`" in p.stderr
    p = cli("train", "ppo", "--resume", str(out), "--no-progress")
    assert p.returncode == 0, p.stderr
    np.testing.assert_array_equal(np.load(out / "metrics.npz")["loss"], finished)
    p = cli("train", "ppo", "--resume", str(out))
    assert p.returncode == 2 and "that run is complete" in p.stderr


def test_sweep_resume(tmp_path):
    out = tmp_path / "sweep"
    grid = ["--grid", "ent_coef=0,0.02", "env.length=0.5,1.0"]
    p = cli("sweep", "ppo", "--seeds", "1", "--out", str(out), "--checkpoint-every", "1", *grid, *SMALL)
    assert p.returncode == 0, p.stderr
    finished = np.load(out / "metrics.npz")["loss"].copy()
    (out / "summary.json").unlink()
    p = cli("sweep", "ppo", "--resume", str(out), "--no-progress")  # settings from the checkpoint
    assert p.returncode == 0, p.stderr
    np.testing.assert_array_equal(np.load(out / "metrics.npz")["loss"], finished)
    (out / "summary.json").unlink()
    p = cli("sweep", "ppo", "--resume", str(out), "--grid", "ent_coef=0,0.03", "env.length=0.5,1.0")
    assert p.returncode == 2 and "settings=" in p.stderr and "differs from the checkpoint's" in p.stderr
