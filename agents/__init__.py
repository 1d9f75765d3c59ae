"""Algorithms as pure functions. Each agent is a module that follows the agent contract
(`agents.common.contract`): `Config`, `PRESETS`, `HParams`, `SCORE`, `NAN_METRICS`,
`ACT_INPUT`, `make` and `make_train`."""

from __future__ import annotations

import importlib
from types import ModuleType

from agents.common import Agent, Score, check_agent_module
from envs.utils import unknown_name_error

_AGENTS: dict[str, str] = {"alphazero": "agents.alphazero", "dqn": "agents.dqn",
                           "muzero": "agents.muzero",
                           "ppo": "agents.ppo", "pqn": "agents.pqn", "sac": "agents.sac",
                           "grpo": "agents.grpo", "reinforce": "agents.reinforce",
                           "sft": "agents.sft", "dpo": "agents.dpo",
                           "reward_model": "agents.reward_model", "ppo_rlhf": "agents.ppo_rlhf",
                           "epsilon_greedy": "agents.epsilon_greedy", "ucb": "agents.ucb",
                           "thompson": "agents.thompson", "gradient_bandit": "agents.gradient_bandit",
                           "linucb": "agents.linucb", "lin_ts": "agents.lin_ts",
                           "neural_linear": "agents.neural_linear",
                           "q_learning": "agents.q_learning", "sarsa": "agents.sarsa",
                           "expected_sarsa": "agents.expected_sarsa", "dyna_q": "agents.dyna_q"}


def available() -> list[str]:
    """Names `get` accepts (besides importable module paths)."""
    return sorted(_AGENTS)


def register(name: str, module: str | ModuleType) -> None:
    """Makes `get(name)` (and `purejaxrl-lab train NAME`) find an agent module of yours,
    given as a module or an importable module path ("my_pkg.my_agent")."""
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"name={name!r} is not allowed: expected a non-empty name without dots")
    path = module.__name__ if isinstance(module, ModuleType) else module
    if _AGENTS.get(name, path) != path:
        raise ValueError(f"agent name {name!r} is already registered for {_AGENTS[name]}")
    check_agent_module(importlib.import_module(path))
    _AGENTS[name] = path


def get(name: str) -> ModuleType:
    """The agent module registered as `name` (e.g. "ppo"), or importable as the module path
    `name` ("my_pkg.my_agent"); checked against the agent contract. Close matches on a typo."""
    if name in _AGENTS:
        module = importlib.import_module(_AGENTS[name])
    elif isinstance(name, str) and "." in name:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise ValueError(f"agent {name!r}: no registered agent of that name, and the module "
                             f"cannot be imported ({e})") from None
    else:
        raise unknown_name_error("agent", str(name), available())
    check_agent_module(module)
    return module


def name_of(module: ModuleType) -> str:
    """The registered name of an agent module, else its module path."""
    for name, path in _AGENTS.items():
        if path == module.__name__:
            return name
    return module.__name__


__all__ = ["Agent", "Score", "available", "get", "name_of", "register"]
