"""agents/common/search.py: value targets from outcomes (known values), and Gumbel search with
the environment's own step as the model: illegal moves masked at every node, the sign of a
two-player game's values."""

import jax
import jax.numpy as jnp
import numpy as np

import envs
from agents.common import search as S

TTT, TTT_PARAMS = envs.make("TicTacToe-v0")


def test_outcome_targets_two_player_and_single_player():
    # Two games in a rollout of 4 moves. Game 1: player A moves (t=0, reward 0), B moves and
    # wins (t=1, reward +1 to B, the episode ends). Game 2 starts at t=2: A, then B, still
    # running at the end of the rollout. Two-player discount -1 between turns, 0 at the end:
    #   z_1 = +1 (B's winning move), z_0 = 0 + (-1) * z_1 = -1 (A's position was lost);
    #   z_2, z_3 unknown.
    reward = jnp.array([0.0, 1.0, 0.0, 0.0])
    ended = jnp.array([False, True, False, False])
    z, known = S.outcome_targets(reward, S.step_discount(ended, True, 1.0), ended)
    np.testing.assert_array_equal(known, [True, True, False, False])
    np.testing.assert_allclose(z[:2], [-1.0, 1.0])
    # Single player, gamma 0.9: rewards 0, 0, 1 then the episode ends, then one more move:
    #   z_2 = 1, z_1 = 0.9, z_0 = 0.81; z_3 unknown. Batched over a second axis as well.
    reward = jnp.array([0.0, 0.0, 1.0, 0.5])
    ended = jnp.array([False, False, True, False])
    z, known = S.outcome_targets(reward[:, None].repeat(2, 1),
                                 S.step_discount(ended, False, 0.9)[:, None].repeat(2, 1),
                                 ended[:, None].repeat(2, 1))
    np.testing.assert_allclose(z[:3, 0], [0.81, 0.9, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(known[:, 1], [True, True, True, False])
    # A truncated episode has no outcome: its positions stay unknown, the next one's not.
    trunc = jnp.array([False, True, False, False])
    term = jnp.array([False, False, False, True])
    _, known = S.outcome_targets(reward, S.step_discount(term | trunc, False, 0.9), term, trunc)
    np.testing.assert_array_equal(known, [False, False, True, True])


def _position(moves):
    """A TicTacToe state after `moves` (cells 0-8) from the first player's start."""
    _, state = TTT.reset(jax.random.key(0), TTT_PARAMS)
    for i, cell in enumerate(moves):
        _, state, _, _, _, _ = TTT.step(jax.random.key(i + 1), state, cell, TTT_PARAMS)
    return state


def _search(predict, states, num_simulations, gumbel_scale=0.0):
    batch = jax.tree.map(lambda *x: jnp.stack(x), *states)
    recurrent_fn = S.true_model(TTT, TTT_PARAMS, predict, 9, two_player=True)
    logits, value = predict(None, batch.observation)
    out = jax.jit(lambda key: S.search(None, key, logits, value, batch, recurrent_fn,
                                       batch.legal_action_mask, num_simulations, 9,
                                       gumbel_scale))(jax.random.key(0))
    return out, batch


def test_search_never_visits_an_illegal_move_at_any_node():
    # A network that prefers the occupied cells (illegal moves) by far: search must still
    # give them no visit and a prior logit of MASKED or below at every expanded node.
    def predict(params, obs):
        occupied = obs.sum(-1).reshape(obs.shape[0], 9)
        return 10.0 * occupied, jnp.zeros(obs.shape[0])

    states = [_position([4]), _position([0, 4, 8]), _position([])]
    out, _ = _search(predict, states, 64, gumbel_scale=1.0)
    tree = out.search_tree
    mask = tree.embeddings.legal_action_mask  # [B, nodes, 9]
    expanded = tree.node_visits > 0  # [B, nodes]
    illegal = expanded[..., None] & ~mask
    assert illegal.sum() > 50  # inner nodes with occupied cells were expanded
    assert np.all(np.asarray(tree.children_visits)[illegal] == 0)
    assert np.all(np.asarray(tree.children_prior_logits)[illegal] <= S.MASKED)  # mctx: root -inf-like
    assert np.all(np.asarray(out.action_weights)[~np.asarray(mask[:, 0])] < 1e-6)
    chosen = np.asarray(out.action)
    assert all(bool(mask[b, 0, chosen[b]]) for b in range(3))


def test_search_wins_and_blocks_in_a_two_player_game():
    # An uninformed network (uniform prior, value 0): the values come from the game's ends.
    def predict(params, obs):
        return jnp.zeros((obs.shape[0], 9)), jnp.zeros(obs.shape[0])

    # Cells: 0 1 2 / 3 4 5 / 6 7 8. After X 0, O 3, X 1, O 4 it is X's move: 2 wins now.
    # After X 0, O 4, X 8, O 2, X's move: O threatens 2-4-6, so X must take 6.
    out, _ = _search(predict, [_position([0, 3, 1, 4]), _position([0, 4, 8, 2])], 200)
    assert list(np.asarray(out.action)) == [2, 6]
