"""A test agent deliberately unlike PPO, to keep the lab general (not shipped in `agents/`).

Win-stay/lose-shift learned from scratch on gymnax's two-armed Bernoulli bandit
(BernoulliBandit-misc: each episode draws arm probabilities (0.1, 0.9) or (0.9, 0.1)).
A table Q[last action, last reward, action] of mean rewards is learned by a running
average with step size `step_size`, acting epsilon-greedily with epsilon decaying linearly
over `decay_rounds` rounds. Unlike PPO it:
  - is scored by per-round regret, lower is better (`SCORE`);
  - counts rounds, not environment steps (`Config.unit`);
  - has a nested config (`exploration`) and an integer tunable (`decay_rounds`);
  - acts on the environment state (`ACT_INPUT = "env_state"`), reading the last action and
    reward from it, as a search agent reads the state it plans from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import struct

import envs
from agents.common import (Agent, Score, check_positive_int, check_real, normalize_fields,
                           train_loop)

SCORE = Score(metric="regret", higher_is_better=False)
NAN_METRICS = ("episode_return",)
ACT_INPUT = "env_state"


@dataclasses.dataclass(frozen=True)
class Exploration:
    """Epsilon-greedy exploration."""

    epsilon_start: float = 1.0
    """Probability of a random arm at the first round."""
    epsilon_end: float = 0.05
    """... after `decay_rounds` rounds."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Toy bandit settings."""

    SHAPE_FIELDS: ClassVar[frozenset[str]] = frozenset({"total_rounds", "num_envs", "rounds_per_env"})

    total_rounds: int = 8 * 16 * 12
    """Rounds in the whole run, summed over the parallel bandits."""
    num_envs: int = 8
    """Bandits played side by side."""
    rounds_per_env: int = 16
    """Rounds per bandit in one iteration."""
    step_size: float = 0.1
    """Step size of the running average of rewards (tunable)."""
    decay_rounds: int = 512
    """Rounds (per bandit) over which epsilon decays (tunable, an integer)."""
    exploration: Exploration = Exploration()
    """Exploration schedule."""

    def __post_init__(self):
        normalize_fields(self)
        check_positive_int(self, "total_rounds", "num_envs", "rounds_per_env", "decay_rounds")
        check_real(self, "step_size", 0.0, 1.0, low_open=True)

    @property
    def units_per_iteration(self) -> int:
        return self.num_envs * self.rounds_per_env

    @property
    def num_iterations(self) -> int:
        return self.total_rounds // self.units_per_iteration

    @property
    def unit(self) -> str:
        return "rounds"


PRESETS = {"slow": Config(decay_rounds=2048)}


@struct.dataclass
class Params:
    q: jax.Array  # [2 last action, 2 last reward, 2 action] mean reward estimates


@struct.dataclass
class HParams:
    step_size: jax.Array  # [] float32
    decay_rounds: jax.Array  # [] int32


@struct.dataclass
class State:
    params: Params
    env_state: Any  # [num_envs]
    key: jax.Array
    hparams: HParams
    rounds: jax.Array  # [] int32 rounds per bandit so far


def greedy(params: Params, env_state) -> jax.Array:
    return jnp.argmax(params.q[env_state.last_action, env_state.last_reward], axis=-1)


def make(config: Config, env, env_params) -> Agent:
    venv = envs.VecEnv(envs.EpisodeStatistics(env), config.num_envs)

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> State:
        hp = HParams(jnp.float32(config.step_size), jnp.int32(config.decay_rounds))
        if hparams:
            hp = hp.replace(**{k: jnp.asarray(v, getattr(hp, k).dtype) for k, v in hparams.items()})
        key, key_env = jax.random.split(key)
        _, env_state = venv.reset(key_env, env_params)
        return State(Params(jnp.full((2, 2, 2), 0.5)), env_state, key, hp, jnp.int32(0))

    def update(state: State):
        hp, ex = state.hparams, config.exploration

        def round_(carry, key):
            params, env_state, rounds = carry
            key_explore, key_arm, key_step = jax.random.split(key, 3)
            inner = env_state.env_state  # the bandits' own states [num_envs]
            fraction = jnp.minimum(rounds / hp.decay_rounds, 1.0)
            epsilon = ex.epsilon_start + fraction * (ex.epsilon_end - ex.epsilon_start)
            explore = jax.random.uniform(key_explore, (config.num_envs,)) < epsilon
            random_arm = jax.random.randint(key_arm, (config.num_envs,), 0, 2)
            action = jnp.where(explore, random_arm, greedy(params, inner))
            _, env_state, reward, _, _, info = venv.step(key_step, env_state, action, env_params)
            index = (inner.last_action, inner.last_reward, action)
            q = params.q.at[index].add(hp.step_size * (reward - params.q[index]))
            regret = inner.exp_reward_best - inner.reward_probs[jnp.arange(config.num_envs), action]
            return (Params(q), env_state, rounds + 1), (regret, reward, epsilon, info["episode"])

        keys = jax.random.split(state.key, config.rounds_per_env + 1)
        (params, env_state, rounds), (regret, reward, epsilon, episode) = jax.lax.scan(
            round_, (state.params, state.env_state, state.rounds), keys[1:])
        metrics = {"regret": regret.mean(), "reward": reward.mean().astype(jnp.float32),
                   "epsilon": epsilon[-1],
                   "episode_return": envs.summarize_episodes(episode)["episode_return"]}
        return state.replace(params=params, env_state=env_state, key=keys[0], rounds=rounds), metrics

    def act(params: Params, env_state, key: jax.Array, deterministic: bool = False):
        """An arm for one bandit's environment state (unwrapped, as `env.reset` gives it)."""
        if deterministic:
            return greedy(params, env_state)
        logits = params.q[env_state.last_action, env_state.last_reward] / 0.1
        return jax.random.categorical(key, logits)

    return Agent(init, update, act)


def make_train(config: Config, env, env_params):
    return train_loop(make(config, env, env_params), config.num_iterations)
