"""Two-player board games from pgx on gymnax 1.0's API, and single-agent views of them
against fixed opponents.

    env, params = envs.make("ConnectFour-v0")                     # the two-player game
    env, params = envs.make("TicTacToe-v0", opponent="perfect")   # the agent against minimax
    env, params = envs.make("Othello-v0", opponent="mcts", opponent_simulations=200)

The environment state is a `GameState` holding the pgx state (`state.game`); the observation
(from the view of the player to move), the legal-action mask and the player to move are its
properties, so no code outside this module needs pgx. Observations are float32 grids
[H, W, C] (pgx's planes), actions are pgx's action ids.

Two-player game (`params.opponent` None, the default): `step` plays the move of the player
to move; the reward is that player's (+1 when the move wins, -1 when it loses, 0 otherwise)
and `info["rewards"]` holds both players' [2]. Single-agent view (`params.opponent` set): the
opponent moves inside `reset` (when it moves first) and inside `step` after the agent; the
reward is the agent's, +1 win, 0 draw, -1 loss. Which side the agent plays is drawn per
episode (`params.agent_first = -1`, the default) or fixed (1: first, 0: second). The
opponent is a (static) parameter, so results record it with the other parameters.

Illegal moves follow pgx's documented rule: the player who makes one loses at once (reward
-1 to it, +1 to the other); a move outside [0, num_actions) is illegal too. Opponents:
"random" (uniform over legal moves), "mcts" (plain Monte Carlo tree search through
`mctx.muzero_policy`: uniform priors over legal moves at every node, leaves valued by one
random playout, `opponent_simulations` simulations, the most visited move) and, for
TicTacToe, "perfect" (minimax over all positions, uniformly among the optimal moves).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from envs.utils import unknown_name_error

# Project id -> (pgx id, moves after which an episode is truncated). The bounds are never
# reached by a real game: TicTacToe ends within 9 moves, ConnectFour within 42, Othello
# within 60 placements and as many passes, and pgx ends Go 9x9 at 2 * 81 moves.
GAMES = {
    "TicTacToe-v0": ("tic_tac_toe", 9),
    "ConnectFour-v0": ("connect_four", 42),
    "Othello-v0": ("othello", 128),
    "Go9x9-v0": ("go_9x9", 162),
}
OPPONENTS = ("random", "mcts", "perfect")


@struct.dataclass
class GameParams:
    max_steps_in_episode: int
    """Moves (both players') after which an episode is truncated."""
    opponent: str | None = struct.field(pytree_node=False, default=None)
    """None: the two-player game; else the opponent of the single-agent view: "random",
    "mcts" or "perfect" (TicTacToe)."""
    opponent_simulations: int = struct.field(pytree_node=False, default=200)
    """Simulations per move of the "mcts" opponent."""
    agent_first: int = -1
    """Single-agent view: 1 the agent moves first, 0 second, -1 drawn per episode."""


@struct.dataclass
class GameState:
    game: Any
    """The pgx state."""
    time: jax.Array
    """Moves made in this episode (both players')."""
    agent_player: jax.Array
    """Single-agent view: the agent's pgx player id (0 or 1); -1 in the two-player game."""

    @property
    def observation(self) -> jax.Array:
        """[H, W, C] float32, from the view of the player to move."""
        return self.game.observation.astype(jnp.float32)

    @property
    def legal_action_mask(self) -> jax.Array:
        """[num_actions] bool: the moves the player to move may make."""
        return self.game.legal_action_mask

    @property
    def current_player(self) -> jax.Array:
        """The pgx player id (0 or 1) to move."""
        return self.game.current_player


class BoardGame(environment.Environment):
    """A pgx two-player game (`params.opponent` None: each `step` is the move of the player to
    move) or its single-agent view against `params.opponent`, who moves inside `reset` (when
    it moves first) and inside `step` after the agent."""

    def __init__(self, env_id: str):
        super().__init__()
        if env_id not in GAMES:
            raise unknown_name_error("board game", env_id, list(GAMES))
        import pgx

        self.env_id = env_id
        self.game = pgx.make(GAMES[env_id][0])
        self._max_steps = GAMES[env_id][1]

    @property
    def name(self) -> str:
        return self.env_id

    @property
    def num_actions(self) -> int:
        return self.game.num_actions

    @property
    def default_params(self) -> GameParams:
        return GameParams(max_steps_in_episode=self._max_steps)

    def check_params(self, params: GameParams) -> None:
        """Raises a ValueError naming a parameter whose value is not allowed."""
        if params.opponent is not None and params.opponent not in OPPONENTS:
            raise unknown_name_error("opponent", params.opponent, list(OPPONENTS))
        if params.opponent == "perfect" and self.env_id != "TicTacToe-v0":
            raise ValueError(f"opponent: 'perfect' play is known for TicTacToe-v0 only, not "
                             f"{self.env_id}; use 'random' or 'mcts'")
        sims = params.opponent_simulations
        if isinstance(sims, bool) or not isinstance(sims, (int, np.integer)) or sims < 1:
            raise ValueError(f"opponent_simulations: {sims!r} is not allowed: must be an "
                             f"integer >= 1")
        if not isinstance(params.agent_first, jax.Array) and params.agent_first not in (-1, 0, 1):
            raise ValueError(f"agent_first: {params.agent_first!r} is not allowed: 1 (the agent "
                             f"moves first), 0 (second) or -1 (drawn per episode)")

    def action_space(self, params=None) -> spaces.Discrete:
        return spaces.Discrete(self.game.num_actions)

    def observation_space(self, params=None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, self.game.observation_shape, jnp.float32)

    def get_obs(self, state: GameState, params=None, key=None) -> jax.Array:
        return state.observation

    def is_terminal(self, state: GameState, params) -> jax.Array:
        return state.game.terminated | self.is_truncated(state, params)

    def is_truncated(self, state: GameState, params) -> jax.Array:
        return (~state.game.terminated) & (state.game.truncated
                                          | (state.time >= params.max_steps_in_episode))

    def play(self, state: GameState, action: jax.Array, key: jax.Array):
        """One move of the player to move -> (state, rewards [2]). A move outside
        [0, num_actions) is illegal: pgx steps with it clipped and no move legal, so the
        player who made it loses (indexing would wrap -1 and clamp the others silently)."""
        action = jnp.asarray(action, jnp.int32)
        in_range = (action >= 0) & (action < self.num_actions)
        game = state.game.replace(legal_action_mask=state.game.legal_action_mask & in_range)
        game = self.game.step(game, jnp.clip(action, 0, self.num_actions - 1), key)
        return state.replace(game=game, time=state.time + 1), game.rewards

    def opponent_move(self, key: jax.Array, state: GameState, params: GameParams) -> jax.Array:
        """`params.opponent`'s move in `state` (where it is to move)."""
        if params.opponent == "random":
            return random_move(key, state.game)
        if params.opponent == "perfect":
            return perfect_tictactoe_move(key, state.game)
        return mcts_move(self.game, params.opponent_simulations, key, state.game)

    def _opponent_plays(self, key: jax.Array, state: GameState, params: GameParams):
        key_move, key_step = jax.random.split(key)
        return self.play(state, self.opponent_move(key_move, state, params), key_step)

    def reset_env(self, key: jax.Array, params: GameParams):
        if params.opponent is None:
            state = GameState(self.game.init(key), jnp.int32(0), jnp.int32(-1))
            return state.observation, state
        key_init, key_side, key_opponent = jax.random.split(key, 3)
        game = self.game.init(key_init)
        first = jnp.where(params.agent_first < 0, jax.random.bernoulli(key_side),
                          params.agent_first == 1)
        agent = jnp.where(first, game.current_player, 1 - game.current_player).astype(jnp.int32)
        state = GameState(game, jnp.int32(0), agent)
        state = jax.lax.cond(first, lambda: state,
                             lambda: self._opponent_plays(key_opponent, state, params)[0])
        return state.observation, state

    def step_env(self, key, state: GameState, action, params: GameParams):
        action = jnp.asarray(action, jnp.int32)
        if params.opponent is None:
            mover = state.current_player
            state, rewards = self.play(state, action, key)
            info = {"rewards": rewards}
            return state.observation, state, rewards[mover], state.game.terminated, info
        key_agent, key_opponent = jax.random.split(key)
        agent = state.agent_player
        state, rewards = self.play(state, action, key_agent)
        reward = rewards[agent]
        over = state.game.terminated | self.is_truncated(state, params)
        state, rewards = jax.lax.cond(over, lambda: (state, jnp.zeros_like(rewards)),
                                      lambda: self._opponent_plays(key_opponent, state, params))
        reward = reward + rewards[agent]
        return state.observation, state, reward, state.game.terminated, {}


# --------------------------------------------------------------------------- opponents


def random_move(key: jax.Array, game) -> jax.Array:
    """A uniformly random legal move of the pgx state `game`."""
    return jax.random.categorical(key, jnp.where(game.legal_action_mask, 0.0, -jnp.inf))


def random_playout(env, key: jax.Array, game) -> jax.Array:
    """Plays uniformly random legal moves from `game` to the end; the result [] for the
    player to move in `game` (+1 win, 0 draw, -1 loss; 0 when `game` has already ended)."""
    player = game.current_player

    def running(carry):
        g, _ = carry
        return ~(g.terminated | g.truncated)

    def move(carry):
        g, k = carry
        k, k_move, k_step = jax.random.split(k, 3)
        return env.step(g, random_move(k_move, g), k_step), k

    ended = game.terminated | game.truncated
    final, _ = jax.lax.while_loop(running, move, (game, key))
    return jnp.where(ended, 0.0, final.rewards[player])


def mcts_move(env, num_simulations: int, key: jax.Array, game) -> jax.Array:
    """Plain MCTS (PUCT with uniform priors over legal moves, no exploration noise, leaves
    valued by a random playout) for the player to move in `game`: the most visited move.
    Two-player zero-sum: rewards are the mover's, discount -1 between turns, 0 at the end."""
    import mctx

    def uniform_logits(g):
        return jnp.where(g.legal_action_mask, 0.0, -1e9)

    def recurrent_fn(params, rng, action, games):
        del params
        movers = games.current_player
        keys = jax.random.split(rng, 2 * action.shape[0]).reshape(2, action.shape[0])
        games = jax.vmap(env.step)(games, action, keys[0])
        reward = jnp.take_along_axis(games.rewards, movers[:, None], axis=1)[:, 0]
        ended = games.terminated | games.truncated
        value = jax.vmap(functools.partial(random_playout, env))(keys[1], games)
        out = mctx.RecurrentFnOutput(reward=reward, discount=jnp.where(ended, 0.0, -1.0),
                                     prior_logits=jax.vmap(uniform_logits)(games),
                                     value=jnp.where(ended, 0.0, value))
        return out, games

    key_root, key_search = jax.random.split(key)
    games = jax.tree.map(lambda x: x[None], game)
    root = mctx.RootFnOutput(prior_logits=jax.vmap(uniform_logits)(games),
                             value=random_playout(env, key_root, game)[None], embedding=games)
    out = mctx.muzero_policy(None, key_search, root, recurrent_fn, num_simulations,
                             invalid_actions=~games.legal_action_mask, dirichlet_fraction=0.0)
    visits = jnp.where(game.legal_action_mask, out.search_tree.summary().visit_counts[0], -1)
    return jnp.argmax(visits)


# --------------------------------------------------------------------------- perfect TicTacToe

_LINES = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]


@functools.lru_cache(maxsize=1)
def tictactoe_values() -> np.ndarray:
    """[3**9, 9] float32: the minimax value of each move for the player to move, indexed by
    the board from that player's view (cell i holds 0 empty, 1 its mark, 2 the opponent's;
    index sum cell_i * 3**i, cells in pgx's action order, row by row); -2 for an occupied
    cell or a position that is not reachable or already over."""
    table = np.full((3**9, 9), -2.0, np.float32)
    powers = 3 ** np.arange(9)

    def won(cells, mark):
        return any(all(cells[i] == mark for i in line) for line in _LINES)

    @functools.lru_cache(maxsize=None)
    def value(cells: tuple) -> float:
        """The best result for the player to move (mark 1) in a live position."""
        best = -1.0
        q = np.full(9, -2.0, np.float32)
        for a in range(9):
            if cells[a]:
                continue
            after = list(cells)
            after[a] = 1
            if won(after, 1):
                q[a] = 1.0
            elif all(after):
                q[a] = 0.0
            else:  # the opponent to move, marks swapped
                q[a] = -value(tuple((0, 2, 1)[c] for c in after))
            best = max(best, float(q[a]))
        table[int(np.dot(cells, powers))] = q
        return best

    value((0,) * 9)
    return table


def perfect_tictactoe_move(key: jax.Array, game) -> jax.Array:
    """A minimax-optimal TicTacToe move for the player to move, uniform among the optimal."""
    planes = game.observation.reshape(9, 2).astype(jnp.int32)  # [mine, theirs] per cell
    index = jnp.sum((planes[:, 0] + 2 * planes[:, 1]) * (3 ** jnp.arange(9)))
    q = jnp.asarray(tictactoe_values())[index]
    best = (q == q.max()) & game.legal_action_mask
    return jax.random.categorical(key, jnp.where(best, 0.0, -jnp.inf))
