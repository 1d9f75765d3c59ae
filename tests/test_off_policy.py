"""DQN, PQN and SAC: determinism, seed i of a batch, replay and target semantics, the lab
(sweeps, resume with a buffer in the state), and small learning thresholds."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
import purejaxrl_lab as lab
import purejaxrl_lab.plan  # noqa: F401 - lab.plan below
from agents import dqn, pqn, sac
from agents.common import polyak
from tests.conftest import assert_same
from tests.test_sweep import CountCompilations
from tests.test_toy_agent import CrashAfter

CARTPOLE = envs.make("CartPole-v1")
PENDULUM = envs.make("Pendulum-v1")

# Tiny configurations: 25 iterations each, networks of 32 units.
DQN_SMALL = dqn.Config(total_timesteps=500, num_envs=4, num_steps=5, buffer_size=200, batch_size=16,
                       learning_starts=100, target_update_interval=60, epsilon_decay_steps=300,
                       hidden_sizes=(32, 32))
PQN_SMALL = pqn.Config(total_timesteps=4 * 8 * 25, num_envs=4, num_steps=8, update_epochs=1,
                       num_minibatches=2, epsilon_decay_steps=400, hidden_sizes=(32, 32))
SAC_SMALL = sac.Config(total_timesteps=50, num_envs=2, buffer_size=60, batch_size=8,
                       learning_starts=20, hidden_sizes=(32, 32))
SMALL = {"dqn": (dqn, DQN_SMALL, CARTPOLE), "pqn": (pqn, PQN_SMALL, CARTPOLE),
         "sac": (sac, SAC_SMALL, PENDULUM)}


@pytest.fixture(scope="module", params=sorted(SMALL))
def trained(request):
    """(name, module, config, env, jitted single train, metrics of seeds 0..2 vmapped)."""
    module, config, env = SMALL[request.param]
    train = module.make_train(config, *env)
    keys = jnp.stack([jax.random.key(i) for i in range(3)])
    _, batched = jax.jit(jax.vmap(train))(keys)
    return request.param, module, config, env, jax.jit(train), batched


def test_seed_i_of_a_batch_equals_the_single_run(trained):
    name, _, config, _, train, batched = trained
    for i in (0, 2):
        _, single = train(jax.random.key(i))
        for k, v in single.items():
            assert v.shape == (config.num_iterations,)
            np.testing.assert_allclose(batched[k][i], v, rtol=2e-5, atol=1e-5, err_msg=f"{name} {k}")
    _, again = train(jax.random.key(2))
    jax.tree.map(np.testing.assert_array_equal, again, single)  # same key, same numbers
    loss = batched["critic_loss" if name == "sac" else "loss"][:, -1]  # learning by then
    assert np.all(np.isfinite(loss)) and loss[0] != loss[1]


def test_acting_from_params_alone(trained):
    name, module, config, (env, env_params), _, _ = trained
    agent = module.make(config, env, env_params)
    state = agent.init(jax.random.key(0))
    obs, _ = env.reset(jax.random.key(1), env_params)
    batch = jnp.stack([obs, obs * 0.5])
    action = jax.jit(agent.act, static_argnums=3)(state.params, batch, jax.random.key(2), True)
    space = env.action_space(env_params)
    assert action.shape == (2, *space.shape)
    for i in range(2):
        one = agent.act(state.params, batch[i], jax.random.key(2), True)
        np.testing.assert_allclose(one, action[i], rtol=1e-6)
    if name == "sac":  # rescaled into the action space's bounds
        sample = agent.act(state.params, jnp.tile(obs, (256, 1)), jax.random.key(3))
        assert float(sample.min()) >= space.low and float(sample.max()) <= space.high
        assert float(sample.max() - sample.min()) > 1.0


def test_dqn_learning_starts_and_target_updates():
    # 20 steps per iteration; learning from step 100 (iteration 5 ends at 100); target steps
    # when a multiple of 60 steps is crossed with learning on: after iterations 6 (120), 9 (180)
    agent = dqn.make(DQN_SMALL, *CARTPOLE)
    update = jax.jit(agent.update)
    state = agent.init(jax.random.key(0))
    first = state.params.network
    for i in range(1, 12):
        before = state.target_network
        state, metrics = update(state)
        steps = 20 * i
        assert float(metrics["learning"]) == (steps >= 100)
        same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
        if steps < 100:
            assert same(state.params.network, first) and np.isnan(float(metrics["loss"]))
        due = steps >= 100 and steps // 60 > (steps - 20) // 60
        if due:  # target <- 0.2 * online + 0.8 * target (the default tau)
            expected = polyak(state.params.network, before, DQN_SMALL.tau)
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                         state.target_network, expected)
        else:
            assert same(state.target_network, before), i
        assert int(state.replay.size) == min(5 * i, DQN_SMALL.capacity)


def test_dqn_variants_and_the_reference_preset_run():
    variant = dataclasses.replace(DQN_SMALL, dueling=True, huber=True, n_step=3, double_q=False,
                                  tau=0.5, target_update_interval=20)
    _, metrics = jax.jit(dqn.make_train(variant, *CARTPOLE))(jax.random.key(0))
    assert np.isfinite(metrics["loss"][-1]) and metrics["learning"][-1] == 1
    ref = dqn.PRESETS["reference"]
    assert (ref.num_envs, ref.buffer_size, ref.batch_size, ref.target_update_interval,
            ref.learning_starts, ref.epsilon_decay_steps, ref.double_q) == (
        10, 10_000, 128, 500, 10_000, 250_000, False)
    # one gradient step per 10 environment steps, as the reference's training interval
    assert ref.units_per_iteration == 10 and ref.gradient_steps == 1


def test_pqn_targets_use_the_final_observation():
    # PQN's Q(lambda) targets bootstrap from the observation each step really reached.
    agent = pqn.make(PQN_SMALL, *CARTPOLE)
    state = agent.init(jax.random.key(0))
    _, metrics = jax.jit(agent.update)(state)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["epsilon"]) == 1.0


def test_minatar_grids_go_through_the_conv_torso_in_dqn_and_pqn():
    """PQN's MinAtar preset (scaled down: 4 environments, 8 steps, 3 iterations) and DQN on
    Breakout-MinAtar: a 3x3 convolution of 16 channels reads the [10, 10, 4] grids, learning
    moves its kernel, and greedy actions come from the params alone."""
    env = envs.make("Breakout-MinAtar")
    small_pqn = dataclasses.replace(pqn.PRESETS["minatar"], total_timesteps=3 * 32, num_envs=4,
                                    num_steps=8, num_minibatches=2, epsilon_decay_steps=64)
    small_dqn = dataclasses.replace(DQN_SMALL, total_timesteps=60, learning_starts=20)
    for module, config in ((pqn, small_pqn), (dqn, small_dqn)):
        agent = module.make(config, *env)
        state = agent.init(jax.random.key(0))
        assert state.obs.shape == (config.num_envs, 10, 10, 4)
        conv = lambda params: params.network["params"]["Encoder_0"]["Conv_0"]["kernel"]  # noqa: E731
        assert conv(state.params).shape == (3, 3, 4, 16)
        final, metrics = jax.jit(module.make_train(config, *env))(jax.random.key(0))
        assert np.all(np.isfinite(metrics["loss"][-1])), module.__name__
        assert not np.array_equal(conv(final.params), conv(state.params)), module.__name__
        action = agent.act(final.params, state.obs, jax.random.key(1), True)
        assert action.shape == (config.num_envs,) and int(action.max()) < 3


def test_sac_temperature_moves_towards_the_target_entropy():
    config = dataclasses.replace(SAC_SMALL, total_timesteps=200, learning_starts=20)
    _, metrics = jax.jit(sac.make_train(config, *PENDULUM))(jax.random.key(0))
    # the initial policy's entropy is above the target -1, so alpha falls from 1
    assert float(metrics["alpha"][-1]) < 0.99
    fixed = dataclasses.replace(config, autotune_alpha=False, init_alpha=0.3)
    _, metrics = jax.jit(sac.make_train(fixed, *PENDULUM))(jax.random.key(0))
    np.testing.assert_allclose(metrics["alpha"], 0.3, rtol=1e-6)


# --------------------------------------------------------------------------- the lab


def test_a_replay_sweep_compiles_once_and_resumes_bit_identically(tmp_path):
    grid = {"learning_rate": [1e-3, 3e-4], "epsilon_end": [0.05, 0.1]}
    with CountCompilations() as counted:
        swept = lab.sweep("dqn", DQN_SMALL, "CartPole-v1", grid=grid, seeds=2, num_chunks=5,
                          progress=False)
    # init, evaluation and one chunk program, each compiled once for 4 settings x 2 seeds
    assert counted.count + swept.cache_hits == 3 or swept.compilations + swept.cache_hits == 3
    assert swept.metrics["loss"].shape == (4, 2, DQN_SMALL.num_iterations)
    assert swept.state_bytes > DQN_SMALL.buffer_size * 4 * 4  # the buffer is in the state

    d = tmp_path / "ckpt"
    whole = lab.run("dqn", DQN_SMALL, "CartPole-v1", seeds=2, num_chunks=5, progress=False)
    with pytest.raises(RuntimeError, match="crash"):
        lab.run("dqn", DQN_SMALL, "CartPole-v1", seeds=2, num_chunks=5, progress=False,
                checkpoint_dir=d, checkpoint_every=1, loggers=[CrashAfter(12)])
    resumed = lab.run("dqn", DQN_SMALL, "CartPole-v1", seeds=2, num_chunks=5, progress=False,
                      resume=d)
    assert resumed.resumed_from and resumed.resumed_from > 0
    assert_same(resumed, whole)


def test_off_policy_bad_input_is_refused_before_compilation():
    cases = [
        ("dqn", None, "Pendulum-v1", r"agent dqn acts in discrete action spaces.*agents for "
                                     r"continuous actions: ppo, sac"),
        ("sac", None, "CartPole-v1", r"agent sac acts in continuous.*discrete actions: alphazero, dqn, muzero, ppo, pqn"),
        ("pqn", None, "Pendulum-v1", r"agent pqn acts in discrete"),
        ("dqn", {"buffer_size": 100}, "CartPole-v1", r"buffer_size=100.*at least one batch"),
        ("dqn", {"learning_starts": 600_000}, "CartPole-v1", r"learning_starts=600000.*below total"),
        ("dqn", {"tau": 0.0}, "CartPole-v1", r"tau=0.0.*\(0.0, 1.0\]"),
        ("dqn", {"epsilon_start": 1.5}, "CartPole-v1", r"epsilon_start=1.5.*\[0.0, 1.0\]"),
        ("pqn", {"epsilon_end": -0.1}, "CartPole-v1", r"epsilon_end=-0.1"),
        ("dqn", {"n_step": 5000}, "CartPole-v1", r"n_step=5000.*buffer's steps per environment"),
        ("sac", {"tau": 2.0}, "Pendulum-v1", r"tau=2.0"),
        ("sac", {"buffer_size": 10**10}, "Pendulum-v1", r"run\(s\) of .* GiB each .* in "
                                                          r"state.replay.*smaller buffers"),
    ]
    for agent, config, env, message in cases:
        with pytest.raises(ValueError, match=message):
            lab.plan.prepare(agent, config, env)


def test_memory_check_uses_the_device_limit():
    plan = lab.plan.prepare("dqn", {"buffer_size": 100_000}, "CartPole-v1")
    abstract = jax.eval_shape(plan.agent.init, jax.random.key(0))
    per_run = lab.plan.state_nbytes(abstract)
    gpu = type("Device", (), {"platform": "gpu", "process_index": 0})()
    # 8 runs over 2 accelerators: 4 runs each must fit one device's memory
    lab.plan.check_memory(abstract, 8, [gpu, gpu], limit=4 * per_run)
    with pytest.raises(ValueError, match=r"4 run\(s\) of .* memory gpu reports free"):
        lab.plan.check_memory(abstract, 8, [gpu, gpu], limit=4 * per_run - 1)


# --------------------------------------------------------------------------- learning


def _mean_final_eval(agent, config, env, seeds):
    r = lab.run(agent, config, env, seeds=seeds, progress=False, eval_episodes=5)
    return float(np.mean(r.metrics["eval_return"][:, -1])), r


def test_dqn_learns_cartpole_small_budget():
    config = dataclasses.replace(dqn.PRESETS["cartpole"], total_timesteps=30_000,
                                 learning_starts=1_000, epsilon_decay_steps=10_000,
                                 learning_rate=1e-3, target_update_interval=200)
    score, _ = _mean_final_eval("dqn", config, "CartPole-v1", 2)
    assert score > 150, score  # a random policy scores about 22


def test_pqn_learns_cartpole_small_budget():
    config = dataclasses.replace(pqn.PRESETS["cartpole"], total_timesteps=60_000,
                                 epsilon_decay_steps=20_000, hidden_sizes=(64, 64),
                                 learning_rate=5e-4)
    score, _ = _mean_final_eval("pqn", config, "CartPole-v1", 2)
    assert score > 150, score


def test_sac_improves_on_pendulum():
    config = dataclasses.replace(sac.PRESETS["pendulum"], total_timesteps=4_000,
                                 hidden_sizes=(64, 64))
    score, r = _mean_final_eval("sac", config, "Pendulum-v1", 2)
    returns = r.metrics["episode_return"]  # one episode ends every 200 steps
    first, last = np.nanmean(returns[:, :1000]), np.nanmean(returns[:, -1000:])
    assert last > first + 300 and score > -700, (first, last, score)  # random play: about -1200
