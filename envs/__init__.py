"""Environments on gymnax 1.0's API, a registry, pure wrappers and Gymnasium interop.

`to_gymnasium`, `gymnasium_twin` (`envs.interop`) and `envs.render` import Gymnasium's and
gymnax's renderers on first use.
"""

import importlib

from envs.bandits import is_bandit, is_contextual
from envs.registry import is_builtin, make, register, registered
from envs.tabular import TabularModel, is_tabular, tabular_model
from envs.utils import close_matches, unknown_name_error
from envs.wrappers import (
    ClipAction,
    EpisodeStatistics,
    EpisodeStatisticsState,
    FlattenObservation,
    NormalizeObservation,
    NormalizeObservationState,
    RescaleAction,
    RunningMeanStd,
    ScaleReward,
    ScaleRewardState,
    TransitionWrapper,
    VecEnv,
    Wrapper,
    has_transition,
    normalize,
    reset_key,
    summarize_episodes,
    transition,
    update_running_stats,
)

_LAZY = {"to_gymnasium": "envs.interop", "gymnasium_twin": "envs.interop",
         "GYMNASIUM_IDS": "envs.interop"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'envs' has no attribute {name!r}")


__all__ = [
    "GYMNASIUM_IDS",
    "ClipAction",
    "EpisodeStatistics",
    "EpisodeStatisticsState",
    "FlattenObservation",
    "NormalizeObservation",
    "NormalizeObservationState",
    "RescaleAction",
    "RunningMeanStd",
    "ScaleReward",
    "ScaleRewardState",
    "TabularModel",
    "TransitionWrapper",
    "VecEnv",
    "Wrapper",
    "close_matches",
    "has_transition",
    "is_bandit",
    "is_builtin",
    "is_contextual",
    "is_tabular",
    "make",
    "normalize",
    "register",
    "registered",
    "reset_key",
    "summarize_episodes",
    "tabular_model",
    "to_gymnasium",
    "gymnasium_twin",
    "transition",
    "unknown_name_error",
    "update_running_stats",
]
