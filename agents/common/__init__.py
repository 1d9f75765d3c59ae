"""Pieces shared by every agent: the contract, networks, returns, losses, optimiser, config checks."""

from agents.common.config import (
    ONLY_CONTINUOUS,
    ONLY_DISCRETE,
    check_action_space,
    check_choice,
    check_positive_int,
    check_real,
    invalid,
    normalize_fields,
    with_overrides,
)
from agents.common.contract import ACT_INPUTS, AgentModule, ContractError, Score, check_agent_module
from agents.common.losses import approx_kl, clip_fraction, clipped_surrogate_loss, value_loss
from agents.common.networks import ACTIVATIONS, MLP, ActorCritic
from agents.common.optim import linear_schedule, make_optimizer
from agents.common.returns import discounted_returns, gae
from agents.common.types import Agent, train_loop

__all__ = [
    "ACTIVATIONS",
    "ACT_INPUTS",
    "AgentModule",
    "ContractError",
    "Score",
    "check_agent_module",
    "normalize_fields",
    "MLP",
    "ONLY_CONTINUOUS",
    "ONLY_DISCRETE",
    "ActorCritic",
    "Agent",
    "approx_kl",
    "check_action_space",
    "check_choice",
    "check_positive_int",
    "check_real",
    "clip_fraction",
    "clipped_surrogate_loss",
    "discounted_returns",
    "gae",
    "invalid",
    "linear_schedule",
    "make_optimizer",
    "train_loop",
    "value_loss",
    "with_overrides",
]
