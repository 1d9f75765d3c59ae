"""Board games from pgx (envs/board_games.py): the adapter against pgx itself, illegal moves,
the single-agent view and its opponents (random, perfect TicTacToe play, MCTS)."""

import jax
import jax.numpy as jnp
import numpy as np
import pgx
import pytest

import envs
from envs import board_games


def _random_games(env_id, n, moves):
    """n random games of `moves` moves through our two-player env and through pgx directly,
    with the same keys and actions: (ours, pgx's) stacked over moves."""
    env, params = envs.make(env_id)
    game = pgx.make(board_games.GAMES[env_id][0])

    def run(key):
        key_init, key = jax.random.split(key)
        _, state = env.reset(key_init, params)
        direct = game.init(key_init)  # gymnax's reset passes its key on

        def move(carry, key):
            state, direct = carry
            key_action, key_step = jax.random.split(key)
            action = board_games.random_move(key_action, state.game)
            _, state, reward, term, trunc, info = env.step(key_step, state, action, params)
            direct = game.step(direct, action, jax.random.split(key_step)[0])
            ours = (state.game.legal_action_mask, state.current_player, reward, term, info["rewards"])
            theirs = (direct.legal_action_mask, direct.current_player, direct.terminated)
            # pgx keeps a finished game finished; gymnax's step resets ours with the second
            # half of its key: restart pgx's game the same way
            direct = jax.lax.cond(direct.terminated,
                                  lambda: game.init(jax.random.split(key_step)[1]),
                                  lambda: direct)
            return (state, direct), (ours, theirs)

        return jax.lax.scan(move, (state, direct), jax.random.split(key, moves))[1]

    return jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(0), n))


@pytest.mark.parametrize("env_id", ["TicTacToe-v0", "ConnectFour-v0"])
def test_two_player_game_matches_pgx(env_id):
    (mask, player, reward, term, rewards), (mask_pgx, player_pgx, term_pgx) = _random_games(
        env_id, 16, 60)
    np.testing.assert_array_equal(term, term_pgx)
    assert term.sum() >= 16  # several games ended and restarted in each row
    live = ~np.asarray(term)  # after a game's end ours has reset and pgx holds the end state
    np.testing.assert_array_equal(np.asarray(mask)[live], np.asarray(mask_pgx)[live])
    np.testing.assert_array_equal(np.asarray(player)[live], np.asarray(player_pgx)[live])
    # The reward is the mover's: +1 for a winning move, never -1 for a legal move.
    ended = np.asarray(term)
    assert set(np.unique(np.asarray(reward)[ended])) <= {0.0, 1.0}
    np.testing.assert_array_equal(np.asarray(reward)[~ended], 0.0)
    np.testing.assert_array_equal(np.asarray(rewards).sum(-1), 0.0)  # zero-sum


def test_illegal_move_loses_at_once():
    env, params = envs.make("TicTacToe-v0")
    _, state = env.reset(jax.random.key(0), params)
    mover = int(state.current_player)
    _, state, _, term, _, info = env.step(jax.random.key(1), state, 4, params)
    assert not term and not state.legal_action_mask[4]
    _, after, reward, term, trunc, info = env.step(jax.random.key(2), state, 4, params)  # taken
    assert bool(term) and not bool(trunc) and float(reward) == -1.0
    assert info["rewards"][1 - mover] == -1.0 and info["rewards"][mover] == 1.0
    # single-agent view: the agent's illegal move is its loss, the episode ends
    env, params = envs.make("TicTacToe-v0", opponent="random", agent_first=1)
    _, state = env.reset(jax.random.key(3), params)
    _, state, reward, term, _, _ = env.step(jax.random.key(4), state, 0, params)
    occupied = int(jnp.argmin(state.legal_action_mask))  # the agent's or the opponent's mark
    _, _, reward, term, _, _ = env.step(jax.random.key(5), state, occupied, params)
    assert bool(term) and float(reward) == -1.0


def _episodes(env_id, n, agent_policy, **options):
    """Returns of n episodes of the single-agent view, the agent playing `agent_policy`."""
    env, params = envs.make(env_id, **options)

    def episode(key):
        key_reset, key = jax.random.split(key)
        _, state = env.reset(key_reset, params)

        def move(carry):
            state, key, _, ret, first = carry
            key, key_action, key_step = jax.random.split(key, 3)
            action = agent_policy(key_action, state.game)
            _, state, reward, term, trunc, _ = env.step(key_step, state, action, params)
            return state, key, term | trunc, ret + reward, first

        agent_first = state.time == 0  # the opponent has not moved yet
        carry = (state, key, jnp.bool_(False), jnp.float32(0.0), agent_first)
        _, _, _, ret, first = jax.lax.while_loop(lambda c: ~c[2], move, carry)
        return ret, first

    return jax.jit(jax.vmap(episode))(jax.random.split(jax.random.key(0), n))


def test_perfect_tictactoe_never_loses():
    returns, first = _episodes("TicTacToe-v0", 600, board_games.random_move, opponent="perfect")
    returns, first = np.asarray(returns), np.asarray(first)
    assert set(np.unique(returns)) <= {-1.0, 0.0}  # the random agent never wins
    assert (returns == -1).mean() > 0.75
    assert 0.4 < first.mean() < 0.6  # the agent moves first in about half the episodes
    # perfect against perfect: always a draw, whoever starts
    returns, _ = _episodes("TicTacToe-v0", 100, board_games.perfect_tictactoe_move,
                           opponent="perfect")
    np.testing.assert_array_equal(returns, 0.0)


def test_tictactoe_values_known_positions():
    table = board_games.tictactoe_values()
    powers = 3 ** np.arange(9)
    assert (table > -2).any(axis=1).sum() == 4520  # the live positions of TicTacToe
    np.testing.assert_array_equal(table[0], 0.0)  # empty board: every first move draws
    # The player to move (1) holds cells 0 and 1, the opponent (2) 3 and 4: cell 2 wins now
    # (+1); 6, 7 or 8 lets the opponent complete 3-4-5 (-1).
    board = np.array([1, 1, 0, 2, 2, 0, 0, 0, 0])
    q = table[int(board @ powers)]
    assert q[2] == 1.0 and q[6] == -1.0 and q[7] == -1.0 and q[8] == -1.0
    assert q[0] == -2.0 and q[3] == -2.0  # occupied


def test_mcts_opponent_beats_random_play():
    returns, _ = _episodes("TicTacToe-v0", 48, board_games.random_move, opponent="mcts",
                           opponent_simulations=32)
    returns = np.asarray(returns)
    losses, wins = (returns == -1).mean(), (returns == 1).mean()
    assert losses > 0.5 and losses > 3 * wins, (losses, wins)


def test_board_game_options_and_bad_input():
    env, params = envs.make("ConnectFour-v0", opponent="random", agent_first=0)
    assert params.opponent == "random" and params.agent_first == 0
    assert env.action_space(params).n == 7
    assert env.observation_space(params).shape == (6, 7, 2)
    obs, state = env.reset(jax.random.key(0), params)
    assert obs.dtype == jnp.float32 and int(state.time) == 1  # the opponent moved first
    assert int(state.current_player) == int(state.agent_player)
    with pytest.raises(ValueError, match="unknown opponent 'rnd'; closest: 'random'"):
        envs.make("TicTacToe-v0", opponent="rnd")
    with pytest.raises(ValueError, match="'perfect' play is known for TicTacToe-v0 only"):
        envs.make("ConnectFour-v0", opponent="perfect")
    with pytest.raises(ValueError, match="opponent_simulations: 0 is not allowed"):
        envs.make("TicTacToe-v0", opponent="mcts", opponent_simulations=0)
    with pytest.raises(ValueError, match="agent_first: 2 is not allowed"):
        envs.make("TicTacToe-v0", opponent="random", agent_first=2)
    with pytest.raises(ValueError, match="closest: 'opponent'"):
        envs.make("TicTacToe-v0", oponent="random")
    with pytest.raises(ValueError, match="parameter of CartPole-v1"):
        envs.make("CartPole-v1", opponent="random")
