import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents import ppo
from tests.conftest import SMALL

CARTPOLE = envs.make("CartPole-v1")


@pytest.fixture(scope="module")
def small_train():
    return jax.jit(ppo.make_train(SMALL, *CARTPOLE))


def test_same_key_same_metrics(small_train):
    _, m1 = small_train(jax.random.key(3))
    _, m2 = small_train(jax.random.key(3))
    _, m3 = small_train(jax.random.key(4))
    for k in m1:
        np.testing.assert_array_equal(m1[k], m2[k])
    assert not np.array_equal(m1["loss"], m3["loss"])
    assert m1["loss"].shape == (SMALL.num_iterations,)


def test_vmapped_seed_equals_single_run(small_train):
    train = ppo.make_train(SMALL, *CARTPOLE)
    keys = jnp.stack([jax.random.key(i) for i in range(3)])
    _, batched = jax.jit(jax.vmap(train))(keys)
    for i in range(3):
        _, single = small_train(jax.random.key(i))
        for k in single:
            np.testing.assert_allclose(batched[k][i], single[k], rtol=2e-5, atol=1e-6, err_msg=k)


def test_jit_and_eager_update_agree():
    agent = ppo.make(SMALL, *CARTPOLE)
    state = agent.init(jax.random.key(0))
    s_eager, m_eager = agent.update(state)
    s_jit, m_jit = jax.jit(agent.update)(state)
    for k in m_eager:
        np.testing.assert_allclose(m_eager[k], m_jit[k], rtol=1e-4, atol=1e-6, err_msg=k)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 s_eager.params.network, s_jit.params.network)


def test_no_recompilation_on_second_call(small_train):
    small_train(jax.random.key(0))
    before = small_train._cache_size()
    small_train(jax.random.key(1))
    assert small_train._cache_size() == before


def test_hyperparameters_are_state_arrays_and_vmap_in_one_program():
    agent = ppo.make(SMALL, *CARTPOLE)
    state = agent.init(jax.random.key(0))
    assert isinstance(state.hparams.learning_rate, jax.Array) and state.hparams.learning_rate.shape == ()
    states = jax.vmap(lambda lr: state.replace(hparams=state.hparams.replace(learning_rate=lr)))(
        jnp.array([1e-4, 1e-2]))
    new, metrics = jax.jit(jax.vmap(agent.update))(states)
    np.testing.assert_allclose(metrics["learning_rate"], [1e-4, 1e-2], rtol=1e-6)  # iteration 0: no annealing yet
    a, b = (jax.tree.map(lambda x: x[i], new.params.network) for i in range(2))
    assert not np.allclose(jax.tree.leaves(a)[0], jax.tree.leaves(b)[0])


def test_act_uses_params_alone():
    env, params = envs.make("Pendulum-v1")
    config = dataclasses.replace(ppo.PRESETS["pendulum"], total_timesteps=16 * 128, normalize_obs=True)
    agent = ppo.make(config, env, params)
    state = agent.init(jax.random.key(0))
    stats = state.params.obs_stats
    assert stats is not None
    obs = jnp.array([1.0, 0.0, 0.5])
    a_det = agent.act(state.params, obs, jax.random.key(1), deterministic=True)
    assert a_det.shape == (1,)
    np.testing.assert_array_equal(a_det, agent.act(state.params, obs, jax.random.key(2), deterministic=True))
    batch = agent.act(state.params, jnp.stack([obs] * 5), jax.random.key(1))
    assert batch.shape == (5, 1) and np.all(np.abs(batch) <= 2.0)
    # act normalises raw observations with the statistics in params: the greedy action is the
    # network's mean at (obs - mean) / sqrt(var + 1e-8), clipped to [-10, 10] and to [-2, 2].
    normalised = np.clip((np.asarray(obs) - stats.mean) / np.sqrt(stats.var + 1e-8), -10, 10)
    pi = agent_network(config, 1).apply(state.params.network, normalised, method="policy")
    np.testing.assert_allclose(a_det, np.clip(pi.mode(), -2.0, 2.0), rtol=1e-5, atol=1e-6)
    shifted = state.params.replace(obs_stats=stats.replace(mean=stats.mean + 1.0))
    assert not np.allclose(agent.act(shifted, obs, jax.random.key(1), True), a_det)


def agent_network(config, action_dim):
    from agents.common import ActorCritic

    return ActorCritic(action_dim, False, config.hidden_sizes, config.activation, config.log_std_init)


def test_ppo_learns_cartpole_small_budget():
    config = ppo.Config(total_timesteps=100_352)
    _, metrics = jax.jit(ppo.make_train(config, *CARTPOLE))(jax.random.key(0))
    ret = np.asarray(metrics["episode_return"])
    # A random policy scores about 22. Threshold well below what 1e5 steps reaches (~200).
    assert np.nanmean(ret[-20:]) > 100, np.nanmean(ret[-20:])


def test_continuous_ppo_improves_on_pendulum():
    env, params = envs.make("Pendulum-v1")
    config = dataclasses.replace(ppo.PRESETS["pendulum"], total_timesteps=150 * 2048)
    _, metrics = jax.jit(ppo.make_train(config, env, params))(jax.random.key(0))
    ret = np.asarray(metrics["episode_return"])
    first, last = np.nanmean(ret[:10]), np.nanmean(ret[-10:])
    # Random actions score about -1200; learning lifts the return by hundreds.
    assert last > first + 300, (first, last)


def test_image_observations_go_through_a_conv_torso():
    """MinAtar's [10, 10, C] grids keep their shape: a 3x3 convolution (16 channels) starts
    the actor and the critic; `act` takes raw observations, batched or not."""
    env, env_params = envs.make("Breakout-MinAtar")
    agent = ppo.make(SMALL, env, env_params)
    state = jax.jit(agent.init, compiler_options=lab_compiler_options(runs_once=True))(
        jax.random.key(0))
    assert state.obs.shape == (SMALL.num_envs, 10, 10, 4)
    net = state.params.network["params"]
    for branch in ("actor", "critic"):
        assert net[branch]["Conv_0"]["kernel"].shape == (3, 3, 4, 16)
        assert net[branch]["Dense_0"]["kernel"].shape == (8 * 8 * 16, SMALL.hidden_sizes[0])
    new, metrics = jax.jit(agent.update, compiler_options=lab_compiler_options())(state)
    for k in ("loss", "value_loss", "entropy", "approx_kl"):
        assert np.isfinite(metrics[k]), k
    assert not np.array_equal(new.params.network["params"]["actor"]["Conv_0"]["kernel"],
                              net["actor"]["Conv_0"]["kernel"])
    obs = new.obs  # [num_envs, 10, 10, 4]
    batched = agent.act(new.params, obs, jax.random.key(1), deterministic=True)
    assert batched.shape == (SMALL.num_envs,)
    one = agent.act(new.params, obs[1], jax.random.key(1), deterministic=True)
    assert one.shape == () and one == batched[1]
    assert agent.act(new.params, obs.reshape(2, 2, 10, 10, 4), jax.random.key(1)).shape == (2, 2)


def lab_compiler_options(runs_once=False):
    """The lab's XLA-CPU options (its programs compile several times faster)."""
    from purejaxrl_lab import runtime

    return runtime.compiler_options(jax.devices(), runs_once=runs_once)
