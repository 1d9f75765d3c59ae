"""Recurrent PPO (`ppo.Config(recurrent=True)`): the GRU core, its episode-start resets, the
contract's carry, and a memory task that feed-forward PPO cannot solve."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
import purejaxrl_lab as lab
from agents import ppo
from agents.common.networks import RecurrentActorCritic, ScannedGRU
from purejaxrl_lab import evaluation
from purejaxrl_lab.results import final_scores

# bsuite's MemoryChain with memory_length=5: 6 steps, the context (+-1) in the first two
# observations, reward +1 or -1 at the last step for repeating it. A policy without memory
# cannot do better than chance, a mean return of 0.
MEMORY_CHAIN = envs.make("MemoryChain-bsuite", memory_length=5)
EPISODE_LENGTH = 6
# The preset at 40% of its budget (40 iterations; 8 seeds reach 0.86-0.94 in iterations
# 9-16 and 0.97-1.0 from then on).
FAST = dataclasses.replace(ppo.PRESETS["memory_chain"], total_timesteps=40 * 512)
TINY = ppo.Config(recurrent=True, total_timesteps=4 * 16 * 3, num_envs=4, num_steps=16,
                  update_epochs=2, num_minibatches=2, rnn_hidden_size=8, hidden_sizes=(8,))


def jit(f, runs_once=False, **kwargs):
    """jax.jit with the lab's XLA-CPU options (compiles several times faster)."""
    options = lab.runtime.compiler_options(jax.devices(), runs_once=runs_once)
    return jax.jit(f, compiler_options=options, **kwargs)


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """Recurrent PPO on MemoryChain(5), seeds 0 and 1 in one program, saved."""
    results = lab.run("ppo", FAST, MEMORY_CHAIN, seeds=[0, 1], num_chunks=2, eval_every=2,
                      eval_episodes=50, progress=False)
    return results, results.save(tmp_path_factory.mktemp("rnn") / "memory_chain")


def test_recurrent_ppo_learns_memory_chain_where_feed_forward_stays_at_chance(learned):
    results, _ = learned
    assert np.all(results.final_return > 0.8), results.final_return
    assert np.all(results.metrics["eval_return"][:, -1] > 0.9), results.metrics["eval_return"]
    feed_forward = ppo.make_train(dataclasses.replace(FAST, recurrent=False), *MEMORY_CHAIN)
    _, metrics = jit(jax.vmap(feed_forward))(jnp.stack([jax.random.key(i) for i in range(2)]))
    # About 85 episodes an iteration: the mean of +-1 coin flips over the last 4 iterations
    # has a standard deviation of about 0.05.
    final = final_scores(np.asarray(metrics["episode_return"]), np.asarray(metrics["episodes"]))
    assert np.all(np.abs(final) < 0.25), final


def test_gru_restarts_from_zeros_at_an_episode_start():
    gru = ScannedGRU(8)
    net = RecurrentActorCritic(2, True, (8,), rnn_hidden_size=8)

    @jit
    def outputs(key):
        key_x, key_carry, key_gru, key_net = jax.random.split(key, 4)
        x = jax.random.normal(key_x, (3, 5, 4))  # [B, T, features]
        carry = jax.random.normal(key_carry, (3, 8))
        zero = ScannedGRU.initialize_carry((3,), 8)
        start = jnp.zeros((3, 5), bool).at[:, 2].set(True)
        params = gru.init(key_gru, carry, (x, start))
        _, out = gru.apply(params, carry, (x, start))
        _, fresh = gru.apply(params, zero, (x[:, 2:], start[:, 2:] & False))
        _, no_reset = gru.apply(params, carry, (x, start & False))
        # The whole network: a start at t=0 ignores the carry it is given.
        first = jnp.zeros((3, 5), bool).at[:, 0].set(True)
        obs = x[..., :3]
        net_params = net.init(key_net, carry, obs, first)
        (_, pi_a, v_a), (_, pi_b, v_b) = (net.apply(net_params, c, obs, first) for c in (carry, zero))
        return out[:, 2:], fresh, no_reset[:, 2:], (pi_a.logits, v_a), (pi_b.logits, v_b)

    out, fresh, no_reset, network_a, network_b = outputs(jax.random.key(0))
    np.testing.assert_allclose(out, fresh, rtol=1e-6, atol=1e-6)
    assert not np.allclose(no_reset, fresh, atol=1e-3)  # the carry mattered
    for a, b in zip(network_a, network_b):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_vmapped_seed_equals_single_run_and_episode_starts_follow_auto_reset(learned):
    train = ppo.make_train(TINY, *MEMORY_CHAIN)
    keys = jnp.stack([jax.random.key(i) for i in range(2)])
    batched_states, batched = jit(jax.vmap(train))(keys)
    single_train = jit(train)
    for i in range(2):
        state, single = single_train(keys[i])
        for k in single:
            np.testing.assert_allclose(batched[k][i], single[k], rtol=2e-5, atol=1e-6, err_msg=k)
        for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(batched_states.params)):
            np.testing.assert_allclose(a, b[i], rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(state.rnn_state, batched_states.rnn_state[i], rtol=2e-5,
                                   atol=1e-6)
    # Same-step auto-reset: the observation after a step that ended an episode is an
    # episode's first. MemoryChain's episodes last exactly 6 steps: after 3 * 16 = 48 steps
    # every environment starts one, after 40 * 32 = 1280 (= 6 * 213 + 2) none does.
    final_states = {48: batched_states, 1280: learned[0].final_state}
    for steps, final in final_states.items():
        np.testing.assert_array_equal(final.episode_start, steps % EPISODE_LENGTH == 0)
        np.testing.assert_array_equal(final.episode_start, final.env_state.episode_length == 0)
    assert batched_states.rnn_state.shape == (2, TINY.num_envs, TINY.rnn_hidden_size)


def test_jit_act_on_a_batch_equals_per_element_act(learned):
    results, _ = learned
    agent = ppo.make(FAST, *MEMORY_CHAIN)
    params = jax.tree.map(lambda x: x[0], results.params)
    key_obs, key_carry, key_act = jax.random.split(jax.random.key(1), 3)
    obs = jax.random.normal(key_obs, (5, 3))
    carry = jax.random.normal(key_carry, (5, FAST.rnn_hidden_size))
    act = jit(agent.act, static_argnums=3)
    actions, carries = act(params, obs, key_act, True, carry)
    assert actions.shape == (5,) and carries.shape == (5, FAST.rnn_hidden_size)
    keys = jax.random.split(key_act, 5)
    sampled, _ = jit(jax.vmap(agent.act, (None, 0, 0, None, 0)), static_argnums=3)(
        params, obs, keys, False, carry)
    for i in range(5):
        action, next_carry = act(params, obs[i], key_act, True, carry[i])
        assert action.shape == () and next_carry.shape == (FAST.rnn_hidden_size,)
        assert action == actions[i]
        np.testing.assert_allclose(next_carry, carries[i], rtol=1e-5, atol=1e-6)
        assert act(params, obs[i], keys[i], False, carry[i])[0] == sampled[i]
    # carry=None is an episode's start: the zero state of the batch's shape.
    np.testing.assert_array_equal(act(params, obs, key_act, True)[1],
                                  act(params, obs, key_act, True, agent.init_carry((5,)))[1])


def test_saved_policy_round_trip_and_evaluation_carry_the_memory(learned):
    results, directory = learned
    policy = lab.load_policy(directory, seed=0)
    assert policy.recurrent and not ppo.make(ppo.Config(), *envs.make("CartPole-v1")).init_carry
    # The saved policy acts as the trained one, its carry in and out (None: a first step).
    obs = jnp.array([1.0, 0.0, -1.0])
    from_results = results.policy(0)
    action, carry = policy(obs)
    expected, expected_carry = from_results(obs, carry=from_results.init_carry(()))
    assert action == expected and carry.shape == (FAST.rnn_hidden_size,)
    np.testing.assert_array_equal(carry, expected_carry)
    with pytest.raises(ValueError, match="not recurrent"):
        lab.Policy(params=None, act=None, seed=0, setting={}, agent="ppo", env="x")(obs, carry=carry)
    # Evaluation carries the GRU state through each episode: the policy recalls the context.
    score = lab.evaluate(policy, episodes=100)
    assert score.mean > 0.9, score
    # Without its memory (the GRU restarted at every step) the same policy is at chance.
    forgetful = jit(lambda key, params: evaluation.run_episodes(
        key, lambda p, x, k, d: policy.act(p, x, k, d)[0], params, *MEMORY_CHAIN,
        num_episodes=200))(jax.random.key(0), policy.params)
    assert abs(float(forgetful.returns.mean())) < 0.3, forgetful.returns.mean()
