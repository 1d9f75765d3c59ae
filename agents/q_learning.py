"""Q-learning (Watkins 1989; Sutton & Barto section 6.5): off-policy TD control.

    Q(S, A) <- Q(S, A) + alpha [R + gamma max_a Q(S', a) - Q(S, A)]

acting epsilon-greedily on Q (the shared step: `agents.common.td`).
"""

from __future__ import annotations

import dataclasses

from agents.common import td
from agents.common.types import train_loop

SCORE, NAN_METRICS, ACT_INPUT, ENV_KINDS = td.SCORE, td.NAN_METRICS, td.ACT_INPUT, td.ENV_KINDS
HParams = td.TDHParams


@dataclasses.dataclass(frozen=True)
class Config(td.TDConfig):
    """Q-learning settings (the book's names)."""


PRESETS: dict[str, Config] = {
    # Sutton & Barto Example 6.6 on CliffWalking-v1: epsilon 0.1, alpha 0.5, undiscounted.
    "cliff": Config(total_timesteps=20_000, alpha=0.5, epsilon=0.1, gamma=1.0),
    # FrozenLake-v1 (slippery), discounted.
    "frozen_lake": Config(total_timesteps=200_000, alpha=0.05, epsilon=0.1, gamma=0.99),
}


def target(q, s_next, a_next, hp):
    """max_a Q(S', a)."""
    return q[s_next].max()


def make(config: Config, env, env_params):
    return td.make_td(config, env, env_params, HParams, target)


def make_train(config: Config, env, env_params):
    return train_loop(make(config, env, env_params), config.num_iterations)
