"""Evaluating a policy: whole episodes on fresh environments, in one compiled program.

`run_episodes` is the pure function (used between chunks of a run, for every run of the batch
at once); `evaluate` is the user-facing call on a `Policy` or a saved run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from agents.common.types import reset_carry

# The evaluation keys are drawn from the seed's key folded with this, then with the number
# of iterations done: they never touch the training keys, so a run with evaluation trains
# exactly as one without, and a resumed run evaluates as the uninterrupted one.
EVAL_STREAM = 0x5EED_E7A1
# Episodes of an environment without `max_steps_in_episode` stop after this many steps.
DEFAULT_MAX_STEPS = 10_000
# The metrics of an evaluation in results, logs and checkpoints; agents' own metrics never
# start with the prefix.
EVAL_PREFIX = "eval_"
EVAL_RETURN, EVAL_LENGTH = "eval_return", "eval_length"


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Episodes:
    returns: jax.Array  # [num_episodes] undiscounted return of each episode
    lengths: jax.Array  # [num_episodes] steps of each episode (at most max_steps)


def max_steps(env_params):
    """How long an evaluation episode may last: the environment's time limit (an array when
    it is swept)."""
    return getattr(env_params, "max_steps_in_episode", DEFAULT_MAX_STEPS)


def evaluation_params(env, env_params):
    """The parameters evaluations run with: the environment's `evaluation_params(params)`
    where it has one (a task's held-out prompts), else `env_params`."""
    held_out = getattr(env, "evaluation_params", None)
    return held_out(env_params) if callable(held_out) else env_params


def run_episodes(key: jax.Array, act: Callable, params: Any, env, env_params, num_episodes: int,
             act_input: str = "observation", deterministic: bool = True,
             limit: int | None = None, init_carry: Callable | None = None) -> Episodes:
    """Runs `num_episodes` episodes of `act` on fresh environments, side by side.

    Each environment runs until its first episode ends (or `limit` steps, by default the
    environment's `max_steps_in_episode`); steps after the end are not counted.

    Args:
      key: PRNG key for the resets, the environments' steps and sampled actions.
      act: `act(params, x, key, deterministic)`, x an observation or an environment state
        (`act_input`), unbatched; for a recurrent policy `act(params, x, key, deterministic,
        carry) -> (action, carry)`.
      params: what `act` needs (`state.params` of one run).
      env: the gymnax environment the agent was made for (without the agent's own wrappers).
      env_params: its parameters.
      init_carry: a recurrent policy's `init_carry(batch_shape)` (the agent's); its carry
        starts from it at the reset and again wherever an episode ended. None: stateless.
    """
    limit = max_steps(env_params) if limit is None else limit
    key_reset, key_run = jax.random.split(key)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(key_reset, num_episodes), env_params)
    zeros = jnp.zeros(num_episodes, jnp.float32)
    memory = None if init_carry is None else init_carry((num_episodes,))
    carry = (obs, state, jnp.zeros(num_episodes, bool), zeros, jnp.zeros(num_episodes, jnp.int32),
             key_run, jnp.int32(0), memory)
    limit = jnp.asarray(limit)

    def running(carry):
        *_, ended, _, _, _, t, _ = carry
        return jnp.logical_and(~jnp.all(ended), t < limit)

    def step(carry):
        obs, state, ended, returns, lengths, key, t, memory = carry
        key, key_act, key_step = jax.random.split(key, 3)
        x = obs if act_input == "observation" else state
        keys_act = jax.random.split(key_act, num_episodes)
        if init_carry is None:
            action = jax.vmap(act, in_axes=(None, 0, 0, None))(params, x, keys_act, deterministic)
        else:
            action, memory = jax.vmap(act, in_axes=(None, 0, 0, None, 0))(
                params, x, keys_act, deterministic, memory)
        obs, state, reward, terminated, truncated, _ = jax.vmap(
            env.step, in_axes=(0, 0, 0, None))(jax.random.split(key_step, num_episodes), state,
                                               action, env_params)
        live = ~ended
        returns = returns + jnp.where(live, reward.astype(jnp.float32), 0.0)
        lengths = lengths + live.astype(jnp.int32)
        ended_now = terminated | truncated
        if init_carry is not None:  # obs starts a new episode where one ended (auto-reset)
            memory = reset_carry(init_carry, memory, ended_now)
        return obs, state, ended | ended_now, returns, lengths, key, t + 1, memory

    _, _, _, returns, lengths, _, _, _ = jax.lax.while_loop(running, step, carry)
    return Episodes(returns, lengths)


def eval_key(seed_key: jax.Array, iterations_done: jax.Array) -> jax.Array:
    """The key of the evaluation after `iterations_done` iterations of the run of `seed_key`."""
    return jax.random.fold_in(jax.random.fold_in(seed_key, EVAL_STREAM), iterations_done)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Returns of a policy over fresh episodes.

    Attributes:
      mean: mean return; ci95: its 95% bootstrap confidence interval.
      returns, lengths: per episode [episodes].
      env: where the episodes ran, e.g. "CartPole-v1" or "Gymnasium's CartPole-v1".
    """

    mean: float
    ci95: tuple[float, float]
    returns: np.ndarray
    lengths: np.ndarray
    env: str = ""

    def __str__(self) -> str:
        where = f" in {self.env}" if self.env else ""
        return (f"mean return {self.mean:.4g} (95% CI [{self.ci95[0]:.4g}, {self.ci95[1]:.4g}]) "
                f"over {len(self.returns)} episodes{where}")

    def to_dict(self) -> dict:
        """The evaluation as JSON-ready values."""
        return {"env": self.env, "episodes": len(self.returns), "mean": self.mean,
                "ci95": list(self.ci95), "returns": self.returns.tolist(),
                "lengths": self.lengths.tolist()}


def evaluate(policy, env: Any = None, episodes: int = 100, seed: int = 0, policy_seed: int = 0,
             setting: int | None = None, deterministic: bool = True,
             gymnasium: str | bool | None = None) -> Evaluation:
    """The mean return of a policy over `episodes` fresh episodes, with a 95% CI.

    Args:
      policy: a `Policy` (`results.policy(seed)`, `load_policy(...)`) or a results or
        checkpoint directory (then `policy_seed` and `setting` choose its policy).
      env: an environment id or `(env, env_params)`; default: the one the policy trained on,
        with its parameters.
      episodes: how many episodes (run side by side in one compiled program).
      seed: seed of the evaluation's own randomness (resets, sampled actions); in Gymnasium,
        episode i is reset with seed `seed + i`.
      deterministic: act greedily (the default) or sample.
      gymnasium: run the episodes in Gymnasium's own implementation of the environment instead
        (`envs.GYMNASIUM_IDS`: classic control, FrozenLake, CliffWalking, Taxi), one step at a
        time on the host: True, or Gymnasium's id of the environment.
    """
    from purejaxrl_lab import stats
    from purejaxrl_lab.checkpoint import Policy, load_policy
    from purejaxrl_lab.plan import resolve_env

    if isinstance(policy, (str, Path)):
        policy = load_policy(policy, seed=policy_seed, setting=setting)
    if not isinstance(policy, Policy):
        raise ValueError(f"policy={policy!r} is not allowed: expected a Policy or a results directory")
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes={episodes!r} is not allowed: expected an integer >= 1")
    env_id, env_obj, env_params = resolve_env(policy.env if env is None else env)
    if env is None:  # the parameters the policy trained with
        from purejaxrl_lab.grid import split

        env_params = env_params.replace(**{**policy.env_params, **split(policy.setting)[1]})
    env_params = evaluation_params(env_obj, env_params)
    if gymnasium not in (None, False):
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32 - episodes:
            raise ValueError(f"seed={seed!r} is not allowed with gymnasium: episode i is reset with "
                             f"seed + i, which must be in [0, 2**32)")
        returns, lengths, where = _in_gymnasium(policy, env_id, env_params, gymnasium, episodes,
                                                seed, deterministic)
    else:
        run = jax.jit(lambda key, params: run_episodes(key, policy.act, params, env_obj, env_params,
                                                       episodes, policy.act_input, deterministic,
                                                       init_carry=policy.init_carry))
        out = run(jax.random.key(seed), policy.params)
        returns, lengths, where = np.asarray(out.returns), np.asarray(out.lengths), env_id
    low, high = stats.bootstrap_ci(returns, stats.mean)
    return Evaluation(float(returns.mean()), (float(low), float(high)), returns, lengths, where)


def _in_gymnasium(policy, env_id: str, env_params, gymnasium_id, episodes: int, seed: int,
                  deterministic: bool):
    """Episodes of `policy` in Gymnasium's own implementation of `env_id`, on the host."""
    from envs.interop import GYMNASIUM_IDS, gymnasium_twin

    twin_id = GYMNASIUM_IDS.get(env_id)
    if twin_id is None:
        raise ValueError(f"gymnasium: the policy's environment {env_id} has no implementation in "
                         f"Gymnasium here; environments that have one: {', '.join(GYMNASIUM_IDS)}")
    if gymnasium_id is not True and gymnasium_id != twin_id:
        raise ValueError(f"gymnasium={gymnasium_id!r} is not allowed: the policy acts in {env_id}, "
                         f"whose Gymnasium implementation is {twin_id!r}")
    if policy.act_input != "observation":
        raise ValueError(f"gymnasium: agent {policy.agent} acts on environment states, which "
                         f"Gymnasium's {twin_id} does not expose; evaluate it in {env_id}")
    twin = gymnasium_twin(env_id, env_params)
    space = twin.observation_space
    obs_dtype = np.int32 if np.issubdtype(space.dtype, np.integer) else np.float32
    if policy.init_carry is None:
        act = jax.jit(lambda params, obs, key: policy.act(params, obs, key, deterministic))
    else:
        act = jax.jit(lambda params, obs, key, carry: policy.act(params, obs, key, deterministic, carry))
    key = jax.random.fold_in(jax.random.key(seed), EVAL_STREAM)
    returns, lengths = np.zeros(episodes), np.zeros(episodes, np.int32)
    try:
        for i in range(episodes):
            obs, _ = twin.reset(seed=seed + i)
            carry = None if policy.init_carry is None else policy.init_carry(())
            done = False
            while not done:
                key, key_act = jax.random.split(key)
                x = jnp.asarray(np.asarray(obs, obs_dtype))
                if carry is None:
                    action = act(policy.params, x, key_act)
                else:
                    action, carry = act(policy.params, x, key_act, carry)
                action = np.asarray(action)
                obs, reward, terminated, truncated, _ = twin.step(
                    int(action) if action.ndim == 0 and np.issubdtype(action.dtype, np.integer)
                    else action.astype(np.float32))
                returns[i] += float(reward)
                lengths[i] += 1
                done = terminated or truncated
    finally:
        twin.close()
    return returns, lengths, f"Gymnasium's {twin_id}"
