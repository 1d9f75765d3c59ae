"""The gradient bandit (Sutton & Barto section 2.8): soft-max preferences learnt by
stochastic gradient ascent on the expected reward.

One round at time t:
  1. pi(a) = exp(H(a)) / sum_b exp(H(b)); draw A ~ pi;
  2. observe R; with the baseline R_bar (the average of the rewards before this one, R_bar_1
     = R_1), times the weight `baseline` (1: with the baseline, 0: without):
       H(A) <- H(A) + alpha (R - R_bar) (1 - pi(A))
       H(a) <- H(a) - alpha (R - R_bar) pi(a)      for a != A
     then R_bar <- R_bar + (R - R_bar) / t.
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
    """Gradient-bandit settings (the book's names)."""

    alpha: float = 0.1
    """Step size of the preferences (tunable)."""
    baseline: float = 1.0
    """Weight of the average-reward baseline: 1 with it, 0 without (tunable)."""

    def __post_init__(self):
        super().__post_init__()
        check_real(self, "alpha", 0.0, low_open=True)
        check_real(self, "baseline", 0.0, 1.0)


PRESETS: dict[str, Config] = {
    # Sutton & Barto Figure 2.5 (on KArmedTestbed-v0 with mean=4): alpha 0.1 with baseline.
    "testbed": Config(total_timesteps=1_000, alpha=0.1, baseline=1.0),
}


@struct.dataclass
class HParams:
    alpha: jax.Array
    baseline: jax.Array


@struct.dataclass
class Params:
    h: jax.Array  # [k] preferences H(a)
    average_reward: jax.Array  # R_bar: the mean of the rewards so far
    t: jax.Array  # rounds played


def probabilities(h: jax.Array) -> jax.Array:
    """pi [k] = softmax(H)."""
    return jax.nn.softmax(h)


def act(params: Params, x: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
    """A ~ softmax(H); `deterministic`: the most preferred arm."""
    if deterministic:
        return B.argmax_random(key, params.h)
    return jax.random.categorical(key, params.h).astype(jnp.int32)


def preference_update(h: jax.Array, action, reward, baseline, alpha) -> jax.Array:
    """H + alpha (R - baseline) (1[a = A] - pi(a)): eq. 2.12 for every arm at once."""
    one_hot = jax.nn.one_hot(action, h.shape[0])
    return h + alpha * (reward - baseline) * (one_hot - probabilities(h))


def learn(params: Params, x, action, reward, hp: HParams) -> Params:
    t = params.t + 1.0
    r_bar = jnp.where(params.t > 0, params.average_reward, reward)  # R_bar_1 = R_1
    h = preference_update(params.h, action, reward, hp.baseline * r_bar, hp.alpha)
    average = params.average_reward + (reward - params.average_reward) / t
    return Params(h=h, average_reward=average, t=t)


def make(config: Config, env, env_params):
    k = B.num_arms(env, env_params)

    def init_params(key, hp: HParams) -> Params:
        return Params(h=jnp.zeros(k), average_reward=jnp.float32(0.0), t=jnp.float32(0.0))

    return B.make_bandit(env, env_params, HParams, config, init_params, act, learn)


make_train = B.make_train_of(make)
