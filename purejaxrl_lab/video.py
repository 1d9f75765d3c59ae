"""Watching a trained agent: one greedy episode of a saved run as a GIF, an MP4 or text.

    purejaxrl-lab render runs/ppo-CartPole-v1-... --out episode.gif
    purejaxrl_lab.video.render_episode("runs/...", "episode.mp4", seed=0)

The episode runs after training, one jitted step at a time on the host; its states are drawn
by `envs.render` (Gymnasium's renderers for classic control and toy text, gymnax's for MinAtar,
Catch and the grid worlds). A token task's episode is written as text; board games are drawn
by pgx (`purejaxrl_lab.play.render_game`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

VIDEO_SUFFIXES = (".gif", ".mp4")


@dataclasses.dataclass
class Episode:
    """One episode: the states from the reset to the last one, and the rewards [len(states) - 1]."""

    states: list[Any]
    observations: list[Any]
    rewards: list[float]

    @property
    def episode_return(self) -> float:
        return float(np.sum(self.rewards))


def run_episode(policy, env, env_params, seed: int = 0, max_steps: int | None = None,
                deterministic: bool = True) -> Episode:
    """Runs `policy` for one episode of `env` from the reset of `jax.random.key(seed)`, keeping
    every state (the last one is the state the episode ended in, before any reset)."""
    from envs.wrappers import has_transition, transition
    from purejaxrl_lab.evaluation import max_steps as limit_of

    limit = int(limit_of(env_params)) if max_steps is None else max_steps
    stepper = (lambda k, s, a: transition(env, k, s, a, env_params)) if has_transition(env) else (
        lambda k, s, a: env.step(k, s, a, env_params))
    recurrent = policy.init_carry is not None

    @jax.jit
    def step(key, obs, state, carry):
        key, key_act, key_step = jax.random.split(key, 3)
        x = obs if policy.act_input == "observation" else state
        if recurrent:
            action, carry = policy.act(policy.params, x, key_act, deterministic, carry)
        else:
            action = policy.act(policy.params, x, key_act, deterministic)
        obs, state, reward, terminated, truncated, _ = stepper(key_step, state, action)
        return key, obs, state, reward, terminated | truncated, carry

    key, key_reset = jax.random.split(jax.random.key(seed))
    obs, state = env.reset(key_reset, env_params)
    carry = policy.init_carry(()) if recurrent else None
    states, observations, rewards = [state], [obs], []
    for _ in range(limit):
        key, obs, state, reward, done, carry = step(key, obs, state, carry)
        states.append(state)
        observations.append(obs)
        rewards.append(float(reward))
        if bool(done):
            break
    return Episode(states, observations, rewards)


def write_video(frames: list[np.ndarray], out: str | Path, fps: int = 30) -> Path:
    """Writes RGB frames [height, width, 3] as a GIF (pillow) or an MP4 (ffmpeg, from the
    imageio-ffmpeg package)."""
    import imageio.v3 as iio

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"out={str(out)!r} is not allowed: the file name must end in .gif or .mp4")
    out.parent.mkdir(parents=True, exist_ok=True)
    stack = np.stack(frames)
    if suffix == ".gif":
        iio.imwrite(out, stack, extension=".gif", duration=1000 / fps, loop=0)
    else:
        h, w = stack.shape[1] // 2 * 2, stack.shape[2] // 2 * 2  # H.264 wants even sides
        _write_mp4(out, stack[:, :h, :w], fps)
    return out


def _write_mp4(out: Path, stack: np.ndarray, fps: int) -> None:
    import warnings

    import imageio_ffmpeg

    with warnings.catch_warnings():  # JAX warns of any fork; ffmpeg's process execs at once
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        _send_frames(imageio_ffmpeg, out, stack, fps)


def _send_frames(imageio_ffmpeg, out: Path, stack: np.ndarray, fps: int) -> None:
    writer = imageio_ffmpeg.write_frames(str(out), (stack.shape[2], stack.shape[1]), fps=fps,
                                         codec="libx264", pix_fmt_out="yuv420p", macro_block_size=2,
                                         ffmpeg_log_level="error")
    writer.send(None)
    try:
        for frame in stack:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()


def episode_text(env, episode: Episode) -> str:
    """A token task's episode as text: the sequence after every step, then the reward."""
    from envs import token_tasks

    lines = [f"step {t:2d}  {token_tasks.decode(np.asarray(obs), stop_at_eos=False)}"
             for t, obs in enumerate(episode.observations)]
    return "\n".join([*lines, f"return {episode.episode_return:g}"]) + "\n"


def render_episode(policy, out: str | Path, seed: int = 0, setting: int | None = None,
                   episode_seed: int = 0, fps: int | None = None, max_steps: int | None = None) -> Path:
    """Writes one greedy episode of a policy: `.gif`/`.mp4` for environments that can be drawn
    (`envs.render.drawable`), `.txt` for token tasks. Returns the path.

    Args:
      policy: a `Policy` (`results.policy(seed)`) or a saved run's directory (then `seed` and
        `setting` choose its policy).
      out: the file to write.
      episode_seed: the key of the episode's reset and steps.
      fps: frames per second (default: 30 for classic control, else 5).
      max_steps: stop after so many steps (default: the environment's time limit).
    """
    import envs
    from envs import render as R
    from envs import token_tasks
    from purejaxrl_lab.checkpoint import Policy, load_policy
    from purejaxrl_lab.grid import split

    out = Path(out)
    if not isinstance(policy, Policy):
        policy = load_policy(policy, seed=seed, setting=setting)
    env, env_params = envs.make(policy.env)
    env_params = env_params.replace(**{**policy.env_params, **split(policy.setting)[1]})
    suffix = out.suffix.lower()
    if token_tasks.is_token_task(env):
        if suffix != ".txt":
            raise ValueError(f"out={str(out)!r} is not allowed: {policy.env} is a token task, "
                             f"written as text; name a .txt file")
    elif not R.drawable(policy.env):
        raise ValueError(f"render: {policy.env} cannot be drawn as an image; environments that can: "
                         f"{', '.join(sorted(R.drawable_ids()))}, board games (as .svg) and "
                         f"token tasks (as .txt)")
    elif suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"out={str(out)!r} is not allowed: the file name must end in .gif or .mp4")
    episode = run_episode(policy, env, env_params, episode_seed, max_steps)
    if suffix == ".txt":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(episode_text(env, episode))
        return out
    draw = R.renderer(policy.env, env, env_params)
    try:
        frames = [draw(state) for state in episode.states]
    finally:
        draw.close()
    if fps is None:
        fps = R.frames_per_second(policy.env)
    return write_video(frames, out, fps)
