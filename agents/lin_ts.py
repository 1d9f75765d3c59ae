"""Linear Thompson sampling with the full posterior (LinFullPost, Riquelme et al. 2018):
Bayesian linear regression per arm, R = x . beta_a + eps, eps ~ N(0, sigma_a^2), under the
normal-inverse-gamma prior beta | sigma^2 ~ N(0, sigma^2 / lambda I), sigma^2 ~ IG(a0, b0).

Arm a's posterior after n rounds with contexts X [n, d] and rewards y [n]:
  Lambda = X^T X + lambda I,  mu = Lambda^-1 X^T y,
  a = a0 + n / 2,             b = b0 + (y^T y - mu^T Lambda mu) / 2.
One round with context x:
  1. for every arm draw sigma^2 ~ IG(a, b), then beta ~ N(mu, sigma^2 Lambda^-1);
     A = argmax_a beta_a . x;
  2. observe R and add (x, R) to arm A's statistics (X^T X, X^T y, y^T y, n).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from agents.common import bandit as B
from agents.common.config import check_real

SCORE, NAN_METRICS, ACT_INPUT, EPISODIC = B.SCORE, B.NAN_METRICS, B.ACT_INPUT, B.EPISODIC
PLOT_METRICS, PLOT_STATISTIC = B.PLOT_METRICS, B.PLOT_STATISTIC
ENV_KINDS = B.CONTEXTUAL_ENV_KINDS


@dataclasses.dataclass(frozen=True)
class Config(B.BanditConfig):
    """LinFullPost settings (Riquelme et al. 2018's names and defaults)."""

    lambda_prior: float = 0.25
    """lambda: the prior precision of beta is lambda / sigma^2 (tunable)."""
    a0: float = 6.0
    """Shape of the inverse-gamma prior of sigma^2 (tunable)."""
    b0: float = 6.0
    """Scale of the inverse-gamma prior of sigma^2 (tunable)."""

    def __post_init__(self):
        super().__post_init__()
        for name in ("lambda_prior", "a0", "b0"):
            check_real(self, name, 0.0, low_open=True)


PRESETS: dict[str, Config] = {
    "linear": Config(total_timesteps=1_000),
}


@struct.dataclass
class HParams:
    lambda_prior: jax.Array
    a0: jax.Array
    b0: jax.Array


@struct.dataclass
class Params:
    xtx: jax.Array  # [k, d, d] X^T X per arm
    xty: jax.Array  # [k, d] X^T y per arm
    yty: jax.Array  # [k] y^T y per arm
    n: jax.Array  # [k] rounds per arm
    lambda_prior: jax.Array
    a0: jax.Array
    b0: jax.Array


def act(params: Params, x: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
    """argmax_a beta_a . x for a posterior draw; `deterministic`: for the posterior means."""
    key_draw, key_tie = jax.random.split(key)
    post = B.nig_posterior(params.xtx, params.xty, params.yty, params.n, params.lambda_prior,
                           params.a0, params.b0)
    betas = post.mu if deterministic else B.nig_sample(post, key_draw)
    return B.argmax_random(key_tie, betas @ x)


def learn(params: Params, x, action, reward, hp: HParams) -> Params:
    return params.replace(xtx=params.xtx.at[action].add(jnp.outer(x, x)),
                          xty=params.xty.at[action].add(reward * x),
                          yty=params.yty.at[action].add(reward ** 2),
                          n=params.n.at[action].add(1.0))


def make(config: Config, env, env_params):
    k, d = B.num_arms(env, env_params), B.context_dim(env, env_params)

    def init_params(key, hp: HParams) -> Params:
        return Params(xtx=jnp.zeros((k, d, d)), xty=jnp.zeros((k, d)), yty=jnp.zeros(k),
                      n=jnp.zeros(k), lambda_prior=hp.lambda_prior, a0=hp.a0, b0=hp.b0)

    return B.make_bandit(env, env_params, HParams, config, init_params, act, learn)


make_train = B.make_train_of(make)
