"""Environments on gymnax 1.0's API, a registry and pure wrappers."""

from envs.registry import is_builtin, make, register, registered
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
    VecEnv,
    Wrapper,
    normalize,
    summarize_episodes,
    update_running_stats,
)

__all__ = [
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
    "VecEnv",
    "Wrapper",
    "close_matches",
    "is_builtin",
    "make",
    "normalize",
    "register",
    "registered",
    "summarize_episodes",
    "unknown_name_error",
    "update_running_stats",
]
