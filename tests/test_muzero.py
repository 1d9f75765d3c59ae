"""MuZero and the pieces of the search agents' loop: the h transform and categorical heads,
n-step and outcome targets over the trajectory replay (known values), seed i of a batch,
acting from environment states, bad input, and learning Catch."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
import purejaxrl_lab as lab
from agents import muzero as mz
from agents.common import categorical as C
from agents.common import planning as P
from agents.common import search as S
from purejaxrl_lab.evaluation import run_episodes


def test_h_transform_known_values_and_inverse():
    # h(x) = sign(x) (sqrt(|x| + 1) - 1) + 0.001 x:
    #   h(0) = 0; h(3) = (2 - 1) + 0.003 = 1.003; h(-8) = -(3 - 1) - 0.008 = -2.008.
    np.testing.assert_allclose(C.h(jnp.array([0.0, 3.0, -8.0])), [0.0, 1.003, -2.008], rtol=1e-6)
    x = jnp.linspace(-500.0, 500.0, 2001)
    np.testing.assert_allclose(C.h_inverse(C.h(x)), x, rtol=1e-4, atol=1e-3)


def test_two_hot_and_its_scalar():
    # 1.3 on the support {-2, ..., 2}: 0.7 on 1 and 0.3 on 2 (mean 0.7 + 0.6 = 1.3);
    # -2.5 is clipped to -2 (all on -2).
    np.testing.assert_allclose(C.two_hot(jnp.array([1.3, -2.5]), 2),
                               [[0, 0, 0, 0.7, 0.3], [1, 0, 0, 0, 0]], atol=1e-6)
    x = jnp.array([-0.9, 0.0, 0.42, 1.0, 37.0])
    probs = C.scalar_to_probs(x, 10)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(C.logits_to_scalar(jnp.log(probs + 1e-30), 10), x, rtol=1e-4,
                               atol=1e-4)
    # Zero logits (MuZero's initial heads): uniform over a symmetric support, scalar 0.
    assert abs(float(C.logits_to_scalar(jnp.zeros(21), 10))) < 1e-4  # h^-1(0) to rounding


def _window(reward, discount, terminated, truncated=None, filled=None):
    f = lambda x, dt=jnp.float32: jnp.asarray(x, dt)[None]  # noqa: E731
    w = len(reward)
    return (f(reward), f(discount), f(terminated, bool),
            f(truncated if truncated is not None else [False] * w, bool),
            f(filled if filled is not None else [True] * w, bool))


def test_n_step_values_known_values():
    # Single player, gamma 0.5, n = 2, bootstrap values v_j = 10 + j. Moves 0..4 with rewards
    # 1, 2, 3, 4, 5, the game ending at move 2:
    #   z_0 = 1 + 0.5 * 2 + 0.25 * v_2 = 2 + 3 = 5
    #   z_1 = 2 + 0.5 * 3 + 0.5 * 0 * (4 + ...) = 3.5 (the game ended at move 2)
    #   z_2 = 3 (the ending move), z_3 = 4 + 0.5 * 5 + 0.25 * v_5 = 6.5 + 3.75 = 10.25
    r, d, term, trunc, filled = _window([1, 2, 3, 4, 5, 0], [0.5, 0.5, 0, 0.5, 0.5, 0.5],
                                        [0, 0, 1, 0, 0, 0])
    boot = 10.0 + jnp.arange(6.0)[None]
    z, known = P.n_step_values(r, d, term, trunc, filled, boot, 2, 4)
    np.testing.assert_allclose(z[0], [5.0, 3.5, 3.0, 10.25])
    assert known.all()
    # Two players, n = 3: A moves (0), B moves (0), A wins (+1, the game ends).
    #   z_0 = 0 + (-1) 0 + (-1)(-1) 1 = 1 (A's position is won), z_1 = -1 (B's is lost).
    r, d, term, trunc, filled = _window([0, 0, 1, 0, 0], [-1, -1, 0, -1, -1], [0, 0, 1, 0, 0])
    z, known = P.n_step_values(r, d, term, trunc, filled, jnp.zeros((1, 5)), 3, 2)
    np.testing.assert_allclose(z[0], [1.0, -1.0])
    # Unknown: a move past the newest stored one, or a truncation before the end.
    r, d, term, trunc, filled = _window([1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0],
                                        filled=[1, 1, 1, 0])
    _, known = P.n_step_values(r, d, term, trunc, filled, jnp.zeros((1, 4)), 2, 2)
    np.testing.assert_array_equal(known[0], [True, False])  # z_0 bootstraps at v_2 (stored)
    r, d, term, trunc, filled = _window([1] * 5, [1, 0, 1, 1, 1], [0] * 5, [0, 1, 0, 0, 0])
    _, known = P.n_step_values(r, d, term, trunc, filled, jnp.zeros((1, 5)), 2, 3)
    np.testing.assert_array_equal(known[0], [False, False, True])  # cut at move 1


def test_unroll_targets_past_the_end_of_a_game():
    # K = 3 unrolled moves, n = 1, gamma 1, bootstrap values 10 + j. Window of 5 moves with
    # rewards 1..5. (a) The game terminates at move 1: position 0's value 1 + v_1 = 12 and
    # reward 1; position 1's value 2 (the ending move); positions 2, 3 are absorbing: value 0
    # and reward 0, known, without a policy target.
    boot = 10.0 + jnp.arange(5.0)[None]
    policy = jnp.ones((1, 5, 2)) / 2
    r, d, term, trunc, filled = _window([1, 2, 3, 4, 5], [1, 0, 1, 1, 1], [0, 1, 0, 0, 0])
    pol, pol_w, value, value_k, reward, reward_k = mz.unroll_targets(
        r, d, term, trunc, filled, boot, policy, 3, 1)
    assert pol.shape == (1, 4, 2)
    np.testing.assert_allclose(value[0], [12.0, 2.0, 0.0, 0.0])
    np.testing.assert_allclose(reward[0], [1.0, 2.0, 0.0])
    np.testing.assert_array_equal(pol_w[0], [True, True, False, False])
    assert value_k.all() and reward_k.all()
    # (b) Truncated at move 1 instead: positions 2, 3 are unknown (not absorbing), and so is
    # position 1's value (its game was cut); its reward is known.
    r, d, term, trunc, filled = _window([1, 2, 3, 4, 5], [1, 0, 1, 1, 1], [0] * 5,
                                        [0, 1, 0, 0, 0])
    _, pol_w, _, value_k, _, reward_k = mz.unroll_targets(r, d, term, trunc, filled, boot,
                                                          policy, 3, 1)
    np.testing.assert_array_equal(value_k[0], [True, False, False, False])
    np.testing.assert_array_equal(reward_k[0], [True, True, False])
    np.testing.assert_array_equal(pol_w[0], [True, True, False, False])
    # (c) Moves past the newest stored one (here from move 2) are unknown whatever their
    # (stale) flags say: a stored termination in an unfilled slot does not end the game.
    r, d, term, trunc, filled = _window([1, 2, 3, 4, 5], [1, 1, 0, 1, 1], [0, 0, 1, 0, 0],
                                        filled=[1, 1, 0, 0, 0])
    _, pol_w, _, value_k, _, reward_k = mz.unroll_targets(r, d, term, trunc, filled, boot,
                                                          policy, 3, 1)
    np.testing.assert_array_equal(value_k[0], [True, False, False, False])
    np.testing.assert_array_equal(reward_k[0], [True, True, False])
    np.testing.assert_array_equal(pol_w[0], [True, True, False, False])


def test_outcome_values_over_the_replay_ring():
    # One game slot, a ring of 4 moves; 6 single-player moves (gamma 1) written, so moves 2..5
    # remain, stored in slots 2, 3, 0, 1. Rewards 0, 0, 1, 0, 0, 2; episodes end at moves 2
    # and 5: value of move 2 = 1, move 3 = 0 + 0 + 2 = 2, move 4 = 2, move 5 = 2.
    traj = P.empty_trajectories(4, 1, (1,), 2)
    ended = jnp.array([0, 0, 1, 0, 0, 1], bool)[:, None]
    moves = {"obs": jnp.zeros((6, 1, 1)), "action": jnp.zeros((6, 1), jnp.int32),
             "reward": jnp.array([0, 0, 1, 0, 0, 2.0])[:, None],
             "discount": S.step_discount(ended, False, 1.0), "terminated": ended,
             "truncated": jnp.zeros((6, 1), bool), "policy": jnp.zeros((6, 1, 2))}
    traj = P.add_moves(P.add_moves(traj, jax.tree.map(lambda x: x[:3], moves)),
                       jax.tree.map(lambda x: x[3:], moves))
    assert int(traj.pos) == 2 and int(traj.size) == 4
    value, known = P.outcome_values(traj)
    np.testing.assert_allclose(value[:, 0], [2.0, 2.0, 1.0, 2.0])  # slots 0..3: moves 4, 5, 2, 3
    assert known.all()
    # A window from the oldest move: slots 2, 3, 0, 1 in time order.
    w = P.sample_windows(traj, jax.random.key(0), 64, 4)
    first = np.asarray(w.slots[:, 0])
    np.testing.assert_array_equal(np.asarray(w.slots), (first[:, None] + np.arange(4)) % 4)
    ages = (first - 2) % 4
    np.testing.assert_array_equal(np.asarray(w.filled), (ages[:, None] + np.arange(4)) < 4)


CATCH = envs.make("Catch-bsuite")
SMALL = mz.Config(total_timesteps=48, num_envs=4, num_steps=4, num_simulations=4,
                  eval_simulations=4, buffer_size=64, batch_size=8, gradient_steps=2,
                  unroll_steps=2, td_steps=3, hidden_sizes=(16,), embedding_size=8,
                  support_size=3)


def test_seed_i_of_a_batch_equals_the_single_run():
    train = mz.make_train(SMALL, *CATCH)
    keys = jnp.stack([jax.random.key(i) for i in range(3)])
    _, batched = jax.jit(jax.vmap(train))(keys)
    _, single = jax.jit(train)(jax.random.key(1))
    # The same moves (episode counts and returns agree exactly); the losses to float32 rounding,
    # which the batched products round differently and the latent's min-max scaling amplifies.
    for k, v in single.items():
        assert v.shape == (SMALL.num_iterations,)
        exact = k in ("episodes", "episode_return", "episode_length", "known_targets")
        np.testing.assert_allclose(batched[k][1], v, rtol=0 if exact else 1e-3,
                                   atol=0 if exact else 1e-5, err_msg=k)
    assert np.all(np.isfinite(batched["loss"])) and np.all(batched["reward_loss"] > 0)


def test_act_plays_legal_moves_on_a_board_game():
    env, params = envs.make("TicTacToe-v0", opponent="random", agent_first=0)
    agent = mz.make(SMALL, env, params)
    state = agent.init(jax.random.key(0))
    _, env_states = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(jax.random.key(1), 6), params)
    actions = jax.jit(agent.act, static_argnums=3)(state.params, env_states, jax.random.key(2),
                                                   True)
    mask = np.asarray(env_states.legal_action_mask)
    assert all(mask[i, int(a)] for i, a in enumerate(actions))


def test_bad_input_is_refused_before_compilation():
    with pytest.raises(ValueError, match=r"buffer_size=64 is not allowed: must keep a window of "
                                         r"unroll_steps \+ td_steps \+ 1 = 20 moves per game"):
        mz.Config(buffer_size=64, num_envs=4, num_steps=4, unroll_steps=9)
    with pytest.raises(ValueError, match="support_size=0 is not allowed"):
        mz.Config(support_size=0)
    with pytest.raises(ValueError, match="max_num_considered_actions=4 is not allowed: must be at "
                                         "most the 3 actions of Catch-bsuite"):
        lab.run("muzero", {"max_num_considered_actions": 4}, "Catch-bsuite")
    with pytest.raises(ValueError, match=r"AlphaZero plans with the environment's own step, and "
                                         r"Asterix-MinAtar's step is random.*MuZero"):
        lab.run("alphazero", None, "Asterix-MinAtar")


def test_learns_catch():
    # The catch preset cut to 12,800 env steps (50 iterations of 8 games x 20 moves): the
    # greedy search through the learned model catches the ball; untrained it scores about
    # a random policy's -0.6 (10 of 10 seeds reach 1.0 by 12,800 steps, benchmarks/README.md).
    config = dataclasses.replace(mz.PRESETS["catch"], total_timesteps=12_800)
    env, params = CATCH
    agent = mz.make(config, env, params)
    final, metrics = jax.jit(mz.make_train(config, env, params))(jax.random.key(0))
    evaluate = jax.jit(lambda p: run_episodes(jax.random.key(1), agent.act, p, env, params, 50,
                                              mz.ACT_INPUT, True).returns.mean())
    before = float(evaluate(agent.init(jax.random.key(0)).params))
    after = float(evaluate(final.params))
    assert after >= 0.9 and after > before + 0.8, (before, after)
    assert metrics["reward_loss"][-1] < 0.5 * metrics["reward_loss"][0]


def test_lab_evaluates_and_load_policy_serves_it(tmp_path):
    # Through the lab: evaluations between chunks (greedy search from environment states),
    # saved results, and `load_policy` acting as the trained state's params do.
    results = lab.run("muzero", SMALL, "Catch-bsuite", seeds=2, num_chunks=3, eval_every=1,
                      eval_episodes=4, progress=False)
    ev = np.asarray(results.metrics["eval_return"])
    assert ev.shape == (2, 3) and set(np.unique(ev * 4)) <= set(range(-4, 5))
    results.save(tmp_path / "run")
    policy = lab.load_policy(tmp_path / "run", seed=1)
    assert policy.act_input == "env_state" and policy.config == SMALL
    env, params = CATCH
    _, states = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.key(0), 5),
                                                        params)
    agent = mz.make(SMALL, env, params)
    trained = jax.tree.map(lambda x: x[1], results.final_state.params)
    np.testing.assert_array_equal(policy(states),
                                  agent.act(trained, states, jax.random.key(0), True))
    assert lab.evaluate(policy, episodes=4).returns.shape == (4,)
