"""Dyna-Q (Sutton 1990; Sutton & Barto section 8.2): Q-learning plus planning from a learnt
model.

Each step:
  1-3. act epsilon-greedily, step, and the Q-learning update of (S, A, R, S');
  4.   Model(S, A) <- (R, S', terminated)   (the last outcome seen: a deterministic model);
  5.   n times (`planning_steps`): a previously seen (s, a) uniformly at random,
       (r, s', t) = Model(s, a),  Q(s, a) <- Q(s, a) + alpha [r + gamma (1 - t) max_a' Q(s', a') - Q(s, a)].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from agents.common import td
from agents.common.config import invalid
from agents.common.types import train_loop

SCORE, NAN_METRICS, ACT_INPUT, ENV_KINDS = td.SCORE, td.NAN_METRICS, td.ACT_INPUT, td.ENV_KINDS


@dataclasses.dataclass(frozen=True)
class Config(td.TDConfig):
    """Dyna-Q settings (the book's names)."""

    planning_steps: int = 5
    """n: model updates per real step (tunable)."""

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.planning_steps, bool) or self.planning_steps < 0:
            raise invalid("planning_steps", self.planning_steps, "expected an integer >= 0")


PRESETS: dict[str, Config] = {
    # Sutton & Barto Figure 8.2 on DynaMaze-v0: alpha 0.1, epsilon 0.1, gamma 0.95.
    "maze": Config(total_timesteps=6_000, alpha=0.1, epsilon=0.1, gamma=0.95, planning_steps=50),
}


@struct.dataclass
class HParams(td.TDHParams):
    planning_steps: jax.Array

    INT_FIELDS = ("planning_steps",)


@struct.dataclass
class Model:
    reward: jax.Array  # [S, A] the last reward seen after (s, a)
    next_state: jax.Array  # [S, A] int32
    terminated: jax.Array  # [S, A] bool
    seen: jax.Array  # [S, A] bool: (s, a) was taken
    pairs: jax.Array  # [S * A] int32: the seen pairs s * A + a, in the order first seen
    num_seen: jax.Array  # int32: how many pairs have been seen


def init_model(num_states: int, num_actions: int) -> Model:
    shape = (num_states, num_actions)
    return Model(reward=jnp.zeros(shape), next_state=jnp.zeros(shape, jnp.int32),
                 terminated=jnp.zeros(shape, bool), seen=jnp.zeros(shape, bool),
                 pairs=jnp.zeros(num_states * num_actions, jnp.int32), num_seen=jnp.int32(0))


def plan(key, q, model: Model, s, a, r, s_next, terminated, hp: HParams):
    """Steps 4 and 5."""
    num_actions = q.shape[1]
    new = ~model.seen[s, a]
    model = Model(reward=model.reward.at[s, a].set(r),
                  next_state=model.next_state.at[s, a].set(s_next),
                  terminated=model.terminated.at[s, a].set(terminated),
                  seen=model.seen.at[s, a].set(True),
                  pairs=jnp.where(new, model.pairs.at[model.num_seen].set(s * num_actions + a),
                                  model.pairs),
                  num_seen=model.num_seen + new.astype(jnp.int32))

    def one(i, q):
        pair = model.pairs[jax.random.randint(jax.random.fold_in(key, i), (), 0, model.num_seen)]
        ps, pa = pair // num_actions, pair % num_actions
        ns = model.next_state[ps, pa]
        return td.td_update(q, ps, pa, model.reward[ps, pa], model.terminated[ps, pa], q[ns].max(),
                            hp.alpha, hp.gamma)

    return jax.lax.fori_loop(0, hp.planning_steps, one, q), model


def target(q, s_next, a_next, hp):
    return q[s_next].max()


def make(config: Config, env, env_params):
    return td.make_td(config, env, env_params, HParams, target, init_model=init_model, plan=plan)


def make_train(config: Config, env, env_params):
    return train_loop(make(config, env, env_params), config.num_iterations)
