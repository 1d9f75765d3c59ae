"""The replay buffer held in the agent state (agents/common/replay.py).

Every stored value encodes where it came from (step * 10 + env), so each sample can be
decoded and checked against the step and environment it claims to be.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.common.replay import Steps, final_capacity, make_replay, nbytes

NUM_ENVS = 3


def _steps(first: int, length: int, truncate_every: int = 0, terminate_every: int = 0) -> Steps:
    """Steps first..first+length-1 of NUM_ENVS envs; obs = step * 10 + env, final obs
    = obs + 0.5 (what each step reached), episodes cut at multiples of the periods."""
    t = np.arange(first, first + length)[:, None]
    e = np.arange(NUM_ENVS)[None, :]
    code = (t * 10 + e).astype(np.float32)
    never = np.zeros((length, NUM_ENVS), bool)
    truncated = never | (t % truncate_every == truncate_every - 1) if truncate_every else never
    terminated = never | (t % terminate_every == terminate_every - 1) if terminate_every else never
    return Steps(obs=jnp.asarray(code[..., None]), action=jnp.asarray((t + e) % 2, np.int32),
                 reward=jnp.asarray(code), terminated=jnp.asarray(terminated & ~truncated),
                 truncated=jnp.asarray(truncated), final_obs=jnp.asarray(code[..., None] + 0.5))


def _fill(replay, total, block, **kw):
    state = replay.init(jax.tree.map(lambda x: x[0], _steps(0, 1, **kw)))
    add = jax.jit(replay.add)
    for first in range(0, total, block):
        state = add(state, _steps(first, block, **kw))
    return state


def test_wrap_around_keeps_the_newest_steps():
    replay = make_replay(capacity=10, num_envs=NUM_ENVS)
    state = _fill(replay, total=24, block=4)
    assert int(state.size) == 10 and int(state.pos) == 24 % 10
    stored_steps = sorted(set((np.asarray(state.obs[:, 0, 0]) // 10).astype(int)))
    assert stored_steps == list(range(14, 24))  # the 10 newest of 24 steps
    # slot 3 was written by steps 3 and 13, then 23
    np.testing.assert_array_equal(state.obs[3, :, 0], [230, 231, 232])


def test_sampling_never_returns_an_empty_slot_and_windows_are_contiguous():
    replay = make_replay(capacity=8, num_envs=NUM_ENVS, n_step=3)
    sample = jax.jit(replay.sample, static_argnums=2)
    state = replay.init(jax.tree.map(lambda x: x[0], _steps(0, 1)))
    assert not bool(replay.can_sample(state))
    add = jax.jit(replay.add)
    for first in range(0, 20):  # partly filled, full, wrapped
        state = add(state, _steps(first, 1))
        if not bool(replay.can_sample(state)):
            assert first + 1 <= 3  # size <= n_step
            continue
        batch = sample(state, jax.random.key(first), 256)
        step, env = np.divmod(np.asarray(batch.obs[:, 0]).astype(int), 10)
        newest = first
        oldest = max(0, newest - 7)
        # every window starts at a stored step and has its n steps and next obs stored
        assert step.min() >= oldest and step.max() <= newest - 3
        np.testing.assert_array_equal(batch.reward, (step[:, None] + np.arange(3)) * 10 + env[:, None])
        np.testing.assert_array_equal(batch.next_obs[:, 0], (step + 3) * 10 + env)
        # all valid starts get drawn: the buffer is sampled uniformly over them
        assert len(set(zip(step, env))) == (newest - oldest - 2) * NUM_ENVS


def test_truncated_steps_bootstrap_from_their_final_observation():
    # Episodes truncated every 4 steps: a window reaching the truncation ends there, and its
    # next observation is the truncated step's final observation (code + 0.5), not the next
    # episode's first observation (the next slot).
    replay = make_replay(capacity=12, num_envs=NUM_ENVS, n_step=2, max_episode_steps=4)
    assert final_capacity(12, 4) == 4  # (12 - 1) // 4 + 2 rows hold every live truncation
    state = _fill(replay, total=30, block=3, truncate_every=4)
    batch = jax.jit(replay.sample, static_argnums=2)(state, jax.random.key(0), 512)
    obs = np.asarray(batch.obs[:, 0])
    step = obs.astype(int) // 10
    truncated_first = step % 4 == 3  # the window's first step ends its episode
    truncated_second = step % 4 == 2
    np.testing.assert_array_equal(batch.truncated[:, 0], truncated_first)
    np.testing.assert_array_equal(batch.next_obs[truncated_first, 0], obs[truncated_first] + 0.5)
    np.testing.assert_array_equal(batch.next_obs[truncated_second, 0],
                                  obs[truncated_second] + 10.5)
    plain = ~truncated_first & ~truncated_second
    np.testing.assert_array_equal(batch.next_obs[plain, 0], obs[plain] + 20)
    assert truncated_first.any() and truncated_second.any() and plain.any()


def test_terminated_windows_stop_without_needing_a_final_observation():
    replay = make_replay(capacity=12, num_envs=NUM_ENVS, n_step=3)
    state = _fill(replay, total=12, block=12, terminate_every=5)
    batch = replay.sample(state, jax.random.key(0), 256)
    step = np.asarray(batch.obs[:, 0]).astype(int) // 10
    ends = np.asarray(batch.terminated)
    for k in range(3):  # a termination at step 4 or 9 is flagged at its place in the window
        np.testing.assert_array_equal(ends[:, k], (step + k) % 5 == 4)


def test_vmapped_buffers_are_independent_and_match_single_runs():
    replay = make_replay(capacity=10, num_envs=NUM_ENVS, n_step=1, max_episode_steps=3)
    example = jax.tree.map(lambda x: x[0], _steps(0, 1))
    runs = 4
    blocks = [jax.tree.map(lambda x, r=r: x + 1000 * r if x.dtype == jnp.float32 else x,
                           _steps(0, 8, truncate_every=3)) for r in range(runs)]
    batched = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
    states = jax.vmap(lambda s: replay.add(replay.init(example), s))(batched)
    keys = jax.random.split(jax.random.key(0), runs)
    samples = jax.jit(jax.vmap(lambda s, k: replay.sample(s, k, 16)))(states, keys)
    for r in (0, 3):
        single = replay.add(replay.init(example), blocks[r])
        jax.tree.map(np.testing.assert_array_equal, jax.tree.map(lambda x: x[r], states), single)
        one = replay.sample(single, keys[r], 16)
        jax.tree.map(np.testing.assert_array_equal, jax.tree.map(lambda x: x[r], samples), one)


def test_bytes_and_capacity_errors():
    replay = make_replay(capacity=100, num_envs=2, n_step=1, max_episode_steps=50)
    state = replay.init(jax.tree.map(lambda x: x[0, :2], _steps(0, 1)))
    # obs 100*2*4 + action 100*2*4 + reward 800 + flags 2*200 + final_row 800
    # + final_obs 3*2*4 + final_pos 8 + pos 4 + size 4
    assert nbytes(state) == 800 + 800 + 800 + 400 + 800 + 24 + 8 + 4 + 4
    with pytest.raises(ValueError, match="must exceed n_step"):
        make_replay(capacity=3, num_envs=1, n_step=3)
