"""Checkpoints: exact resume, a SIGKILL mid-run, refusals that touch nothing, load_policy."""

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import struct

import envs
import purejaxrl_lab as lab
from purejaxrl_lab import checkpoint as ckpt
from tests.conftest import SMALL, assert_same

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


class Crash(Exception):
    pass


class CrashAfter:
    """A log sink that raises after `n` iterations were logged: a run dying mid-way."""

    def __init__(self, n):
        self.n, self.seen = n, 0

    def log(self, step, scalars):
        if all(k.startswith("eval_") for k in scalars):  # an evaluation, not an iteration
            return
        self.seen += 1
        if self.seen > self.n:
            raise Crash

    def close(self):
        pass


@pytest.fixture(scope="module")
def uninterrupted():
    return lab.run("ppo", SMALL, "CartPole-v1", seeds=2, num_chunks=6, progress=False)


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_resume_is_bit_identical(uninterrupted, tmp_path):
    d = tmp_path / "ckpt"
    # 6 chunks of 1 iteration, a checkpoint every 2 chunks; dies while logging iteration 5.
    with pytest.raises(Crash):
        lab.run("ppo", SMALL, "CartPole-v1", seeds=2, num_chunks=6, progress=False, checkpoint_dir=d,
                checkpoint_every=2, loggers=[CrashAfter(4)])
    store = ckpt.Checkpoints(d)
    assert store.latest() == 4
    store.close()
    resumed = lab.run("ppo", SMALL, "CartPole-v1", seeds=2, num_chunks=6, progress=False, resume=d)
    assert resumed.resumed_from == 4 and resumed.num_iterations == SMALL.num_iterations
    assert_same(resumed, uninterrupted)
    # The end checkpoint of the resumed run serves policies (its params alone are read).
    policy = lab.load_policy(d, seed=1)
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    agent_act = lab.prepare("ppo", SMALL, "CartPole-v1").agent.act
    params = jax.tree.map(lambda x: x[1], uninterrupted.final_state.params)
    np.testing.assert_array_equal(policy(obs), agent_act(params, obs, jax.random.key(0), True))
    assert policy(obs, jax.random.key(3)).shape == (5,)
    with pytest.raises(ValueError, match=r"seed=7 is not allowed: the run's seeds are \[0, 1\]"):
        lab.load_policy(d, seed=7)


def test_sweep_resume_is_bit_identical(tmp_path):
    grid = {"ent_coef": [0.0, 0.05]}
    full = lab.sweep("ppo", SMALL, "CartPole-v1", grid=grid, seeds=1, num_chunks=3, progress=False)
    d = tmp_path / "sweep"
    with pytest.raises(Crash):
        lab.sweep("ppo", SMALL, "CartPole-v1", grid=grid, seeds=1, num_chunks=3, progress=False,
                  checkpoint_dir=d, checkpoint_every=1, loggers=[CrashAfter(3)])
    resumed = lab.sweep("ppo", SMALL, "CartPole-v1", grid=grid, seeds=1, num_chunks=3, progress=False,
                        resume=d)
    assert resumed.resumed_from == 2
    assert_same(resumed, full)
    with pytest.raises(ValueError, match="this sweep has 2 settings"):
        lab.load_policy(d, seed=0)
    assert lab.load_policy(d, seed=0, setting=1).setting == {"ent_coef": 0.05}


def test_refusals_touch_nothing(tmp_path):
    d = tmp_path / "ckpt"
    lab.run("ppo", SMALL, "CartPole-v1", seeds=2, num_chunks=2, progress=False, checkpoint_dir=d)
    before = snapshot(d)

    def refused(match, **kwargs):
        args = {"config": SMALL, "seeds": 2, "resume": d, **kwargs}
        with pytest.raises(ValueError, match=match):
            lab.run("ppo", args.pop("config"), "CartPole-v1", args.pop("seeds"), progress=False, **args)

    refused(r"config field total_timesteps=1536 differs from the checkpoint's 768 \(it fixes array "
            r"shapes\); num_envs=8 differs from the checkpoint's 4 \(it fixes array shapes\)",
            config=dataclasses.replace(SMALL, num_envs=8, total_timesteps=8 * 32 * 6))
    refused(r"config field learning_rate=0.001 differs .* pass the same config",
            config=dataclasses.replace(SMALL, learning_rate=1e-3))
    refused(r"seeds=\[0, 1, 2\] differs from the checkpoint's \[0, 1\]", seeds=3)
    refused(r"resume=.*missing.* is not allowed: no such directory", resume=tmp_path / "missing")
    refused(r"already holds checkpoints; pass resume=", resume=None, checkpoint_dir=d)
    # A resumed run keeps the checkpoint's chunking (2 chunks of 3 iterations here).
    refused(r"evaluation=\{'every_iterations': 6, 'episodes': 10\} differs from the checkpoint's "
            r"\{'every_iterations': 3, 'episodes': 10\} \(eval_every decides it, in chunks of 3 "
            r"iterations as in the checkpoint\)", eval_every=2)
    with pytest.raises(ValueError, match=r"is not allowed: it holds no complete checkpoint"):
        (tmp_path / "empty").mkdir()
        lab.run("ppo", SMALL, "CartPole-v1", 2, progress=False, resume=tmp_path / "empty")
    # Another agent's checkpoint.
    other = tmp_path / "other"
    store = ckpt.Checkpoints(other)
    meta = {**store_meta(d), "agent": "dqn"}
    store.save(6, Tiny(params={"w": np.zeros(2)}, step=np.zeros(2)), {"loss": np.zeros((2, 6))}, meta)
    store.close()
    with pytest.raises(ValueError, match=r"holds a checkpoint of agent 'dqn', not 'ppo'"):
        lab.run("ppo", SMALL, "CartPole-v1", 2, progress=False, resume=other)
    assert snapshot(d) == before


@struct.dataclass
class Tiny:
    params: dict
    step: np.ndarray


def store_meta(d):
    store = ckpt.Checkpoints(d)
    try:
        return store.meta(store.latest())
    finally:
        store.close()


def test_env_params_must_match(tmp_path):
    d = tmp_path / "ckpt"
    lab.run("ppo", SMALL, "CartPole-v1", seeds=1, num_chunks=2, progress=False, checkpoint_dir=d)
    with pytest.raises(ValueError, match=r"env_params=.*'length': 0.7.* differs from the checkpoint's"):
        lab.run("ppo", SMALL, envs.make("CartPole-v1", length=0.7), 1, progress=False, resume=d)


def test_sigkill_then_resume(tmp_path):
    """A process killed (SIGKILL) mid-run, even mid-save, resumes to the uninterrupted result,
    with a replay buffer in the state (DQN)."""
    out = tmp_path / "run"
    config = {"total_timesteps": 32 * 400, "num_envs": 4, "num_steps": 8, "buffer_size": 2000,
              "batch_size": 32, "learning_starts": 500, "hidden_sizes": (32, 32)}
    args = ["--total-timesteps", str(32 * 400), "--num-envs", "4", "--num-steps", "8",
            "--buffer-size", "2000", "--batch-size", "32", "--learning-starts", "500",
            "--hidden-sizes", "32", "32", "--seeds", "2", "--num-chunks", "40",
            "--checkpoint-every", "1", "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.Popen([sys.executable, "-m", "purejaxrl_lab", "train", "dqn", "--out", str(out), *args],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpts = out / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpts.is_dir() and sum(p.name.isdigit() for p in ckpts.iterdir()) >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "summary.json").exists()
    # What a kill during a save leaves behind: orbax's temporary directory, never a step.
    (ckpts / "999999.orbax-checkpoint-tmp-1").mkdir()
    (ckpts / "999999.orbax-checkpoint-tmp-1" / "junk").write_text("partial")
    p = subprocess.run([sys.executable, "-m", "purejaxrl_lab", "train", "dqn", "--resume", str(out),
                        "--no-progress", "--cache-dir", str(tmp_path / "cache")],
                       env=ENV, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    resumed = lab.load(out)
    assert resumed.resumed_from is not None and resumed.resumed_from > 0
    reference = lab.run("dqn", config, "CartPole-v1", seeds=2, num_chunks=40, progress=False)
    for k, v in reference.metrics.items():
        np.testing.assert_array_equal(resumed.metrics[k], v, err_msg=k)
