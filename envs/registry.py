"""`envs.make(id)`: every gymnax id plus the project's own environments.

Environment parameters are `flax.struct.dataclass` pytrees, so they can be
overridden here (`envs.make("CartPole-v1", length=0.7)`) or vmapped over.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gymnax

from envs.utils import unknown_name_error

EnvFactory = Callable[[], Any]

# Project environments register here; gymnax ids are looked up lazily.
_OWN: dict[str, EnvFactory] = {}

# gymnax ids that cannot be used offline, with the reason.
_UNAVAILABLE = {
    "MNISTBandit-bsuite": "it downloads the MNIST data set when built, and this project "
    "never downloads data at run time",
}


def register(env_id: str, factory: EnvFactory) -> None:
    """Registers a project environment: `factory()` returns a gymnax `Environment`."""
    if env_id in registered():
        raise ValueError(f"environment id {env_id!r} is already registered")
    _OWN[env_id] = factory


def registered() -> list[str]:
    """All ids `make` accepts, sorted."""
    gymnax_ids = [i for i in gymnax.registered_envs if i not in _UNAVAILABLE]
    return sorted(set(gymnax_ids) | set(_OWN))


def is_builtin(env_id: str) -> bool:
    """Whether `env_id`'s code ships with gymnax or this package (not registered by a user)."""
    if env_id in _OWN:
        return getattr(_OWN[env_id], "__module__", "").split(".")[0] == "envs"
    return env_id in gymnax.registered_envs and env_id not in _UNAVAILABLE


def make(env_id: str, **param_overrides: Any):
    """Builds an environment and its default parameters.

    Args:
      env_id: a registered id (see `registered()`), e.g. "CartPole-v1".
      **param_overrides: fields of the environment's `EnvParams` to replace,
        e.g. `max_steps_in_episode=200`, or a board game's `opponent="random"`.

    Returns:
      `(env, env_params)`, gymnax 1.0's API: `reset(key, params) -> (obs, state)`,
      `step(key, state, action, params) -> (obs, state, reward, terminated,
      truncated, info)` with same-step auto-reset and `info["final_observation"]`.

    Raises:
      ValueError: unknown id (closest ids are listed), an id that cannot run
        offline, or an unknown parameter name.
    """
    if not isinstance(env_id, str):
        raise ValueError(f"env: expected an environment id string, got {env_id!r}")
    if env_id in _UNAVAILABLE:
        raise ValueError(f"environment {env_id!r} is not available: {_UNAVAILABLE[env_id]}")
    if env_id in _OWN:
        env = _OWN[env_id]()
        env_params = env.default_params
    elif env_id in gymnax.registered_envs:
        env, env_params = gymnax.make(env_id)
    else:
        raise unknown_name_error("environment id", env_id, registered())
    if param_overrides:
        fields = [f.name for f in dataclasses.fields(env_params)]
        for name in param_overrides:
            if name not in fields:
                raise unknown_name_error(f"parameter of {env_id}", name, fields)
        env_params = env_params.replace(**param_overrides)
    if callable(getattr(env, "check_params", None)):
        env.check_params(env_params)
    return env, env_params


def _register_board_games() -> None:
    from envs import board_games

    for env_id in board_games.GAMES:
        def factory(env_id=env_id):
            return board_games.BoardGame(env_id)

        register(env_id, factory)


_register_board_games()


def _register_token_tasks() -> None:
    from envs import token_tasks

    for env_id, cls in token_tasks.TASK_CLASSES.items():
        register(env_id, cls)


_register_token_tasks()


def _register_fundamentals() -> None:
    from envs import bandits, tabular

    for env_id, cls in {**bandits.ENVIRONMENTS, **tabular.ENVIRONMENTS}.items():
        register(env_id, cls)


_register_fundamentals()
