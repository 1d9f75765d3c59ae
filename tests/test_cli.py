"""The command line: bad input (one line, exit 2, no traceback) and commands, in-process through
`cli.main(argv)`; the real entry point in a subprocess once."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from purejaxrl_lab import claims, cli

# The compilation cache goes to a temporary XDG cache home, not the user's.
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "XDG_CACHE_HOME": tempfile.mkdtemp(prefix="pjl-cache-")}
# The config of tests.conftest.SMALL, on the command line. In-process runs use the tests'
# compilation cache (tests/conftest.py), not one of their own.
SMALL = ["--total-timesteps", "768", "--num-envs", "4", "--num-steps", "32", "--update-epochs", "2",
         "--num-minibatches", "2", "--num-chunks", "3", "--no-progress", "--no-compilation-cache"]


def run_cli(capsys, *args):
    """(exit status, stdout, stderr) of `purejaxrl-lab ARGS` run in this process."""
    status = cli.main(list(map(str, args)))
    out, err = capsys.readouterr()
    return status, out, err


def forget_results(directory):
    """Deletes a finished run's results, as if it had died after its last checkpoint."""
    for name in ("summary.json", "metrics.npz", "metrics.jsonl", "params.npz"):
        Path(directory, name).unlink()


def one_line_error(capsys, *args) -> str:
    status, _, err = run_cli(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("purejaxrl-lab: error:"), err
    return lines[0]


def test_train_end_to_end_subprocess(tmp_path):
    """The installed entry point: trains, saves, plots, evaluates; the compilation cache makes
    the second identical run compile nothing."""
    def train(out):
        return subprocess.run([sys.executable, "-m", "purejaxrl_lab", "train", "ppo", "--seeds", "2",
                               "--out", str(out), "--total-timesteps", "7.68e2", *SMALL[2:-1]],
                              capture_output=True, text=True, env=ENV, timeout=600)

    p = train(tmp_path / "run")
    assert p.returncode == 0, p.stderr
    out = tmp_path / "run"
    assert "final return mean" in p.stdout and f"results: {out}" in p.stdout
    assert "state per seed" in p.stdout and "evaluation return mean" in p.stdout
    assert {"summary.json", "metrics.jsonl", "metrics.npz", "params.npz", "curve.png", "log.jsonl",
            "checkpoints"} <= {f.name for f in out.iterdir()}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_seeds"] == 2 and summary["config"]["total_timesteps"] == 768
    assert summary["seeds"] == [0, 1] and "jax" in summary["versions"]
    assert summary["eval_iterations"] == [2, 4, 6] and summary["compilations"] == 3
    p = train(tmp_path / "again")
    assert p.returncode == 0, p.stderr
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["compilations"] == 0 and again["compilation_cache_hits"] == 3
    a, b = np.load(out / "metrics.npz"), np.load(tmp_path / "again" / "metrics.npz")
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("args, message", [
    (["trian"], "unknown command 'trian'; closest: 'train'"),
    (["train"], "train needs an AGENT, one of: alphazero, dpo, dqn, dyna_q, epsilon_greedy, "
                "expected_sarsa, gradient_bandit, grpo, lin_ts, linucb, muzero, neural_linear, ppo, "
                "ppo_rlhf, pqn, q_learning, reinforce, reward_model, sac, sarsa, sft, thompson, ucb"),
    (["train", "ppp"], "unknown agent 'ppp'; closest: 'ppo'"),
    (["train", "no.such.module"], "agent 'no.such.module': no registered agent of that name"),
    (["train", "ppo", "--env", "CartPole-v2"], "closest: 'CartPole-v1'"),
    (["train", "ppo", "--lerning-rate", "1e-3"], "unknown option --lerning-rate; closest: --learning-rate"),
    (["train", "ppo", "--seeds", "0"], "seeds=0 is not allowed"),
    (["train", "ppo", "--num-envs", "0"], "num_envs=0 is not allowed"),
    (["train", "ppo", "--num-envs", "four"], "--num-envs"),
    (["train", "ppo", "--total-timesteps", "768.5"], "--total-timesteps"),
    (["train", "ppo", "--num-minibatches", "3"], "must divide"),
    (["train", "ppo", "--log-std-init", "0.5"], "continuous action spaces only"),
    (["train", "ppo", "--preset", "pendullum"], "unknown preset 'pendullum'; closest: 'pendulum'"),
    (["train", "ppo", "--devices", "99"], "devices=99 is not allowed: only"),
    (["train", "ppo", "--eval-episodes", "0"], "eval_episodes=0 is not allowed"),
    (["train", "ppo", "--log", "tensorbord"], "unknown log sink 'tensorbord'; closest: 'tensorboard'"),
    (["train", "ppo", "--resume", "no/such/dir"], "resume='no/such/dir' is not allowed: no such directory"),
    (["train", "ppo", "--out", "/proc/x", "--no-compilation-cache"],
     "out='/proc/x' is not allowed: cannot create it"),
    (["train", "ppo", "--cache-dir", "/proc/x", "--out", "{tmp}/run"],
     "cache_dir='/proc/x' is not allowed: cannot create it"),
    (["train", "ppo", "--num-processes", "2"], "coordinator_address, num_processes and process_id go together"),
    (["sweep", "ppo"], "sweep needs --grid NAME=V1,V2"),
    (["sweep", "ppo", "--grid", "num_envs=4,8"], "num_envs cannot be swept in one compiled program"),
    (["sweep", "ppo", "--grid", "lerning_rate=1e-3"], "closest: 'learning_rate'"),
    (["sweep", "ppo", "--grid", "ent_coef=0,x"], "--grid ent_coef: 'x' is not a number"),
    (["sweep", "ppo", "--grid", "ent_coef"], "expected NAME=V1,V2"),
    (["sweep", "ppo", "--grid", "env.lenght=1,2"], "closest: 'env.length'"),
    (["train", "ppo", "--total-timesteps", "1e99"], "at most 2**31 - 1 fit the programs' counters"),
    (["plot", "no/such/dir"], "holds no summary.json"),
    (["list", "extra"], "list takes no arguments, got 'extra'"),
    (["plot"], "dirs"),
    (["train", "dqn", "--env", "Pendulum-v1"], "agents for continuous actions: ppo, sac"),
    (["train", "sac"], "agent sac acts in continuous action spaces, and CartPole-v1 has discrete"),
    (["train", "dqn", "--buffer-size", "64"], "buffer_size=64 is not allowed: must hold at least one batch"),
    (["train", "dqn", "--learning-starts", "1e6"], "learning_starts=1000000 is not allowed: must be below"),
    (["train", "sac", "--env", "Pendulum-v1", "--tau", "0"], "tau=0.0 is not allowed"),
    (["train", "pqn", "--epsilon-start", "2"], "epsilon_start=2.0 is not allowed"),
    (["train", "alphazero", "--env", "TicTacToe-v0", "--num-simulations", "0"],
     "num_simulations=0 is not allowed: expected an integer >= 1"),
    (["train", "muzero", "--env", "TicTacToe-v0", "--max-num-considered-actions", "12"],
     "max_num_considered_actions=12 is not allowed: must be at most the 9 actions of TicTacToe-v0"),
    (["train", "alphazero", "--env", "TicTacToe-v0", "--env-param", "opponent=perfekt"],
     "unknown opponent 'perfekt'; closest: 'perfect'"),
    (["train", "alphazero", "--env", "Asterix-MinAtar"],
     "Asterix-MinAtar's step is random (the same state and action gave different outcomes); "
     "MuZero learns a model and fits it"),
    (["play", "ttt", "--first", "robot"], "unknown first 'robot'; allowed: agent, human"),
    (["train", "dqn", "--n-step", "5000"], "n_step=5000 is not allowed"),
    (["train", "dqn", "--buffer-size", "1e10"], "smaller buffers (e.g. buffer_size)"),
    (["sweep", "dqn", "--grid", "buffer_size=1e4,2e4"], "buffer_size cannot be swept in one compiled program"),
    (["train", "ppo", "--env", "TicTacToe-v0", "--env-param", "opponent=rnd"],
     "unknown opponent 'rnd'; closest: 'random'"),
    (["train", "ppo", "--env", "ConnectFour-v0", "--env-param", "opponent=perfect"],
     "'perfect' play is known for TicTacToe-v0 only"),
    (["train", "ppo", "--env-param", "lenght=0.5"], "closest: 'length'"),
    (["train", "ppo", "--env-param", "length"], "expected NAME=VALUE"),
    (["train", "ppo", "--env-param", "length=1", "length=2"], "--env-param names length twice"),
])
def test_bad_input_one_line_exit_2(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    line = one_line_error(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert message in line
    assert not any(tmp_path.iterdir()), "a refused run leaves no directory behind"


def test_integral_numbers_in_any_notation():
    known = cli._known_flags(__import__("agents.ppo").ppo.Config, "train")
    assert cli._integral_values(["--total-timesteps", "1e5", "--seeds=2e1", "--learning-rate", "1e-3"],
                                known) == ["--total-timesteps", "100000", "--seeds=20",
                                           "--learning-rate", "1e-3"]
    assert cli._integral_values(["--num-envs", "1.5"], known) == ["--num-envs", "1.5"]  # refused later


def test_help_version_and_list(capsys):
    status, out, _ = run_cli(capsys)
    assert status == 2 and "commands:" in out
    for args in (["--help"], ["train", "--help"], ["sweep", "-h"]):
        status, out, _ = run_cli(capsys, *args)
        assert status == 0 and "train AGENT" in out and "sweep AGENT" in out and "plot DIR" in out
    status, out, _ = run_cli(capsys, "train", "ppo", "--help")
    assert status == 0 and "--total-timesteps" in out and "--eval-every" in out
    status, out, _ = run_cli(capsys, "--version")
    assert status == 0 and out.startswith("purejaxrl-lab 0.")
    status, out, _ = run_cli(capsys, "list")
    assert status == 0
    assert "ppo" in out and "counts env steps; scored by episode_return (higher is better)" in out
    assert "pendulum" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "discrete, 2" in lines["CartPole-v1"] and "continuous, shape (1,)" in lines["Pendulum-v1"]


def test_out_directories(capsys, tmp_path):
    # A live run holds its directory: a second run into it is refused before any work.
    busy = tmp_path / "busy"
    with claims.Claim(busy):
        line = one_line_error(capsys, "train", "ppo", "--out", busy, *SMALL)
        assert f"out='{busy}' is in use by a live run (pid {os.getpid()}" in line
    # Default directories are unique, even for runs started in the same second.
    class Args:
        out, env = None, "CartPole-v1"

    names = {cli._out_dir("ppo", Args).name for _ in range(50)}
    assert len(names) == 50 and all(n.startswith("ppo-CartPole-v1-") for n in names)


def test_sweep_train_plot_and_resume(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = ["--grid", "learning_rate=1e-3,3e-4", "env.length=0.5,1.0"]
    status, out, err = run_cli(capsys, "sweep", "ppo", "--seeds", "2", *grid, "--out", "sweep",
                               "--checkpoint-every", "0", *SMALL)
    assert status == 0, err
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("rank"))
    assert lines[header].split()[:2] == ["rank", "setting"] and lines[header + 2].startswith("1 ")
    summary = json.loads(Path("sweep/summary.json").read_text())
    assert summary["kind"] == "sweep" and summary["num_settings"] == 4, summary
    # init, call and evaluation (compiled here, or loaded from the tests' shared cache).
    assert summary["compilations"] + summary["compilation_cache_hits"] == 3
    assert not Path("sweep/checkpoints").exists()
    # A run, checkpointed every chunk; then as if it had died before writing results.
    status, _, err = run_cli(capsys, "train", "ppo", "--seeds", "2", "--out", "run",
                             "--checkpoint-every", "1", *SMALL)
    assert status == 0, err
    finished = np.load("run/metrics.npz")["loss"].copy()
    line = one_line_error(capsys, "train", "ppo", "--out", "run", *SMALL)
    assert "out='run' already holds a finished run's results; choose a new directory" in line
    line = one_line_error(capsys, "train", "ppo", "--resume", "run")
    assert "that run is complete; its results are in run" in line
    forget_results("run")
    line = one_line_error(capsys, "train", "ppo", "--out", "run", *SMALL)
    assert "already holds a run's checkpoints; --resume run continues that run" in line
    line = one_line_error(capsys, "train", "ppo", "--resume", "run", "--num-envs", "8")
    assert "num_envs=8 differs from the checkpoint's 4 (it fixes array shapes)" in line
    line = one_line_error(capsys, "sweep", "ppo", "--resume", "run")
    assert "the checkpoint is of a train run; use `purejaxrl-lab train`" in line
    # --resume takes the results directory or its checkpoints/.
    status, _, err = run_cli(capsys, "train", "ppo", "--resume", "run/checkpoints", "--no-progress",
                             "--no-compilation-cache")
    assert status == 0, err
    np.testing.assert_array_equal(np.load("run/metrics.npz")["loss"], finished)
    # plot compares directories on one figure.
    status, out, err = run_cli(capsys, "plot", "sweep", "run", "--out", "figs", "--smoothing", "2")
    assert status == 0, err
    assert Path("figs/curves.png").is_file() and Path("figs/final_scores.png").is_file()
    assert "sweep: ppo on CartPole-v1, 2 seeds, 4 settings" in out
    line = one_line_error(capsys, "play", "run")
    assert "its agent was trained on CartPole-v1, and this needs a board game" in line
    # The sweep's settings come from its checkpoint when it resumes.
    status, _, err = run_cli(capsys, "sweep", "ppo", "--seeds", "1", "--out", "s2", "--checkpoint-every",
                             "1", "--grid", "ent_coef=0,0.02", *SMALL)
    assert status == 0, err
    finished = np.load("s2/metrics.npz")["loss"].copy()
    Path("s2/summary.json").unlink()
    line = one_line_error(capsys, "sweep", "ppo", "--resume", "s2", "--grid", "ent_coef=0,0.03")
    assert "settings=" in line and "differs from the checkpoint's" in line
    status, _, err = run_cli(capsys, "sweep", "ppo", "--resume", "s2", "--no-progress",
                             "--no-compilation-cache")
    assert status == 0, err
    np.testing.assert_array_equal(np.load("s2/metrics.npz")["loss"], finished)


def test_env_params_are_recorded_and_resumed(capsys, tmp_path, monkeypatch):
    """--env-param sets environment parameters (a board game's opponent here); the run
    records them, and --resume continues with them bit-identically."""
    monkeypatch.chdir(tmp_path)
    args = ["--env", "TicTacToe-v0", "--env-param", "opponent=random", "agent_first=1", *SMALL]
    status, _, err = run_cli(capsys, "train", "ppo", "--seeds", "2", "--out", "run",
                             "--checkpoint-every", "1", *args)
    assert status == 0, err
    summary = json.loads(Path("run/summary.json").read_text())
    assert summary["env"] == "TicTacToe-v0"
    assert summary["env_params"] == {"max_steps_in_episode": 9, "opponent": "random",
                                     "opponent_simulations": 200, "agent_first": 1}
    finished = np.load("run/metrics.npz")["loss"].copy()
    forget_results("run")
    line = one_line_error(capsys, "train", "ppo", "--resume", "run", "--env-param", "agent_first=0")
    assert "env_params=" in line and "differs from the checkpoint's" in line
    status, _, err = run_cli(capsys, "train", "ppo", "--resume", "run", "--no-progress",
                             "--no-compilation-cache")
    assert status == 0, err
    np.testing.assert_array_equal(np.load("run/metrics.npz")["loss"], finished)
    # A board-game run of an agent without search: play takes no --simulations.
    line = one_line_error(capsys, "play", "run", "--simulations", "8")
    assert "the run's agent (ppo) does not search; leave it out" in line


def test_stop_on_nan_from_the_command_line(capsys, tmp_path):
    """A diverging run: one warning line names the seeds and the iteration; --stop-on-nan stops
    it early, and the table and summary say where."""
    status, out, err = run_cli(capsys, "train", "ppo", "--seeds", "2", "--out", tmp_path / "run",
                               "--env-param", "force_mag=3e38", "--stop-on-nan", *SMALL)
    assert status == 0, err
    assert err.splitlines()[0].startswith("purejaxrl-lab: warning: non-finite values in metrics: seed 0 "
                                          "from iteration 0 (")
    assert "stopping after the chunk in flight (stop_on_nan)" in err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # 3 chunks of 2 iterations, each evaluated, so its metrics are read before the next chunk
    # starts: the run stops after the first.
    assert summary["stopped"] == {"iteration": 2, "of": 6, "reason": "non-finite metrics (stop_on_nan)"}
    assert [d["seed"] for d in summary["divergence"]] == [0, 1]
    row = next(line for line in out.splitlines() if line.startswith("stopped "))
    assert row.split(None, 1)[1] == "after 2 of 6 iterations: non-finite metrics (stop_on_nan)"
    assert (tmp_path / "run" / "checkpoints" / "2").is_dir()  # a checkpoint where it stopped
    line = one_line_error(capsys, "train", "ppo", "--resume", tmp_path / "run")
    assert "that run stopped after 2 of 6 iterations (non-finite metrics (stop_on_nan))" in line
