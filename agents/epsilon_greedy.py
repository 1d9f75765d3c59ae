"""Epsilon-greedy action values on a bandit (Sutton & Barto sections 2.2-2.6).

One round:
  1. with probability epsilon an arm uniformly at random, else argmax_a Q(a) (ties at
     random);
  2. observe R and update the chosen arm's estimate:
       N(A) <- N(A) + 1
       Q(A) <- Q(A) + alpha_n (R - Q(A)),  alpha_n = 1 / N(A) (sample averages, alpha = 0)
                                           or the constant alpha (> 0).
Q starts at `initial_value` (optimistic when above the true values: Figure 2.3).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from agents.common import bandit as B
from agents.common.config import check_real

SCORE, NAN_METRICS, ACT_INPUT, ENV_KINDS, EPISODIC = (B.SCORE, B.NAN_METRICS, B.ACT_INPUT,
                                                      B.ENV_KINDS, B.EPISODIC)
PLOT_METRICS, PLOT_STATISTIC = B.PLOT_METRICS, B.PLOT_STATISTIC


@dataclasses.dataclass(frozen=True)
class Config(B.BanditConfig):
    """Epsilon-greedy settings (the book's names)."""

    epsilon: float = 0.1
    """Probability of a uniformly random arm (tunable)."""
    alpha: float = 0.0
    """Constant step size; 0: sample averages, 1 / N(a) (tunable)."""
    initial_value: float = 0.0
    """Q_1(a) of every arm: above the true values it makes the agent explore (tunable)."""

    def __post_init__(self):
        super().__post_init__()
        check_real(self, "epsilon", 0.0, 1.0)
        check_real(self, "alpha", 0.0, 1.0)
        check_real(self, "initial_value")


PRESETS: dict[str, Config] = {
    # Sutton & Barto Figure 2.2: 1,000 rounds of the 10-armed testbed, epsilon 0.1.
    "testbed": Config(total_timesteps=1_000, epsilon=0.1),
    # Figure 2.3: optimistic greedy, Q_1 = 5, alpha = 0.1.
    "optimistic": Config(total_timesteps=1_000, epsilon=0.0, alpha=0.1, initial_value=5.0),
}


@struct.dataclass
class HParams:
    epsilon: jax.Array
    alpha: jax.Array
    initial_value: jax.Array


@struct.dataclass
class Params:
    q: jax.Array  # [k] action-value estimates
    n: jax.Array  # [k] times each arm was chosen
    epsilon: jax.Array  # the exploration probability act uses


def act(params: Params, x: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
    """Greedy on Q (ties at random); with probability epsilon a random arm unless
    `deterministic`."""
    key_greedy, key_explore, key_arm = jax.random.split(key, 3)
    greedy = B.argmax_random(key_greedy, params.q)
    if deterministic:
        return greedy
    explore = jax.random.bernoulli(key_explore, params.epsilon)
    return jnp.where(explore, jax.random.randint(key_arm, (), 0, params.q.shape[0]), greedy)


def learn(params: Params, x, action, reward, hp: HParams) -> Params:
    n = params.n.at[action].add(1.0)
    step = jnp.where(hp.alpha > 0, hp.alpha, 1.0 / n[action])
    q = params.q.at[action].add(step * (reward - params.q[action]))
    return params.replace(q=q, n=n)


def make(config: Config, env, env_params):
    k = B.num_arms(env, env_params)

    def init_params(key, hp: HParams) -> Params:
        return Params(q=jnp.full(k, hp.initial_value), n=jnp.zeros(k), epsilon=hp.epsilon)

    return B.make_bandit(env, env_params, HParams, config, init_params, act, learn)


make_train = B.make_train_of(make)
