"""LinUCB with disjoint linear models (Li et al. 2010, Algorithm 1) on a contextual bandit.

Every arm a keeps A_a = lambda I + sum x x^T and b_a = sum R x over the rounds it was chosen.
One round with context x [d]:
  1. theta_a = A_a^-1 b_a;  p_a = theta_a . x + alpha sqrt(x^T A_a^-1 x);  A = argmax_a p_a
     (ties at random);
  2. observe R;  A_A <- A_A + x x^T;  b_A <- b_A + R x.
The agent holds A_a^-1 rather than A_a and updates it with the Sherman-Morrison formula,
  (A + x x^T)^-1 = A^-1 - (A^-1 x)(A^-1 x)^T / (1 + x^T A^-1 x),
so a round takes matrix-vector products only.
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
    """LinUCB settings (the paper's names)."""

    alpha: float = 1.0
    """Width of the confidence bound, alpha >= 0 (tunable)."""
    regularization: float = 1.0
    """lambda: A_a starts at lambda I (tunable)."""

    def __post_init__(self):
        super().__post_init__()
        check_real(self, "alpha", 0.0)
        check_real(self, "regularization", 0.0, low_open=True)


PRESETS: dict[str, Config] = {
    "linear": Config(total_timesteps=1_000, alpha=1.0),
}


@struct.dataclass
class HParams:
    alpha: jax.Array
    regularization: jax.Array


@struct.dataclass
class Params:
    a_inv: jax.Array  # [k, d, d] A_a^-1, A_a = lambda I + sum x x^T
    b: jax.Array  # [k, d] sum R x per arm
    alpha: jax.Array  # the bound's width


def scores(params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(theta_a . x, sqrt(x^T A_a^-1 x)) [k] each."""
    a_inv_x = params.a_inv @ x  # [k, d] (A_a^-1 is symmetric)
    return jnp.einsum("kd,kd->k", a_inv_x, params.b), jnp.sqrt(jnp.maximum(a_inv_x @ x, 0.0))


def act(params: Params, x: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
    """argmax_a theta_a . x + alpha sqrt(x^T A_a^-1 x); `deterministic`: without the bound."""
    mean, width = scores(params, x)
    return B.argmax_random(key, mean if deterministic else mean + params.alpha * width)


def learn(params: Params, x, action, reward, hp: HParams) -> Params:
    a_inv = params.a_inv[action]
    u = a_inv @ x
    a_inv = a_inv - jnp.outer(u, u) / (1.0 + x @ u)
    return params.replace(a_inv=params.a_inv.at[action].set(a_inv),
                          b=params.b.at[action].add(reward * x))


def make(config: Config, env, env_params):
    k, d = B.num_arms(env, env_params), B.context_dim(env, env_params)

    def init_params(key, hp: HParams) -> Params:
        return Params(a_inv=jnp.broadcast_to(jnp.eye(d) / hp.regularization, (k, d, d)),
                      b=jnp.zeros((k, d)), alpha=hp.alpha)

    return B.make_bandit(env, env_params, HParams, config, init_params, act, learn)


make_train = B.make_train_of(make)
