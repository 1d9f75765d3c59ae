"""What every bandit agent shares: its settings, the round it plays, and its metrics.

A bandit agent is a policy `act(params, x, key, deterministic)` over the arms and a learning
rule `learn(params, x, action, reward, hparams) -> params`; `make_bandit` turns the pair into
an `Agent` whose `update` is one round:

  1. choose an arm A for the current context x (`act`, exploring);
  2. the bandit pays R, and says the expected regret of A and whether A was optimal;
  3. `learn` from (x, A, R).

One run is one bandit problem (drawn at reset), played for `total_timesteps` rounds; many
runs are many seeds, vmapped (the textbook's 2,000 runs are `seeds=2000`). Per-round
metrics: `reward`, `regret` (expected: max_a E[R | x, a] - E[R | x, A]), `optimal_action`
(1 if A was optimal) and `cumulative_regret`. The score is `regret` (lower is better).

The exploration constants `act` needs (epsilon, c, ...) are copied into `params` at `init`,
so a policy acts from `state.params` alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from agents.common import cpu
from agents.common.config import (OneStepConfig, check_positive_int, hparams_from_config,
                                  normalize_fields)
from agents.common.contract import Score
from agents.common.types import Agent, train_loop

SCORE = Score(metric="regret", higher_is_better=False, label="regret per round")
NAN_METRICS: tuple[str, ...] = ()
ACT_INPUT = "observation"
ENV_KINDS = ("bandit", "contextual_bandit")  # non-contextual agents ignore a context
CONTEXTUAL_ENV_KINDS = ("contextual_bandit",)
EPISODIC = False  # one never-ending problem per run: no episodes to evaluate
# The CLI's plots besides the score's: the textbook's average reward and % optimal action,
# means over runs.
PLOT_METRICS = ("reward", "optimal_action")
PLOT_STATISTIC = "mean"


@dataclasses.dataclass(frozen=True)
class BanditConfig(OneStepConfig):
    """Settings every bandit agent has."""

    UNIT = "rounds"

    total_timesteps: int = 1_000
    """Rounds of a run (one round per iteration)."""

    def __post_init__(self):
        normalize_fields(self)
        check_positive_int(self, "total_timesteps")



@struct.dataclass
class BanditState:
    params: Any  # the agent's estimates (and exploration constants): what act needs
    hparams: Any
    env_state: Any  # the bandit problem of this run
    obs: jax.Array  # [d] the current context
    cumulative_regret: jax.Array  # sum of the expected regret so far
    key: jax.Array


def make_bandit(env, env_params, hparams_cls, config, init_params: Callable,
                act: Callable, learn: Callable) -> Agent:
    """An `Agent` playing one round per `update`.

    Args:
      hparams_cls: the agent's `HParams`; `hparams_from_config(hparams_cls, config, ...)`
        builds it at init.
      init_params: (key, hparams) -> params, for `num_arms` arms and `context_dim` features
        (closed over by the caller).
      act: (params, x, key, deterministic=False) -> action.
      learn: (params, x, action, reward, hparams) -> params.
    """
    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> BanditState:
        key, key_reset, key_params = jax.random.split(key, 3)
        hp = hparams_from_config(hparams_cls, config, hparams,
                                 int_fields=getattr(hparams_cls, "INT_FIELDS", ()))
        obs, env_state = env.reset(key_reset, env_params)
        return BanditState(params=init_params(key_params, hp), hparams=hp, env_state=env_state,
                           obs=obs, cumulative_regret=jnp.float32(0.0), key=key)

    def update(state: BanditState) -> tuple[BanditState, dict]:
        key, key_act, key_step = jax.random.split(state.key, 3)
        action = act(state.params, state.obs, key_act)
        obs, env_state, reward, _, _, info = env.step(key_step, state.env_state, action, env_params)
        params = learn(state.params, state.obs, action, reward, state.hparams)
        cumulative = state.cumulative_regret + info["regret"]
        metrics = {"reward": reward, "regret": info["regret"],
                   "optimal_action": info["optimal"].astype(jnp.float32),
                   "cumulative_regret": cumulative}
        return state.replace(params=params, env_state=env_state, obs=obs,
                             cumulative_regret=cumulative, key=key), metrics

    return Agent(init=init, update=update, act=act)


def make_train_of(make: Callable):
    """`make_train` of a bandit agent module whose `make(config, env, env_params)` is given."""

    def make_train(config, env, env_params):
        return train_loop(make(config, env, env_params), config.num_iterations)

    return make_train


def argmax_random(key: jax.Array, values: jax.Array) -> jax.Array:
    """An index of the largest of `values` [k], ties broken uniformly at random (the
    textbook's greedy choice)."""
    best = values >= values.max()
    return jax.random.categorical(key, jnp.where(best, 0.0, -jnp.inf)).astype(jnp.int32)


def num_arms(env, env_params) -> int:
    return int(env.action_space(env_params).n)


def context_dim(env, env_params) -> int:
    return int(env.observation_space(env_params).shape[0])


# --------------------------------------------------------------------------- Bayesian linear regression


@struct.dataclass
class Posterior:
    """Normal-inverse-gamma posteriors of k linear models (`nig_posterior`)."""

    mu: jax.Array  # [k, d] posterior mean of beta
    chol: jax.Array  # [k, d, d] Cholesky factor L of the precision Lambda = L L^T
    a: jax.Array  # [k] inverse-gamma shape
    b: jax.Array  # [k] inverse-gamma scale


def nig_posterior(xtx, xty, yty, n, lambda_prior, a0, b0) -> Posterior:
    """The posterior of y = x . beta + eps, eps ~ N(0, sigma^2), under beta | sigma^2 ~
    N(0, sigma^2 / lambda I), sigma^2 ~ IG(a0, b0), from each model's statistics X^T X
    [k, d, d], X^T y [k, d], y^T y [k] and n [k]:

        Lambda = X^T X + lambda I,  mu = Lambda^-1 X^T y,
        a = a0 + n / 2,             b = b0 + (y^T y - mu^T Lambda mu) / 2.
    """
    precision = xtx + lambda_prior * jnp.eye(xty.shape[-1])
    chol = cpu.cholesky(precision)
    mu = cpu.solve_upper(chol, cpu.solve_lower(chol, xty))
    quad = jnp.einsum("ki,kij,kj->k", mu, precision, mu)
    return Posterior(mu=mu, chol=chol, a=a0 + n / 2.0, b=b0 + jnp.maximum(yty - quad, 0.0) / 2.0)


def nig_sample(post: Posterior, key: jax.Array) -> jax.Array:
    """beta [k, d]: sigma^2 ~ IG(a, b), then beta ~ N(mu, sigma^2 Lambda^-1), per model."""
    key_sigma, key_beta = jax.random.split(key)
    sigma2 = post.b / jax.random.gamma(key_sigma, post.a)
    z = jax.random.normal(key_beta, post.mu.shape)
    # Lambda = L L^T, so L^-T z ~ N(0, Lambda^-1).
    noise = cpu.solve_upper(post.chol, z)
    return post.mu + jnp.sqrt(sigma2)[:, None] * noise


# --------------------------------------------------------------------------- Beta draws


def sample_gamma(key: jax.Array, alpha: jax.Array) -> jax.Array:
    """Gamma(alpha, 1) draws, shape of `alpha`: Marsaglia & Tsang's (2000) rejection sampler,
    exact. Every value gets one proposal; the few rejected ones (under 5% for alpha >= 1) get
    fresh proposals from a quarter-size batch, again and again until none is left, so a
    round of many draws does not pay full-size batches for its stragglers. alpha < 1 draws
    Gamma(alpha + 1) times U^(1 / alpha).

    Faster than `jax.random.gamma` for many small draws at once (Thompson sampling's arms
    of thousands of vmapped runs), whose per-value loop runs full-size until the slowest
    value is done.
    """
    alpha = jnp.asarray(alpha, jnp.float32)
    shape, n = alpha.shape, alpha.size
    key, key_boost = jax.random.split(key)
    boosted = alpha.reshape(-1) < 1.0
    d = jnp.where(boosted, alpha.reshape(-1) + 1.0, alpha.reshape(-1)) - 1.0 / 3.0
    c = 1.0 / jnp.sqrt(9.0 * d)
    slots = max(1, -(-n // 4))

    def accept(x, u, d, c):
        v = (1.0 + c * x) ** 3
        ok = (v > 0) & (jnp.log(u) < 0.5 * x ** 2 + d - d * v + d * jnp.log(jnp.maximum(v, 1e-30)))
        return ok, d * v

    def draws(key, size):
        key_x, key_u = jax.random.split(key)
        return jax.random.normal(key_x, (size,)), jax.random.uniform(key_u, (size,))

    x, u = draws(jax.random.fold_in(key, 0), n)
    done, value = accept(x, u, d, c)

    def missing(carry):
        return ~carry[0].all()

    def again(carry):
        done, value, i = carry
        x, u = draws(jax.random.fold_in(key, i), slots)
        rank = jnp.cumsum(~done) - 1  # the r-th value still waiting takes proposal r
        served = ~done & (rank < slots)
        slot = jnp.clip(rank, 0, slots - 1)
        ok, new = accept(x[slot], u[slot], d, c)
        take = served & ok
        return done | take, jnp.where(take, new, value), i + 1

    _, value, _ = jax.lax.while_loop(missing, again, (done, value, jnp.int32(1)))
    boost = jax.random.uniform(key_boost, (n,)) ** (1.0 / jnp.maximum(alpha.reshape(-1), 1e-30))
    return jnp.where(boosted, value * boost, value).reshape(shape)


def sample_beta(key: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """Beta(a, b) draws: X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b) (`sample_gamma`)."""
    key_a, key_b = jax.random.split(key)
    x, y = sample_gamma(key_a, a), sample_gamma(key_b, b)
    return x / (x + y)
