"""Gymnasium both ways: every single-agent environment as a `gymnasium.Env` (Gymnasium's own
env checker), the vector environment against single copies, our dynamics against Gymnasium's
own implementations step for step, saved policies evaluated in Gymnasium, and episodes drawn
as GIF/MP4 from the command line."""

import json
import warnings
from pathlib import Path

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from agents import tabular
from envs import board_games, interop
from envs.render import drawable
from purejaxrl_lab import cli
from purejaxrl_lab.checkpoint import Policy
from purejaxrl_lab.evaluation import evaluate

from .test_cli import SMALL, one_line_error, run_cli


def single_agent(env_id):
    env, params = envs.make(env_id)
    if isinstance(env, board_games.BoardGame):  # the single-agent view: against an opponent
        params = params.replace(opponent="random")
    return env, params


@pytest.mark.parametrize("env_id", envs.registered())
def test_every_environment_passes_gymnasiums_checker(env_id):
    env, params = single_agent(env_id)
    render_mode = "rgb_array" if drawable(env_id) else None
    g = envs.to_gymnasium(env, params, render_mode=render_mode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # advice (unbounded Box spaces, no registered spec)
        check_env(g, skip_render_check=render_mode is None)
    obs, _ = g.reset(seed=3)
    assert g.observation_space.contains(obs)
    if render_mode is not None:
        frame = g.render()
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and frame.std() > 0
    g.close()


def test_the_vector_environment_is_single_copies_seeded_in_turn():
    """Copy i of a vector environment reset with seed 7 is the single environment reset with
    seed 7 + i: same observations, rewards and ends up to its first end, where the vector
    copy's `final_obs` is the single environment's last observation and it starts afresh."""
    n, steps = 3, 60
    vec = envs.to_gymnasium("CartPole-v1", num_envs=n)
    singles = [envs.to_gymnasium("CartPole-v1") for _ in range(n)]
    actions = np.random.default_rng(0).integers(0, 2, (steps, n))
    obs, _ = vec.reset(seed=7)
    assert vec.observation_space.shape == (n, 4)
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    np.testing.assert_array_equal(obs, np.stack([s.reset(seed=7 + i)[0] for i, s in enumerate(singles)]))
    done = np.zeros(n, bool)
    for t in range(steps):
        obs, reward, terminated, truncated, info = vec.step(actions[t])
        for i, s in enumerate(singles):
            if done[i]:
                continue
            o, r, term, trunc, _ = s.step(int(actions[t, i]))
            assert (r, term, trunc) == (reward[i], terminated[i], truncated[i])
            if term or trunc:
                done[i] = True
                assert info["_final_obs"][i]
                np.testing.assert_array_equal(info["final_obs"][i], o)
                assert np.abs(obs[i]).max() <= 0.05  # a reset: CartPole starts in U(-0.05, 0.05)
            else:
                assert "final_obs" not in info or not info["_final_obs"][i]
                np.testing.assert_array_equal(obs[i], o)
    assert done.all()
    # Seeds as a list: one per copy.
    obs, _ = vec.reset(seed=[11, 3, 7])
    np.testing.assert_array_equal(obs[2], singles[0].reset(seed=7)[0])
    with pytest.raises(ValueError, match=r"seed=-1 is not allowed: expected an integer in \[0, 2\*\*32\)"):
        vec.reset(seed=-1)


DETERMINISTIC_TWINS = [  # (id, parameter overrides): dynamics without randomness after the reset
    ("CartPole-v1", {}), ("Acrobot-v1", {}), ("Pendulum-v1", {}), ("MountainCar-v0", {}),
    ("MountainCarContinuous-v0", {}), ("FrozenLake-v1", {"is_slippery": False}),
    ("CliffWalking-v1", {}), ("Taxi-v4", {}),
    # Time limits: both truncate at the same step.
    ("CartPole-v1", {"max_steps_in_episode": 5}), ("Taxi-v4", {"max_steps_in_episode": 5}),
]


@pytest.mark.parametrize("env_id, overrides", DETERMINISTIC_TWINS)
def test_steps_equal_gymnasiums_own_implementation(env_id, overrides):
    """From the same state and with the same actions, our step and Gymnasium's give the same
    observations, rewards and ends (to float32 rounding)."""
    env, params = envs.make(env_id, **overrides)
    ours = envs.to_gymnasium(env_id, params)
    twin = envs.gymnasium_twin(env_id, params)
    ours.reset(seed=1)
    twin.reset(seed=1)
    interop.set_twin_state(twin, env_id, ours.state)
    rng = np.random.default_rng(1)
    ends = []
    for _ in range(40):
        action = (int(rng.integers(ours.action_space.n)) if isinstance(ours.action_space, gym.spaces.Discrete)
                  else rng.uniform(-1, 1, ours.action_space.shape).astype(np.float32))
        o1, r1, term1, trunc1, _ = ours.step(action)
        o2, r2, term2, trunc2, _ = twin.step(action)
        np.testing.assert_allclose(np.asarray(o1, np.float64), np.asarray(o2, np.float64), atol=2e-4, rtol=1e-4)
        assert r1 == pytest.approx(r2, abs=1e-4) and (term1, trunc1) == (term2, trunc2)
        if term1 or trunc1:
            ends.append(trunc1)
            break
    if params.max_steps_in_episode == 5:
        assert ends == [True]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"TicTacToe-v0 without an opponent is a two-player game"):
        envs.to_gymnasium("TicTacToe-v0")
    with pytest.raises(ValueError, match=r"render_mode='human' is not allowed: expected None or 'rgb_array'"):
        envs.to_gymnasium("CartPole-v1", render_mode="human")
    with pytest.raises(ValueError, match=r"render_mode: Addition-v0 cannot be drawn as an image"):
        envs.to_gymnasium("Addition-v0", render_mode="rgb_array")
    with pytest.raises(ValueError, match=r"num_envs=0 is not allowed: expected an integer >= 1"):
        envs.to_gymnasium("CartPole-v1", num_envs=0)
    with pytest.raises(ValueError, match=r"unknown gymnasium id .* 'CartPole-v2'.*CartPole-v1"):
        envs.gymnasium_twin("CartPole-v2")
    with pytest.raises(ValueError, match=r"rainy_probability of Taxi-v4 differ from the defaults"):
        envs.gymnasium_twin("Taxi-v4", envs.make("Taxi-v4", rainy_probability=0.5)[1])
    with pytest.raises(ValueError, match=r"gravity of MountainCarContinuous-v0 differ from the defaults, "
                                         r"and Gymnasium's MountainCarContinuous-v0 cannot take them"):
        envs.gymnasium_twin("MountainCarContinuous-v0", envs.make("MountainCarContinuous-v0", gravity=0.003)[1])
    with pytest.raises(ValueError, match=r"seed=4294967296 is not allowed"):
        envs.to_gymnasium("CartPole-v1").reset(seed=2**32)


def table_policy(env_id, actions, **env_params):
    return Policy(params=jnp.asarray(actions), act=lambda table, obs, key, deterministic: table[obs],
                  seed=0, setting={}, agent="q_learning", env=env_id, env_params=env_params)


@pytest.mark.parametrize("env_id, env_params, optimal_return, optimal_length", [
    ("FrozenLake-v1", {"is_slippery": False}, 1.0, 6),
    ("CliffWalking-v1", {}, -13.0, 13),
])
def test_a_policy_evaluated_in_gymnasium_and_here_agrees(env_id, env_params, optimal_return, optimal_length):
    """The optimal policy (value iteration) scores the optimal return in both implementations:
    FrozenLake 4x4 without slipping reaches the goal in 6 steps; the cliff walk's shortest path
    is 13 steps of -1."""
    env, params = envs.make(env_id, **env_params)
    _, optimal = tabular.value_iteration(envs.tabular_model(env, params), 0.99)
    policy = table_policy(env_id, optimal, **env_params)
    here = evaluate(policy, episodes=5)
    there = evaluate(policy, episodes=5, gymnasium=True)
    for result in (here, there):
        np.testing.assert_array_equal(result.returns, optimal_return)
        np.testing.assert_array_equal(result.lengths, optimal_length)
    assert here.env == env_id and there.env == f"Gymnasium's {env_id}"
    with pytest.raises(ValueError, match=r"gymnasium='Taxi-v4' is not allowed: the policy acts in "
                                         rf"{env_id}, whose Gymnasium implementation is '{env_id}'"):
        evaluate(policy, episodes=1, gymnasium="Taxi-v4")


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    """A small PPO run on CartPole-v1 (the CLI tests' configuration, so programs are shared)."""
    out = tmp_path_factory.mktemp("interop") / "run"
    status = cli.main(["train", "ppo", "--seeds", "2", "--out", str(out), "--checkpoint-every", "0",
                       *SMALL])
    assert status == 0
    return out


def test_eval_from_the_command_line(capsys, cartpole_run):
    status, out, err = run_cli(capsys, "eval", cartpole_run, "--seed", "1", "--episodes", "3",
                               "--gymnasium", "CartPole-v1", "--json")
    assert status == 0, err
    record = json.loads(out)
    assert record["env"] == "Gymnasium's CartPole-v1" and record["seed"] == 1 and record["episodes"] == 3
    # CartPole pays 1 per step, so every return is its episode's length.
    assert record["returns"] == record["lengths"] and record["mean"] == np.mean(record["returns"])
    status, out, err = run_cli(capsys, "eval", cartpole_run, "--episodes", "4")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[1].split() == ["episode", "return", "length"] and len(lines) == 2 + 4 + 1
    assert lines[-1].startswith("mean return") and lines[-1].endswith("over 4 episodes in CartPole-v1")
    line = one_line_error(capsys, "eval", cartpole_run, "--gymnasium", "Acrobot-v1")
    assert "gymnasium='Acrobot-v1' is not allowed: the policy acts in CartPole-v1" in line
    line = one_line_error(capsys, "eval", cartpole_run, "--episodes", "0")
    assert "episodes=0 is not allowed: expected an integer >= 1" in line
    line = one_line_error(capsys, "eval", cartpole_run / "missing")
    assert "does not exist" in line
    line = one_line_error(capsys, "eval", cartpole_run, "--gymnasium", "CartPole-v1", "--eval-seed", "-1")
    assert "seed=-1 is not allowed with gymnasium" in line


def test_render_an_episode_as_gif_and_mp4(capsys, cartpole_run, tmp_path):
    from PIL import Image

    status, out, err = run_cli(capsys, "render", cartpole_run, "--out", tmp_path / "episode.gif",
                               "--max-steps", "12", "--fps", "10")
    assert status == 0, err
    with Image.open(tmp_path / "episode.gif") as gif:
        # 13 states at most (the reset and 12 steps); Pillow merges identical frames.
        assert gif.size == (600, 400) and 2 <= gif.n_frames <= 13
    status, out, err = run_cli(capsys, "render", cartpole_run, "--out", tmp_path / "episode.mp4",
                               "--max-steps", "12")
    assert status == 0, err
    assert (tmp_path / "episode.mp4").read_bytes()[4:8] == b"ftyp"  # an MP4 container
    line = one_line_error(capsys, "render", cartpole_run, "--out", tmp_path / "episode.avi")
    assert "must end in .gif or .mp4" in line
    line = one_line_error(capsys, "render", cartpole_run, "--simulations", "8")
    assert "simulations: only a board game's self-play searches" in line


def test_frames_of_gymnax_renderers_and_the_maze():
    from envs.render import renderer

    for env_id in ("Breakout-MinAtar", "DynaMaze-v0"):
        env, params = envs.make(env_id)
        draw = renderer(env_id, env, params)
        _, s0 = env.reset(jax.random.key(0), params)
        _, s1, *_ = env.step(jax.random.key(1), s0, 1, params)
        a, b = draw(s0), draw(s1)
        draw.close()
        assert a.dtype == np.uint8 and a.shape == b.shape and a.shape[2] == 3
        assert (a != b).any(), env_id  # the agent moved
