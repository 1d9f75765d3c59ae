"""What the tabular temporal-difference agents share (Sutton & Barto chapters 6 and 8):
settings, the epsilon-greedy policy over a Q table, and the step they take.

One iteration is one step of one environment (runs are seeds, vmapped):
  1. act epsilon-greedily on Q(S, .) (ties at random); SARSA acts with the A' it chose on
     the previous step;
  2. step: R, S' (the final observation where the episode ended);
  3. Q(S, A) <- Q(S, A) + alpha (R + gamma (1 - terminated) target(S') - Q(S, A)), where
     target(S') is the agent's (`make_td`'s `target`); a truncated episode bootstraps;
  4. (`plan`, Dyna-Q) further updates from a learnt model.
`state.params` is {"q": Q [S, A], "epsilon": epsilon}: `act` takes the state index.
Metrics per step: `reward`, and for the episode that ended on it `episode_return`,
`episode_length` (NaN on other steps) and `episodes` (0 or 1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from agents.common.config import (OneStepConfig, check_positive_int, check_real,
                                  hparams_from_config,
                                  normalize_fields)
from agents.common.contract import Score
from agents.common.types import Agent

SCORE = Score(metric="episode_return", higher_is_better=True, weight="episodes", label="return")
NAN_METRICS = ("episode_return", "episode_length")
ACT_INPUT = "observation"
ENV_KINDS = ("tabular",)


@dataclasses.dataclass(frozen=True)
class TDConfig(OneStepConfig):
    """Settings every tabular TD agent has (the book's names)."""

    total_timesteps: int = 100_000
    """Environment steps of a run (one per iteration)."""
    alpha: float = 0.5
    """Step size (tunable)."""
    epsilon: float = 0.1
    """Probability of a uniformly random action (tunable)."""
    gamma: float = 1.0
    """Discount (tunable)."""
    initial_value: float = 0.0
    """Q_1(s, a) of every pair (tunable)."""

    def __post_init__(self):
        normalize_fields(self)
        check_positive_int(self, "total_timesteps")
        check_real(self, "alpha", 0.0, 1.0, low_open=True)
        check_real(self, "epsilon", 0.0, 1.0)
        check_real(self, "gamma", 0.0, 1.0)
        check_real(self, "initial_value")



@struct.dataclass
class TDState:
    params: dict  # {"q": [S, A], "epsilon": []}
    hparams: Any
    env_state: Any
    obs: jax.Array  # int32: the current state
    next_action: jax.Array  # int32: SARSA's A' for this step (others ignore it)
    model: Any  # Dyna-Q's learnt model (None for the others)
    key: jax.Array


def greedy_random(key: jax.Array, q_s: jax.Array) -> jax.Array:
    """argmax_a q_s[a] over the actions of q_s [A], ties broken uniformly at random."""
    return jax.random.categorical(key, jnp.where(q_s >= q_s.max(), 0.0, -jnp.inf)).astype(jnp.int32)


def epsilon_greedy_probs(q_s: jax.Array, epsilon: jax.Array) -> jax.Array:
    """pi(a | s) [A] of epsilon-greedy on q_s: epsilon / A each, the rest split between the
    maximising actions."""
    best = (q_s >= q_s.max()).astype(q_s.dtype)
    return epsilon / q_s.shape[0] + (1.0 - epsilon) * best / best.sum()


def act(params: dict, x: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
    """Epsilon-greedy on Q(x, .) with ties at random; `deterministic`: greedy. x: the state
    index (any batch shape)."""
    x = jnp.asarray(x, jnp.int32)
    q_s = params["q"][x].reshape(-1, params["q"].shape[1])
    key_greedy, key_explore, key_random = jax.random.split(key, 3)
    greedy = jax.vmap(greedy_random)(jax.random.split(key_greedy, q_s.shape[0]), q_s).reshape(x.shape)
    if deterministic:
        return greedy
    explore = jax.random.bernoulli(key_explore, params["epsilon"], x.shape)
    random = jax.random.randint(key_random, x.shape, 0, q_s.shape[-1])
    return jnp.where(explore, random, greedy).astype(jnp.int32)


def td_update(q: jax.Array, s, a, r, terminated, bootstrap, alpha, gamma) -> jax.Array:
    """Q with Q(s, a) moved alpha of the way to r + gamma (1 - terminated) bootstrap."""
    target = r + gamma * jnp.where(terminated, 0.0, bootstrap)
    return q.at[s, a].add(alpha * (target - q[s, a]))


def make_td(config: TDConfig, env, env_params, hparams_cls, target: Callable,
            on_policy_next: bool = False, init_model: Callable | None = None,
            plan: Callable | None = None) -> Agent:
    """A tabular TD agent.

    Args:
      target: (q, s_next, a_next, hparams) -> the bootstrap value of S' (a_next: the
        epsilon-greedy A' chosen at S').
      on_policy_next: act with the A' chosen on the previous step (SARSA).
      init_model: Dyna's model, `init_model(num_states, num_actions)`.
      plan: Dyna's planning,
        `plan(key, q, model, s, a, r, s_next, terminated, hparams) -> (q, model)`.
    """
    from envs.wrappers import EpisodeStatistics

    stats_env = EpisodeStatistics(env)
    num_states = int(env.observation_space(env_params).n)
    num_actions = int(env.action_space(env_params).n)

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> TDState:
        key, key_reset, key_act = jax.random.split(key, 3)
        hp = hparams_from_config(hparams_cls, config, hparams,
                                 int_fields=getattr(hparams_cls, "INT_FIELDS", ()))
        obs, env_state = stats_env.reset(key_reset, env_params)
        params = {"q": jnp.full((num_states, num_actions), hp.initial_value),
                  "epsilon": hp.epsilon}
        model = init_model(num_states, num_actions) if init_model else None
        return TDState(params=params, hparams=hp, env_state=env_state, obs=obs,
                       next_action=act(params, obs, key_act), model=model, key=key)

    def update(state: TDState) -> tuple[TDState, dict]:
        hp = state.hparams
        key, key_act, key_step, key_next, key_reset_act, key_plan = jax.random.split(state.key, 6)
        q = state.params["q"]
        s = state.obs
        a = state.next_action if on_policy_next else act(state.params, s, key_act)
        obs, env_state, r, terminated, truncated, info = stats_env.step(
            key_step, state.env_state, a, env_params)
        s_next = info["final_observation"]
        a_next = act(state.params, s_next, key_next)
        q = td_update(q, s, a, r, terminated, target(q, s_next, a_next, hp), hp.alpha, hp.gamma)
        model = state.model
        if plan is not None:
            q, model = plan(key_plan, q, model, s, a, r, s_next, terminated, hp)
        params = {**state.params, "q": q}
        done = terminated | truncated
        next_action = jnp.where(done, act(params, obs, key_reset_act), a_next)
        episode = info["episode"]
        metrics = {"reward": r,
                   "episode_return": jnp.where(done, episode["return"], jnp.nan),
                   "episode_length": jnp.where(done, episode["length"].astype(jnp.float32), jnp.nan),
                   "episodes": done.astype(jnp.int32)}
        return state.replace(params=params, env_state=env_state, obs=obs, next_action=next_action,
                             model=model, key=key), metrics

    return Agent(init=init, update=update, act=act)


@struct.dataclass
class TDHParams:
    alpha: jax.Array
    epsilon: jax.Array
    gamma: jax.Array
    initial_value: jax.Array
