"""Gymnasium both ways: the project's environments as `gymnasium.Env`, and Gymnasium's own
implementation of an environment the project also has.

    env = envs.to_gymnasium("CartPole-v1", render_mode="rgb_array")    # a gymnasium.Env
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

    vec = envs.to_gymnasium("Breakout-MinAtar", num_envs=64)           # a gymnasium VectorEnv
    twin = envs.gymnasium_twin("FrozenLake-v1", params)                # Gymnasium's FrozenLake

`to_gymnasium` keeps the JAX environment's dynamics and steps it through one jitted call (all
copies at once for a vector environment), with numpy in and out. The single environment
follows Gymnasium's contract: `step` returns the observation the episode ended in, and the
next `reset` starts another. The vector environment resets ended copies within the same
step (`AutoresetMode.SAME_STEP`, as the JAX environment does), with `info["final_obs"]`.
Seeding: `reset(seed=s)` gives the key `jax.random.key(s)`; copy i of a vector environment
reset with seed s is the single environment reset with seed s + i (Gymnasium's convention).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from gymnax.environments import spaces as gymnax_spaces

from envs.utils import unknown_name_error
from envs.wrappers import has_transition, transition

# Environments whose dynamics are also Gymnasium's own: our id -> Gymnasium's id.
GYMNASIUM_IDS = {
    "CartPole-v1": "CartPole-v1",
    "Acrobot-v1": "Acrobot-v1",
    "Pendulum-v1": "Pendulum-v1",
    "MountainCar-v0": "MountainCar-v0",
    "MountainCarContinuous-v0": "MountainCarContinuous-v0",
    "FrozenLake-v1": "FrozenLake-v1",
    "FrozenLake8x8-v1": "FrozenLake8x8-v1",
    "CliffWalking-v1": "CliffWalking-v1",
    "Taxi-v4": "Taxi-v4",
}
# Environment parameters that are Gymnasium keyword arguments of the same name.
_GYMNASIUM_KWARGS = {
    "FrozenLake-v1": ("map_name", "is_slippery", "success_rate"),
    "FrozenLake8x8-v1": ("is_slippery", "success_rate"),
    "CliffWalking-v1": ("is_slippery",),
    "Taxi-v4": ("is_rainy",),
}


SEED_LIMIT = 2**32  # seeds are the 32-bit values jax.random.key takes without folding


def _check_seed(seed, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{name}={seed!r} is not allowed: expected an integer in [0, 2**32)")
    return int(seed)


# ------------------------------------------------------------------------------------ spaces


def to_gymnasium_space(space, example=None) -> gymnasium.Space:
    """A gymnax space as a Gymnasium space. `example` (an array or its `ShapeDtypeStruct`) gives
    the dtype the environment really returns, where it differs from the space's."""
    if isinstance(space, gymnax_spaces.Discrete):
        return gymnasium.spaces.Discrete(int(space.n))
    if isinstance(space, gymnax_spaces.Box):
        dtype = np.dtype(example.dtype if example is not None else space.dtype)
        shape = tuple(space.shape)
        if dtype == np.bool_:
            return gymnasium.spaces.MultiBinary(list(shape) if len(shape) != 1 else shape[0])
        low = np.broadcast_to(np.asarray(space.low, np.float64), shape)
        high = np.broadcast_to(np.asarray(space.high, np.float64), shape)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            low, high = (np.clip(np.nan_to_num(b, posinf=info.max, neginf=info.min), info.min, info.max)
                         for b in (low, high))
        return gymnasium.spaces.Box(low.astype(dtype), high.astype(dtype), shape, dtype)
    if isinstance(space, gymnax_spaces.Dict):
        return gymnasium.spaces.Dict({k: to_gymnasium_space(s, None if example is None else example[k])
                                      for k, s in space.spaces.items()})
    if isinstance(space, gymnax_spaces.Tuple):
        return gymnasium.spaces.Tuple([to_gymnasium_space(s, None if example is None else e)
                                       for s, e in zip(space.spaces, example or [None] * len(space.spaces))])
    raise ValueError(f"space: {type(space).__name__} has no Gymnasium counterpart here")


def _to_numpy(space: gymnasium.Space, x):
    if isinstance(space, gymnasium.spaces.Dict):
        return {k: _to_numpy(s, x[k]) for k, s in space.spaces.items()}
    if isinstance(space, gymnasium.spaces.Tuple):
        return tuple(_to_numpy(s, v) for s, v in zip(space.spaces, x))
    if isinstance(space, gymnasium.spaces.Discrete):
        return np.int64(x) if np.ndim(x) == 0 else np.asarray(x, np.int64)
    return np.asarray(x, space.dtype)


# ------------------------------------------------------------------------------- the wrapper


def _resolve(id_or_env, env_params):
    from envs import board_games
    from envs.registry import make

    if isinstance(id_or_env, str):
        env_id = id_or_env
        env, default = make(env_id)
    else:
        env, default = id_or_env, getattr(id_or_env, "default_params", None)
        env_id = getattr(env, "name", type(env).__name__)
    params = default if env_params is None else env_params
    if isinstance(env, board_games.BoardGame) and params.opponent is None:
        raise ValueError(f"env: {env_id} without an opponent is a two-player game, which a "
                         f"gymnasium.Env cannot be; give env_params with an opponent, e.g. "
                         f"envs.make({env_id!r}, opponent='random')[1]")
    return env_id, env, params


@dataclasses.dataclass
class _Programs:
    """The jitted reset and step of one environment and its parameters."""

    reset: Any
    step: Any
    observation_space: gymnasium.Space
    action_space: gymnasium.Space
    action_dtype: Any


def _observation_space(env, params):
    """The environment's observation space, where gymnax's is too narrow for what it returns:
    GaussianBandit-misc observes [last reward, one-hot action (2), time], its reward Gaussian
    and its normalised time from -1; MemoryChain-bsuite's context bits are -1 or +1."""
    space = env.observation_space(params)
    name = getattr(env, "name", None)
    if name == "GaussianBandit-misc":
        low = jnp.array([-jnp.inf, 0.0, 0.0, -1.0], jnp.float32)
        high = jnp.array([jnp.inf, 1.0, 1.0, params.max_steps_in_episode], jnp.float32)
        space = gymnax_spaces.Box(low, high, space.shape, space.dtype)
    elif name == "MemoryChain-bsuite":
        space = gymnax_spaces.Box(-1.0, space.high, space.shape, space.dtype)
    return space


def _programs(env, params, vectorised: bool) -> _Programs:
    obs_shape = jax.eval_shape(env.reset, jax.random.key(0), params)[0]
    observation_space = to_gymnasium_space(_observation_space(env, params), obs_shape)
    action_space = to_gymnasium_space(env.action_space(params))
    action_dtype = (jnp.int32 if isinstance(action_space, gymnasium.spaces.Discrete)
                    else jnp.float32)
    stepper = transition if has_transition(env) and not vectorised else None

    def step(key, state, action):
        key, key_step = jax.random.split(key)
        if stepper is not None:  # the state the episode ended in stays (for rendering)
            obs, state, reward, terminated, truncated, info = stepper(env, key_step, state, action, params)
        else:
            obs, state, reward, terminated, truncated, info = env.step(key_step, state, action, params)
        final = info.get("final_observation", obs)
        return key, obs, final, state, reward, terminated, truncated

    def reset(key):
        key, key_reset = jax.random.split(key)
        obs, state = env.reset(key_reset, params)
        return key, obs, state

    if vectorised:
        step, reset = jax.vmap(step), jax.vmap(reset)
    return _Programs(jax.jit(reset), jax.jit(step), observation_space, action_space, action_dtype)


def _renderer_for(env_id, env, params, render_mode):
    from envs.render import drawable, renderer

    if render_mode is None:
        return None
    if render_mode != "rgb_array":
        raise ValueError(f"render_mode={render_mode!r} is not allowed: expected None or 'rgb_array'")
    if not drawable(env_id):
        raise ValueError(f"render_mode: {env_id} cannot be drawn as an image")
    return renderer(env_id, env, params)


class GymnasiumEnv(gymnasium.Env):
    """One copy of a JAX environment as a `gymnasium.Env` (`to_gymnasium`)."""

    def __init__(self, env_id: str, env, env_params, render_mode: str | None = None):
        self.env_id, self.jax_env, self.env_params = env_id, env, env_params
        self._programs = _programs(env, env_params, vectorised=False)
        self.observation_space = self._programs.observation_space
        self.action_space = self._programs.action_space
        self.render_mode = render_mode
        self._draw = _renderer_for(env_id, env, env_params, render_mode)
        from envs.render import drawable, frames_per_second

        self.metadata = {"render_modes": ["rgb_array"] if drawable(env_id) else [],
                         "render_fps": frames_per_second(env_id), "autoreset_mode": AutoresetMode.DISABLED}
        self._key = None
        self.state = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            _check_seed(seed)
        super().reset(seed=seed)
        if seed is not None:
            self._key = jax.random.key(seed)
        elif self._key is None:  # Gymnasium's own entropy, as for its environments
            self._key = jax.random.key(int(self.np_random.integers(2**31 - 1)))
        self._key, obs, self.state = self._programs.reset(self._key)
        return _to_numpy(self.observation_space, obs), {}

    def step(self, action):
        if self.state is None:
            raise gymnasium.error.ResetNeeded("call reset before step")
        action = jnp.asarray(action, self._programs.action_dtype)
        self._key, obs, final, self.state, reward, terminated, truncated = self._programs.step(
            self._key, self.state, action)
        terminated, truncated = bool(terminated), bool(truncated)
        obs = final if terminated or truncated else obs
        return (_to_numpy(self.observation_space, obs), float(reward), terminated, truncated, {})

    def close(self):
        if self._draw is not None:
            self._draw.close()

    def render(self):
        if self._draw is None:
            return None
        if self.state is None:
            raise gymnasium.error.ResetNeeded("call reset before render")
        return self._draw(self.state)


class GymnasiumVectorEnv(VectorEnv):
    """`num_envs` copies of a JAX environment as a Gymnasium `VectorEnv`, stepped in one jitted
    call; ended copies reset within the step (`info["final_obs"]` with its mask
    `info["_final_obs"]`; `info["final_info"]` holds an empty dict for each ended copy)."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, env_id: str, env, env_params, num_envs: int):
        self.env_id, self.jax_env, self.env_params = env_id, env, env_params
        self.num_envs = num_envs
        self._programs = _programs(env, env_params, vectorised=True)
        self.single_observation_space = self._programs.observation_space
        self.single_action_space = self._programs.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._keys = None
        self.state = None

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        if seed is not None:
            _check_seed(seed if isinstance(seed, (int, np.integer)) else seed[0])
        super().reset(seed=seed if isinstance(seed, (int, np.integer)) or seed is None else seed[0])
        if seed is None and self._keys is None:
            seed = int(self.np_random.integers(2**31 - 1))
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed: {len(seeds)} seeds for {self.num_envs} environments")
            for s in seeds:
                _check_seed(s, "seed (of a copy)")
            self._keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
        self._keys, obs, self.state = self._programs.reset(self._keys)
        return _to_numpy(self.observation_space, obs), {}

    def step(self, actions):
        if self.state is None:
            raise gymnasium.error.ResetNeeded("call reset before step")
        actions = jnp.asarray(actions, self._programs.action_dtype)
        self._keys, obs, final, self.state, reward, terminated, truncated = self._programs.step(
            self._keys, self.state, actions)
        terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
        info = {}
        ended = terminated | truncated
        if ended.any():
            final = jax.tree.map(np.asarray, final)
            array = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(ended):
                array[i] = _to_numpy(self.single_observation_space, jax.tree.map(lambda x: x[i], final))
            info = {"final_obs": array, "_final_obs": ended,
                    "final_info": np.array([{} if e else None for e in ended], dtype=object),
                    "_final_info": ended}
        return (_to_numpy(self.observation_space, obs), np.asarray(reward, np.float64),
                terminated, truncated, info)


def to_gymnasium(id_or_env, env_params=None, num_envs: int | None = None, seed: int | None = None,
                 render_mode: str | None = None):
    """An environment of this project as a `gymnasium.Env`, or with `num_envs` as a Gymnasium
    `VectorEnv` stepping every copy in one jitted call.

    Args:
      id_or_env: a registered id (`envs.registered()`) or a gymnax environment.
      env_params: its parameters (default: the environment's defaults).
      num_envs: None for a single `gymnasium.Env`; else the number of copies.
      seed: when given, the environment is reset with it once, so the first `reset()` without
        a seed continues from there deterministically.
      render_mode: None or "rgb_array" (single environments that can be drawn).
    """
    env_id, env, params = _resolve(id_or_env, env_params)
    if num_envs is None:
        out = GymnasiumEnv(env_id, env, params, render_mode)
    else:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r} is not allowed: expected an integer >= 1")
        if render_mode is not None:
            raise ValueError("render_mode: a vector environment does not render; use num_envs=None")
        out = GymnasiumVectorEnv(env_id, env, params, num_envs)
    if seed is not None:
        out.reset(seed=seed)
    return out


# ----------------------------------------------------------------- Gymnasium's own environment


def gymnasium_twin(env_id: str, env_params=None, render_mode: str | None = None) -> gymnasium.Env:
    """Gymnasium's own implementation of `env_id` with the same parameters and time limit,
    for the ids in `GYMNASIUM_IDS` (classic control and toy text)."""
    if env_id not in GYMNASIUM_IDS:
        raise unknown_name_error("gymnasium id (environments Gymnasium also implements)", env_id,
                                 list(GYMNASIUM_IDS))
    from envs.registry import make

    _, default = make(env_id)
    params = default if env_params is None else env_params
    kwargs = {name: getattr(params, name) for name in _GYMNASIUM_KWARGS.get(env_id, ())}
    fields = {f.name for f in dataclasses.fields(params)} - set(kwargs) - {"max_steps_in_episode"}
    twin = gymnasium.make(GYMNASIUM_IDS[env_id], render_mode=render_mode,
                          max_episode_steps=int(params.max_steps_in_episode), **kwargs)
    if env_id in _GYMNASIUM_KWARGS:
        other = [f for f in sorted(fields) if getattr(params, f) != getattr(default, f)]
        if other:
            raise ValueError(f"env_params: {', '.join(other)} of {env_id} differ from the defaults, "
                             f"and Gymnasium's {GYMNASIUM_IDS[env_id]} has no such option")
    else:  # classic control: Gymnasium reads its constants from attributes
        from gymnax.visualize.vis_gym import _PARAMETER_MAPPINGS, set_gym_params

        mapped = set(_PARAMETER_MAPPINGS[env_id].values())
        other = [f for f in sorted(fields - mapped)
                 if not np.array_equal(np.asarray(getattr(params, f)), np.asarray(getattr(default, f)))]
        if other:
            raise ValueError(f"env_params: {', '.join(other)} of {env_id} differ from the defaults, "
                             f"and Gymnasium's {GYMNASIUM_IDS[env_id]} cannot take them")
        set_gym_params(twin.unwrapped, env_id, params)
    return twin


def set_twin_state(twin: gymnasium.Env, env_id: str, state) -> None:
    """Puts `state` (of the JAX environment `env_id`) into Gymnasium's own `twin`, e.g. to draw it."""
    inner = twin.unwrapped
    if env_id in ("FrozenLake-v1", "FrozenLake8x8-v1", "CliffWalking-v1", "Taxi-v4"):
        inner.s = int(state.state)
        if getattr(inner, "lastaction", None) is None:
            inner.lastaction = 0
        return
    from gymnax.visualize.vis_gym import get_gym_state

    inner.state = get_gym_state(state, env_id)
    if env_id == "Pendulum-v1":
        inner.last_u = float(state.last_u)
