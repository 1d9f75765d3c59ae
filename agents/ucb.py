"""Upper-confidence-bound action selection on a bandit (UCB1, Auer et al. 2002; Sutton &
Barto section 2.7).

One round at time t (1, 2, ...):
  1. A = argmax_a [ Q(a) + c sqrt(ln t / N(a)) ], an arm with N(a) = 0 first (a maximising
     arm; ties at random);
  2. observe R; N(A) <- N(A) + 1; Q(A) <- Q(A) + (R - Q(A)) / N(A) (sample averages, or the
     constant `alpha` when > 0).
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
    """UCB settings (the book's names)."""

    c: float = 2.0
    """Exploration constant c >= 0 of the bonus c sqrt(ln t / N(a)) (tunable)."""
    alpha: float = 0.0
    """Constant step size; 0: sample averages (tunable)."""

    def __post_init__(self):
        super().__post_init__()
        check_real(self, "c", 0.0)
        check_real(self, "alpha", 0.0, 1.0)


PRESETS: dict[str, Config] = {
    # Sutton & Barto Figure 2.4: UCB c = 2 on the 10-armed testbed.
    "testbed": Config(total_timesteps=1_000, c=2.0),
}


@struct.dataclass
class HParams:
    c: jax.Array
    alpha: jax.Array


@struct.dataclass
class Params:
    q: jax.Array  # [k] action-value estimates
    n: jax.Array  # [k] times each arm was chosen
    c: jax.Array  # the exploration constant


def bonus(n: jax.Array, t: jax.Array, c: jax.Array) -> jax.Array:
    """c sqrt(ln t / N(a)) [k], +inf where N(a) = 0 (an untried arm is maximising)."""
    safe = jnp.maximum(n, 1.0)
    return jnp.where(n > 0, c * jnp.sqrt(jnp.log(jnp.maximum(t, 1.0)) / safe), jnp.inf)


def act(params: Params, x: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
    """The UCB arm (its own exploration); `deterministic`: greedy on Q."""
    if deterministic:
        return B.argmax_random(key, params.q)
    t = params.n.sum() + 1.0  # this round's number
    return B.argmax_random(key, params.q + bonus(params.n, t, params.c))


def learn(params: Params, x, action, reward, hp: HParams) -> Params:
    n = params.n.at[action].add(1.0)
    step = jnp.where(hp.alpha > 0, hp.alpha, 1.0 / n[action])
    return params.replace(q=params.q.at[action].add(step * (reward - params.q[action])), n=n)


def make(config: Config, env, env_params):
    k = B.num_arms(env, env_params)

    def init_params(key, hp: HParams) -> Params:
        return Params(q=jnp.zeros(k), n=jnp.zeros(k), c=hp.c)

    return B.make_bandit(env, env_params, HParams, config, init_params, act, learn)


make_train = B.make_train_of(make)
