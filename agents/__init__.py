"""Algorithms as pure functions. Each agent module has `Config`, `make` and `make_train`."""

from __future__ import annotations

import importlib
from types import ModuleType

from agents.common import Agent
from envs.utils import unknown_name_error

_AGENTS = {"ppo": "agents.ppo"}


def available() -> list[str]:
    """Names `get` accepts."""
    return sorted(_AGENTS)


def get(name: str) -> ModuleType:
    """The agent module registered as `name` (e.g. "ppo"); close matches on a typo."""
    if name not in _AGENTS:
        raise unknown_name_error("agent", str(name), available())
    return importlib.import_module(_AGENTS[name])


__all__ = ["Agent", "available", "get"]
