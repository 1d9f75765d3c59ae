"""Expected SARSA (van Seijen et al. 2009; Sutton & Barto section 6.6).

    Q(S, A) <- Q(S, A) + alpha [R + gamma sum_a pi(a | S') Q(S', a) - Q(S, A)]

with pi the epsilon-greedy policy on Q (the shared step: `agents.common.td`).
"""

from __future__ import annotations

import dataclasses

from agents.common import td
from agents.common.types import train_loop

SCORE, NAN_METRICS, ACT_INPUT, ENV_KINDS = td.SCORE, td.NAN_METRICS, td.ACT_INPUT, td.ENV_KINDS
HParams = td.TDHParams


@dataclasses.dataclass(frozen=True)
class Config(td.TDConfig):
    """Expected-SARSA settings (the book's names)."""


PRESETS: dict[str, Config] = {
    "cliff": Config(total_timesteps=20_000, alpha=0.5, epsilon=0.1, gamma=1.0),
}


def target(q, s_next, a_next, hp):
    """sum_a pi(a | S') Q(S', a), pi epsilon-greedy on Q."""
    return td.epsilon_greedy_probs(q[s_next], hp.epsilon) @ q[s_next]


def make(config: Config, env, env_params):
    return td.make_td(config, env, env_params, HParams, target)


def make_train(config: Config, env, env_params):
    return train_loop(make(config, env, env_params), config.num_iterations)
