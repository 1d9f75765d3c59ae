"""Thompson sampling on a bandit (Thompson 1933; Russo et al. 2018): act greedily on a draw
from the posterior of every arm's mean reward.

One round:
  1. draw theta(a) from each arm's posterior; A = argmax_a theta(a);
  2. observe R and update arm A's posterior:
       bernoulli  Beta(a0, b0) prior:  a(A) <- a(A) + R,  b(A) <- b(A) + 1 - R  (R in {0, 1})
       gaussian   N(m0, s0^2) prior, known noise s^2:
                  precision(A) <- precision(A) + 1 / s^2
                  mean(A) <- (mean(A) precision_old(A) + R / s^2) / precision(A)
`model="auto"` picks bernoulli on BernoulliBandit-v0 and gaussian elsewhere.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from agents.common import bandit as B
from agents.common.config import check_choice, check_real

SCORE, NAN_METRICS, ACT_INPUT, ENV_KINDS, EPISODIC = (B.SCORE, B.NAN_METRICS, B.ACT_INPUT,
                                                      B.ENV_KINDS, B.EPISODIC)
PLOT_METRICS, PLOT_STATISTIC = B.PLOT_METRICS, B.PLOT_STATISTIC
MODELS = ("auto", "bernoulli", "gaussian")


@dataclasses.dataclass(frozen=True)
class Config(B.BanditConfig):
    """Thompson-sampling settings."""

    model: str = "auto"
    """The reward model: bernoulli (Beta posterior), gaussian (normal posterior, known
    noise) or auto (bernoulli for Bernoulli bandits)."""
    prior_alpha: float = 1.0
    """a0 of the Beta prior (tunable)."""
    prior_beta: float = 1.0
    """b0 of the Beta prior (tunable)."""
    prior_mean: float = 0.0
    """m0 of the normal prior (tunable)."""
    prior_stddev: float = 1.0
    """s0 of the normal prior (tunable)."""
    noise_stddev: float = 1.0
    """s, the known standard deviation of a reward around its arm's mean (tunable)."""

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "model", MODELS)
        for name in ("prior_alpha", "prior_beta", "prior_stddev", "noise_stddev"):
            check_real(self, name, 0.0, low_open=True)
        check_real(self, "prior_mean")


PRESETS: dict[str, Config] = {
    "testbed": Config(total_timesteps=1_000, model="gaussian"),
}


@struct.dataclass
class HParams:
    prior_alpha: jax.Array
    prior_beta: jax.Array
    prior_mean: jax.Array
    prior_stddev: jax.Array
    noise_stddev: jax.Array


@struct.dataclass
class Params:
    first: jax.Array  # [k] Beta's a, or the normal posterior's mean
    second: jax.Array  # [k] Beta's b, or the normal posterior's precision
    bernoulli: bool = struct.field(pytree_node=False, default=False)


def sample_means(params: Params, key: jax.Array) -> jax.Array:
    """One posterior draw of every arm's mean reward [k]."""
    if params.bernoulli:
        return B.sample_beta(key, params.first, params.second)
    return params.first + jax.random.normal(key, params.first.shape) / jnp.sqrt(params.second)


def posterior_means(params: Params) -> jax.Array:
    if params.bernoulli:
        return params.first / (params.first + params.second)
    return params.first


def act(params: Params, x: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
    """argmax of a posterior draw; `deterministic`: of the posterior means."""
    key_draw, key_tie = jax.random.split(key)
    values = posterior_means(params) if deterministic else sample_means(params, key_draw)
    return B.argmax_random(key_tie, values)


def learn(params: Params, x, action, reward, hp: HParams) -> Params:
    if params.bernoulli:
        return params.replace(first=params.first.at[action].add(reward),
                              second=params.second.at[action].add(1.0 - reward))
    noise_precision = 1.0 / hp.noise_stddev ** 2
    precision = params.second[action] + noise_precision
    mean = (params.first[action] * params.second[action] + reward * noise_precision) / precision
    return params.replace(first=params.first.at[action].set(mean),
                          second=params.second.at[action].set(precision))


def make(config: Config, env, env_params):
    from envs.bandits import BernoulliBandit, bandit_of

    k = B.num_arms(env, env_params)
    bernoulli = (config.model == "bernoulli" or
                 (config.model == "auto" and isinstance(bandit_of(env), BernoulliBandit)))

    def init_params(key, hp: HParams) -> Params:
        if bernoulli:
            return Params(first=jnp.full(k, hp.prior_alpha), second=jnp.full(k, hp.prior_beta),
                          bernoulli=True)
        return Params(first=jnp.full(k, hp.prior_mean),
                      second=jnp.full(k, 1.0 / hp.prior_stddev ** 2), bernoulli=False)

    return B.make_bandit(env, env_params, HParams, config, init_params, act, learn)


make_train = B.make_train_of(make)
