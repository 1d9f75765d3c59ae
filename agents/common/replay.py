"""A replay buffer held in the agent state: fixed capacity, one observation per step.

    replay = make_replay(capacity=1000, num_envs=10, n_step=3, max_episode_steps=500)
    buffer = replay.init(example_step)            # ReplayState, zeros
    buffer = replay.add(buffer, steps)            # steps: Steps with leaves [T, num_envs, ...]
    batch = replay.sample(buffer, key, 128)       # Batch: n-step windows, uniform
    ready = replay.can_sample(buffer)             # False until n + 1 steps are stored

The buffer is a ring over time, `capacity` steps of `num_envs` environments stepped in
lockstep (a trajectory layout): slot [t, e] holds the observation environment e acted on
at step t, the action, reward and how the step ended. The next observation of a step is
the next slot's, so each observation is stored once. Where an episode was truncated
(a time limit), the observation it really reached is not the next slot's (that is the
next episode's first observation, after gymnax's same-step auto-reset), so it goes to a
small ring of its own, `final_obs`, with `final_capacity` rows per environment: time
limits are at least `max_episode_steps` apart, so (capacity - 1) // max_episode_steps + 2
rows hold every truncation still in the buffer. Terminated steps need no next
observation (nothing is bootstrapped past a termination).

Everything is a pytree of arrays with static shapes: the buffer vmaps over runs and
sweep settings, shards with the run axis, and is checkpointed and resumed with the rest
of the state. Sampling draws uniformly among the stored steps whose n-step window is
complete, so it never returns an empty slot.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from agents.common.value_learning import episode_window


@struct.dataclass
class Steps:
    """Environment steps to store (or one step, as an example for `init`)."""

    obs: jax.Array  # [T, num_envs, *obs_shape] the observation acted on
    action: jax.Array  # [T, num_envs, *action_shape]
    reward: jax.Array  # [T, num_envs]
    terminated: jax.Array  # [T, num_envs] bool
    truncated: jax.Array  # [T, num_envs] bool
    final_obs: jax.Array  # [T, num_envs, *obs_shape] the observation the step reached


@struct.dataclass
class ReplayState:
    obs: jax.Array  # [capacity, num_envs, *obs_shape]
    action: jax.Array  # [capacity, num_envs, *action_shape]
    reward: jax.Array  # [capacity, num_envs] float32
    terminated: jax.Array  # [capacity, num_envs] bool
    truncated: jax.Array  # [capacity, num_envs] bool
    final_row: jax.Array  # [capacity, num_envs] int32: row of final_obs of a truncated step
    final_obs: jax.Array  # [final_capacity, num_envs, *obs_shape] truncated steps' last obs
    final_pos: jax.Array  # [num_envs] int32 next row of final_obs to write
    pos: jax.Array  # [] int32 next slot to write
    size: jax.Array  # [] int32 slots written, at most capacity


@struct.dataclass
class Batch:
    """`sample`'s n-step windows; the learner builds its targets from them."""

    obs: jax.Array  # [B, *obs_shape] observation acted on
    action: jax.Array  # [B, *action_shape]
    reward: jax.Array  # [B, n] rewards of the window's steps
    terminated: jax.Array  # [B, n]
    truncated: jax.Array  # [B, n]
    next_obs: jax.Array  # [B, *obs_shape] the observation reached by the window's last
    #                      step (its first episode end, or step n); meaningless past a
    #                      termination, where the target does not bootstrap


class Replay(NamedTuple):
    init: Callable[[Steps], ReplayState]
    add: Callable[[ReplayState, Steps], ReplayState]
    sample: Callable[[ReplayState, jax.Array, int], Batch]
    can_sample: Callable[[ReplayState], jax.Array]


def final_capacity(capacity: int, max_episode_steps: int | None) -> int:
    """Rows of `final_obs` per environment: enough for every truncation among `capacity`
    consecutive steps when time limits are `max_episode_steps` apart (None: unknown, one
    row per slot)."""
    if not max_episode_steps or max_episode_steps < 1:
        return capacity
    return min(capacity, (capacity - 1) // max_episode_steps + 2)


def max_episode_steps(env_params: Any) -> int | None:
    """The time limit in `env_params` (gymnax's `max_steps_in_episode`) when it is a
    concrete number, else None (absent, or swept inside a traced program)."""
    value = getattr(env_params, "max_steps_in_episode", None)
    try:
        return int(value) if value is not None else None
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None


def nbytes(state: ReplayState) -> int:
    """Bytes the buffer holds."""
    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(state))


def make_replay(capacity: int, num_envs: int, n_step: int = 1,
                max_episode_steps: int | None = None) -> Replay:
    """A uniform replay buffer of `capacity` steps of `num_envs` environments.

    Args:
      capacity: steps stored per environment (the buffer holds capacity * num_envs
        transitions); must exceed n_step.
      num_envs: environments written together by `add`.
      n_step: length of the windows `sample` returns.
      max_episode_steps: the environment's time limit, which sizes the ring of truncated
        steps' final observations (None: one row per slot).
    """
    if capacity <= n_step:
        raise ValueError(f"replay capacity {capacity} must exceed n_step {n_step}")
    rows = final_capacity(capacity, max_episode_steps)

    def init(example: Steps) -> ReplayState:
        """Zeros shaped like `example`, one step (leaves [num_envs, ...]); only its shapes
        and dtypes are read."""
        def slots(x, n):
            return jnp.zeros((n, *jnp.shape(x)), jnp.result_type(x))

        return ReplayState(
            obs=slots(example.obs, capacity),
            action=slots(example.action, capacity),
            reward=jnp.zeros((capacity, num_envs), jnp.float32),
            terminated=jnp.zeros((capacity, num_envs), bool),
            truncated=jnp.zeros((capacity, num_envs), bool),
            final_row=jnp.zeros((capacity, num_envs), jnp.int32),
            final_obs=slots(example.obs, rows),
            final_pos=jnp.zeros((num_envs,), jnp.int32),
            pos=jnp.int32(0),
            size=jnp.int32(0),
        )

    def add(state: ReplayState, steps: Steps) -> ReplayState:
        """Writes T steps (leaves [T, num_envs, ...]) after the last ones, over the oldest."""
        length = steps.reward.shape[0]
        if length > capacity:
            raise ValueError(f"cannot add {length} steps to a replay of capacity {capacity}")
        slot = (state.pos + jnp.arange(length)) % capacity  # [T]
        truncated = steps.truncated.astype(bool)
        # Each truncated step takes the next row of its environment's final_obs ring.
        earlier = jnp.cumsum(truncated, axis=0, dtype=jnp.int32) - truncated  # [T, E]
        row = (state.final_pos[None, :] + earlier) % rows
        write_row = jnp.where(truncated, row, rows)  # out of range: dropped below
        env = jnp.broadcast_to(jnp.arange(num_envs), truncated.shape)
        return ReplayState(
            obs=state.obs.at[slot].set(steps.obs.astype(state.obs.dtype)),
            action=state.action.at[slot].set(steps.action.astype(state.action.dtype)),
            reward=state.reward.at[slot].set(steps.reward.astype(jnp.float32)),
            terminated=state.terminated.at[slot].set(steps.terminated.astype(bool)),
            truncated=state.truncated.at[slot].set(truncated),
            final_row=state.final_row.at[slot].set(row),
            final_obs=state.final_obs.at[write_row, env].set(
                steps.final_obs.astype(state.final_obs.dtype), mode="drop"),
            final_pos=(state.final_pos + truncated.sum(0, dtype=jnp.int32)) % rows,
            pos=(state.pos + length) % capacity,
            size=jnp.minimum(state.size + length, capacity),
        )

    def can_sample(state: ReplayState) -> jax.Array:
        """Whether a complete n-step window is stored: size > n_step."""
        return state.size > n_step

    def sample(state: ReplayState, key: jax.Array, batch_size: int) -> Batch:
        """`batch_size` windows drawn uniformly (with replacement) among the stored steps
        whose n steps and next observation are stored (the newest n steps wait for
        theirs). Only valid where `can_sample`."""
        key_env, key_start = jax.random.split(key)
        env = jax.random.randint(key_env, (batch_size,), 0, num_envs)
        starts = jnp.maximum(state.size - n_step, 1)
        offset = jax.random.randint(key_start, (batch_size,), 0, starts)
        first = (state.pos - state.size + offset) % capacity  # [B] slot of the first step
        window = (first[:, None] + jnp.arange(n_step + 1)) % capacity  # [B, n + 1]
        steps_slot, env_b = window[:, :n_step], env[:, None]
        terminated = state.terminated[steps_slot, env_b]  # [B, n]
        truncated = state.truncated[steps_slot, env_b]
        used = jax.vmap(episode_window)(terminated, truncated)  # [B] steps in the window
        last = jnp.take_along_axis(window, (used - 1)[:, None], axis=1)[:, 0]
        after = jnp.take_along_axis(window, used[:, None], axis=1)[:, 0]
        final = state.final_obs[state.final_row[last, env], env]
        next_obs = _where_rows(state.truncated[last, env], final, state.obs[after, env])
        return Batch(
            obs=state.obs[first, env],
            action=state.action[first, env],
            reward=state.reward[steps_slot, env_b],
            terminated=terminated,
            truncated=truncated,
            next_obs=next_obs,
        )

    return Replay(init, add, sample, can_sample)


def _where_rows(condition: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """x[i] where condition[i] else y[i], for leaves [B, ...]."""
    return jnp.where(condition.reshape(condition.shape + (1,) * (x.ndim - 1)), x, y)
