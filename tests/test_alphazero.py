"""AlphaZero: seed i of a batch, acting from environment states (legal moves only, batched or
not, on the single-agent view of a board game), bad input, and learning on Catch."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
import purejaxrl_lab as lab
from agents import alphazero as az
from purejaxrl_lab.evaluation import run_episodes

TTT = envs.make("TicTacToe-v0")
# 3 iterations of 4 games x 4 moves, 4 simulations, a small network.
SMALL = az.Config(total_timesteps=48, num_envs=4, num_steps=4, num_simulations=4,
                  eval_simulations=8, buffer_size=64, batch_size=8, gradient_steps=2,
                  hidden_sizes=(16,))


def test_seed_i_of_a_batch_equals_the_single_run():
    train = az.make_train(SMALL, *TTT)
    keys = jnp.stack([jax.random.key(i) for i in range(3)])
    _, batched = jax.jit(jax.vmap(train))(keys)
    _, single = jax.jit(train)(jax.random.key(2))
    for k, v in single.items():
        assert v.shape == (SMALL.num_iterations,)
        np.testing.assert_allclose(batched[k][2], v, rtol=2e-5, atol=1e-5, err_msg=k)
    assert np.all(np.isfinite(batched["loss"]))
    assert np.all(batched["known_targets"] <= 1.0) and batched["known_targets"].max() > 0


def test_random_self_play_moves_are_legal():
    # Every self-play move random (and the first two of each game by the opening rule): each
    # stored move is an empty cell of its position (TicTacToe's planes: the movers' marks).
    config = dataclasses.replace(SMALL, random_opening_moves=2, random_move_probability=1.0)
    final, metrics = jax.jit(az.make_train(config, *TTT))(jax.random.key(0))
    replay, size = final.replay, int(final.replay.size)  # 3 iterations x 4 moves stored
    occupied = np.asarray(replay.obs[:size]).sum(-1).reshape(size, SMALL.num_envs, 9)
    taken = np.take_along_axis(occupied, np.asarray(replay.action[:size])[..., None], -1)
    assert size == 12 and np.all(taken == 0)
    assert np.nansum(metrics["episodes"]) > 0


def test_act_takes_environment_states_and_plays_legal_moves():
    env, params = envs.make("TicTacToe-v0", opponent="random", agent_first=0)
    agent = az.make(SMALL, env, params)
    state = agent.init(jax.random.key(0))
    _, env_states = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(jax.random.key(1), 6), params)
    act = jax.jit(agent.act, static_argnums=3)
    batched = act(state.params, env_states, jax.random.key(2), True)
    assert batched.shape == (6,)
    mask = np.asarray(env_states.legal_action_mask)
    assert all(mask[i, int(a)] for i, a in enumerate(batched))  # the opponent's cell is taken
    one = jax.tree.map(lambda x: x[3], env_states)
    assert int(act(state.params, one, jax.random.key(2), True)) == int(batched[3])
    # The lab's evaluation: the greedy search against the environment's opponent.
    episodes = jax.jit(lambda k: run_episodes(k, agent.act, state.params, env, params, 8,
                                              az.ACT_INPUT, True))(jax.random.key(3))
    assert set(np.unique(np.asarray(episodes.returns))) <= {-1.0, 0.0, 1.0}


def test_bad_input_is_refused_before_compilation():
    with pytest.raises(ValueError, match="max_num_considered_actions=12 is not allowed: must be at "
                                         "most the 9 actions of TicTacToe-v0"):
        lab.run("alphazero", {"max_num_considered_actions": 12}, "TicTacToe-v0")
    with pytest.raises(ValueError, match="buffer_size=100 is not allowed: must hold one"):
        az.Config(buffer_size=100)
    with pytest.raises(ValueError, match="num_simulations=0 is not allowed"):
        az.Config(num_simulations=0)
    with pytest.raises(ValueError, match=r"random_move_probability=1.5 is not allowed: expected a "
                                         r"finite number in \[0.0, 1.0\]"):
        az.Config(random_move_probability=1.5)
    with pytest.raises(ValueError, match="agents for continuous actions"):
        lab.run("alphazero", None, "Pendulum-v1")


def test_learns_catch_network_policy():
    # The preset on Catch-bsuite (12,800 env steps): the network's own greedy policy, without
    # search, catches the ball; untrained it does not (a random policy scores about -0.6).
    env, params = envs.make("Catch-bsuite")
    agent = az.make(az.PRESETS["catch"], env, params)
    final, metrics = jax.jit(az.make_train(az.PRESETS["catch"], env, params))(jax.random.key(0))

    def network_policy(p, obs, key, deterministic):
        logits, _ = agent_network(p, obs)
        return jnp.argmax(logits, -1)

    network = az.PolicyValueNetwork(3, az.PRESETS["catch"].hidden_sizes, "relu", 2)
    agent_network = lambda p, obs: network.apply(p.network, obs)  # noqa: E731
    evaluate = jax.jit(lambda p: run_episodes(jax.random.key(1), network_policy, p, env, params,
                                              100).returns.mean())
    before = float(evaluate(agent.init(jax.random.key(0)).params))
    after = float(evaluate(final.params))
    assert after >= 0.8 and after > before + 0.8, (before, after)
    assert metrics["value_loss"][-1] < 0.2 * metrics["value_loss"][0]
    assert np.nanmean(metrics["episode_return"][-10:]) >= 0.9
