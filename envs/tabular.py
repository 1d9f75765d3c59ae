"""Tabular MDPs with an explicit model: Gymnasium's toy-text environments and the Dyna maze.

    FrozenLake-v1, FrozenLake8x8-v1   slippery or not (`is_slippery`, `success_rate`)
    CliffWalking-v1                   Sutton & Barto Example 6.6 (optionally slippery)
    Taxi-v4                           Dietterich's taxi (optionally rainy)
    DynaMaze-v0                       Sutton & Barto Example 8.1

The ids, dynamics, rewards and time limits are Gymnasium's (`gymnasium.envs.toy_text`);
`tests/test_tabular.py` checks every table against Gymnasium's own `env.unwrapped.P`.

Each environment is built from its outcome table: for every state s and action a, up to K
outcomes (probability, next state, reward, terminated), in Gymnasium's order. `step` samples
one; `tabular_model` turns the table into the dense model that dynamic programming uses.
The observation is the state index (an int32 scalar), as in Gymnasium. An action outside
[0, num_actions) is clipped into it (Gymnasium raises; a compiled step cannot).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from envs.utils import unknown_name_error

LEFT, DOWN, RIGHT, UP = 0, 1, 2, 3  # FrozenLake's and the Dyna maze's action order

FROZEN_LAKE_MAPS = {
    "4x4": ("SFFF", "FHFH", "FFFH", "HFFG"),
    "8x8": ("SFFFFFFF", "FFFFFFFF", "FFFHFFFF", "FFFFFHFF", "FFFHFFFF", "FHHFFFHF", "FHFFHFHF",
            "FFFHFFFG"),
}

# Sutton & Barto Example 8.1: a 6 x 9 maze, start S, goal G, walls #.
DYNA_MAZE = ("       #G", "  #    # ", "S #    # ", "  #      ", "     #   ", "         ")


class Outcomes(NamedTuple):
    """An environment's outcome table (numpy): outcome k of action a in state s."""

    next_state: np.ndarray  # [S, A, K] int32
    prob: np.ndarray  # [S, A, K] float64; 0 pads a shorter outcome list
    reward: np.ndarray  # [S, A, K] float64
    terminated: np.ndarray  # [S, A, K] bool
    initial: np.ndarray  # [S] float64: the distribution of the first state


class TabularModel(NamedTuple):
    """The model of a tabular MDP as dense arrays (`tabular_model`)."""

    transitions: jax.Array  # [S, A, S] P(s' | s, a)
    rewards: jax.Array  # [S, A, S] expected reward of the transition s, a -> s'
    terminal: jax.Array  # [S] bool: states where an episode ends (their value is 0)
    initial: jax.Array  # [S] the distribution of the first state


def _table(lists: list[list[list[tuple]]], initial: np.ndarray) -> Outcomes:
    """Outcomes from Gymnasium-style lists: lists[s][a] = [(prob, s', reward, terminated)]."""
    num_states, num_actions = len(lists), len(lists[0])
    k = max(len(o) for row in lists for o in row)
    next_state = np.zeros((num_states, num_actions, k), np.int32)
    prob = np.zeros((num_states, num_actions, k))
    reward = np.zeros((num_states, num_actions, k))
    terminated = np.zeros((num_states, num_actions, k), bool)
    for s, row in enumerate(lists):
        for a, outcomes in enumerate(row):
            for i, (p, s_next, r, t) in enumerate(outcomes):
                next_state[s, a, i], prob[s, a, i], reward[s, a, i], terminated[s, a, i] = s_next, p, r, t
            next_state[s, a, len(outcomes):] = s  # padding: probability 0
    return Outcomes(next_state, prob, reward, terminated, initial / initial.sum())


def _grid_move(row: int, col: int, action: int, rows: int, cols: int) -> tuple[int, int]:
    """The cell one step away in a grid with edges (LEFT/DOWN/RIGHT/UP); an edge stops it."""
    d_row, d_col = {LEFT: (0, -1), DOWN: (1, 0), RIGHT: (0, 1), UP: (-1, 0)}[action]
    return min(max(row + d_row, 0), rows - 1), min(max(col + d_col, 0), cols - 1)


@functools.lru_cache(maxsize=None)
def frozen_lake_outcomes(map_name: str, is_slippery: bool, success_rate: float) -> Outcomes:
    """On a slippery lake the agent moves as asked with probability `success_rate` and to
    either side with half the rest each; reaching G pays 1; G and H end the episode."""
    desc = FROZEN_LAKE_MAPS[map_name]
    rows, cols = len(desc), len(desc[0])
    slip = (1.0 - success_rate) / 2.0

    def outcome(row, col, direction, p):
        r, c = _grid_move(row, col, direction, rows, cols)
        return (p, r * cols + c, float(desc[r][c] == "G"), desc[r][c] in "GH")

    lists = []
    for row in range(rows):
        for col in range(cols):
            here = []
            for a in range(4):
                if desc[row][col] in "GH":
                    here.append([(1.0, row * cols + col, 0.0, True)])
                elif is_slippery:
                    here.append([outcome(row, col, b, success_rate if b == a else slip)
                                 for b in ((a - 1) % 4, a, (a + 1) % 4)])
                else:
                    here.append([outcome(row, col, a, 1.0)])
            lists.append(here)
    initial = np.array([c == "S" for line in desc for c in line], float)
    return _table(lists, initial)


# CliffWalking's action order: UP, RIGHT, DOWN, LEFT.
_CLIFF_DELTAS = {0: (-1, 0), 1: (0, 1), 2: (1, 0), 3: (0, -1)}


@functools.lru_cache(maxsize=None)
def cliff_walking_outcomes(is_slippery: bool) -> Outcomes:
    """A 4 x 12 grid: start (3, 0), goal (3, 11), a cliff along (3, 1..10). Every step pays
    -1; stepping into the cliff pays -100 and returns to the start; the goal ends the
    episode. Slippery: the intended move or either perpendicular one, 1/3 each."""
    rows, cols, start = 4, 12, 36
    lists = []
    for s in range(rows * cols):
        row, col = divmod(s, cols)
        here = []
        for a in range(4):
            directions = [(a - 1) % 4, a, (a + 1) % 4] if is_slippery else [a]
            outcomes = []
            for b in directions:
                d_row, d_col = _CLIFF_DELTAS[b]
                r, c = min(max(row + d_row, 0), rows - 1), min(max(col + d_col, 0), cols - 1)
                p = 1.0 / len(directions)
                if r == rows - 1 and 0 < c < cols - 1:
                    outcomes.append((p, start, -100.0, False))
                else:
                    outcomes.append((p, r * cols + c, -1.0, (r, c) == (rows - 1, cols - 1)))
            here.append(outcomes)
        lists.append(here)
    initial = np.zeros(rows * cols)
    initial[start] = 1.0
    return _table(lists, initial)


TAXI_MAP = ("+---------+", "|R: | : :G|", "| : | : : |", "| : : : : |", "| | : | : |",
            "|Y| : |B: |", "+---------+")
TAXI_LOCATIONS = ((0, 0), (0, 4), (4, 0), (4, 3))  # R, G, Y, B


def taxi_encode(row: int, col: int, passenger: int, destination: int) -> int:
    """Taxi's state index: ((row * 5 + col) * 5 + passenger) * 4 + destination; passenger 4
    is in the taxi."""
    return ((row * 5 + col) * 5 + passenger) * 4 + destination


_TAXI_WALLS = np.array([list(line) for line in TAXI_MAP])
# Rainy moves: (intended, to its left, to its right) per action (south, north, east, west).
_TAXI_RAINY_MOVES = {0: ((1, 0), (0, 1), (0, -1)), 1: ((-1, 0), (0, -1), (0, 1)),
                     2: ((0, 1), (-1, 0), (1, 0)), 3: ((0, -1), (1, 0), (-1, 0))}


def _taxi_open(row: int, col: int, d_col: int) -> bool:
    """No wall between (row, col) and (row, col + d_col) on Taxi's map."""
    return _TAXI_WALLS[1 + row, 2 * col + (2 if d_col > 0 else 0)] == ":"


def _taxi_drift(row: int, col: int, d_row: int, d_col: int) -> tuple[int, int]:
    """Where a sideways drift of the rainy taxi ends (a wall or the edge stops it)."""
    new_row, new_col = min(max(row + d_row, 0), 4), min(max(col + d_col, 0), 4)
    if new_col != col and not _taxi_open(row, col, d_col):
        return row, col
    return new_row, new_col


@functools.lru_cache(maxsize=None)
def taxi_outcomes(is_rainy: bool, rainy_probability: float) -> Outcomes:
    """Actions: 0 south, 1 north, 2 east, 3 west, 4 pick up, 5 drop off. -1 per step, -10 for
    an illegal pick-up or drop-off, +20 for delivering the passenger, which ends the episode.
    Rainy: a possible move goes as asked with `rainy_probability`, else drifts to either side
    (an impossible one stays put)."""
    lists = [[[] for _ in range(6)] for _ in range(500)]
    initial = np.zeros(500)
    for row in range(5):
        for col in range(5):
            for passenger in range(5):
                for destination in range(4):
                    s = taxi_encode(row, col, passenger, destination)
                    if passenger < 4 and passenger != destination:
                        initial[s] += 1
                    for a in range(6):
                        lists[s][a] = _taxi_action(row, col, passenger, destination, a, is_rainy,
                                                   rainy_probability)
    return _table(lists, initial)


def _taxi_action(row, col, passenger, destination, a, is_rainy, rainy_probability):
    """The outcome list of one Taxi state and action."""
    if a == 4:  # pick up
        if passenger < 4 and (row, col) == TAXI_LOCATIONS[passenger]:
            return [(1.0, taxi_encode(row, col, 4, destination), -1.0, False)]
        return [(1.0, taxi_encode(row, col, passenger, destination), -10.0, False)]
    if a == 5:  # drop off
        if passenger == 4 and (row, col) == TAXI_LOCATIONS[destination]:
            return [(1.0, taxi_encode(row, col, destination, destination), 20.0, True)]
        if passenger == 4 and (row, col) in TAXI_LOCATIONS:
            return [(1.0, taxi_encode(row, col, TAXI_LOCATIONS.index((row, col)), destination),
                     -1.0, False)]
        return [(1.0, taxi_encode(row, col, passenger, destination), -10.0, False)]
    can_go = {0: row < 4, 1: row > 0, 2: _taxi_open(row, col, 1), 3: _taxi_open(row, col, -1)}[a]
    (d_row, d_col), left, right = _TAXI_RAINY_MOVES[a]
    intended = (min(max(row + d_row, 0), 4), min(max(col + d_col, 0), 4)) if can_go else (row, col)
    if not is_rainy:
        return [(1.0, taxi_encode(*intended, passenger, destination), -1.0, False)]
    sides = [_taxi_drift(row, col, *d) if can_go else (row, col) for d in (left, right)]
    side = (1.0 - rainy_probability) / 2.0
    return [(p, taxi_encode(*cell, passenger, destination), -1.0, False)
            for p, cell in zip((rainy_probability, side, side), (intended, *sides))]


@functools.lru_cache(maxsize=None)
def dyna_maze_outcomes() -> Outcomes:
    """Sutton & Barto Example 8.1: deterministic moves (a wall or the edge leaves the agent
    where it is), reward 0 except +1 on reaching the goal, which ends the episode."""
    rows, cols = len(DYNA_MAZE), len(DYNA_MAZE[0])
    lists = []
    for row in range(rows):
        for col in range(cols):
            here = []
            for a in range(4):
                r, c = _grid_move(row, col, a, rows, cols)
                if DYNA_MAZE[r][c] == "#":
                    r, c = row, col
                goal = DYNA_MAZE[r][c] == "G"
                here.append([(1.0, r * cols + c, float(goal), goal)])
            lists.append(here)
    initial = np.array([c == "S" for line in DYNA_MAZE for c in line], float)
    return _table(lists, initial)


# --------------------------------------------------------------------------- the environments


@struct.dataclass
class TabularState:
    state: jax.Array  # int32: the current state index
    time: jax.Array  # int32: steps taken in this episode


@struct.dataclass
class FrozenLakeParams:
    map_name: str = struct.field(pytree_node=False, default="4x4")
    """"4x4" or "8x8" (Gymnasium's maps)."""
    is_slippery: bool = struct.field(pytree_node=False, default=True)
    success_rate: float = struct.field(pytree_node=False, default=1.0 / 3.0)
    """Probability of moving as asked on a slippery lake."""
    max_steps_in_episode: int = 100


@struct.dataclass
class CliffWalkingParams:
    is_slippery: bool = struct.field(pytree_node=False, default=False)
    max_steps_in_episode: int = 10_000
    """Gymnasium's CliffWalking-v1 has no time limit; this one ends an episode after so many
    steps (truncated)."""


@struct.dataclass
class TaxiParams:
    is_rainy: bool = struct.field(pytree_node=False, default=False)
    rainy_probability: float = struct.field(pytree_node=False, default=0.8)
    max_steps_in_episode: int = 200


@struct.dataclass
class DynaMazeParams:
    max_steps_in_episode: int = 10_000
    """The book's maze has no time limit; this one truncates an episode after so many steps."""


class TabularEnv(environment.Environment):
    """A gymnax environment stepping an outcome table (subclasses say which)."""

    env_id = "Tabular"
    params_class: type = DynaMazeParams

    @property
    def name(self) -> str:
        return self.env_id

    @property
    def default_params(self):
        return self.params_class()

    def outcomes(self, params) -> Outcomes:
        raise NotImplementedError

    def check_params(self, params) -> None:
        """Raises a ValueError naming a bad parameter (called by `envs.make`)."""
        if not isinstance(params.max_steps_in_episode, (int, np.integer)) or params.max_steps_in_episode < 1:
            raise ValueError(f"max_steps_in_episode={params.max_steps_in_episode!r} is not allowed: "
                             f"expected an integer >= 1")
        self.outcomes(params)

    def num_states(self, params=None) -> int:
        return self.outcomes(params or self.default_params).initial.shape[0]

    @property
    def num_actions(self) -> int:
        return self.outcomes(self.default_params).prob.shape[1]

    def action_space(self, params=None) -> spaces.Discrete:
        return spaces.Discrete(self.num_actions)

    def observation_space(self, params=None) -> spaces.Discrete:
        return spaces.Discrete(self.num_states(params))

    def reset_env(self, key: jax.Array, params):
        table = self.outcomes(params)
        s = jax.random.choice(key, table.initial.shape[0], p=jnp.asarray(table.initial, jnp.float32))
        state = TabularState(state=s.astype(jnp.int32), time=jnp.int32(0))
        return state.state, state

    def step_env(self, key: jax.Array, state: TabularState, action, params):
        table = self.outcomes(params)
        # An action outside [0, num_actions) is clipped into it (a compiled step cannot raise;
        # indexing would wrap -1 to the last action and clamp the others silently).
        action = jnp.clip(jnp.asarray(action, jnp.int32), 0, table.prob.shape[1] - 1)
        prob = jnp.asarray(table.prob, jnp.float32)[state.state, action]
        k = jax.random.choice(key, prob.shape[0], p=prob)
        s_next = jnp.asarray(table.next_state)[state.state, action, k]
        reward = jnp.asarray(table.reward, jnp.float32)[state.state, action, k]
        terminated = jnp.asarray(table.terminated)[state.state, action, k]
        new = TabularState(state=s_next, time=state.time + 1)
        return s_next, new, reward, terminated, {}

    def is_truncated(self, state: TabularState, params) -> jax.Array:
        return state.time >= params.max_steps_in_episode

    def is_terminal(self, state: TabularState, params) -> jax.Array:
        return self.is_truncated(state, params)

    def get_obs(self, state: TabularState, params=None, key=None) -> jax.Array:
        return state.state


class FrozenLake(TabularEnv):
    env_id, params_class = "FrozenLake-v1", FrozenLakeParams

    def outcomes(self, params) -> Outcomes:
        if params.map_name not in FROZEN_LAKE_MAPS:
            raise unknown_name_error("map_name", str(params.map_name), list(FROZEN_LAKE_MAPS))
        if not 0.0 <= params.success_rate <= 1.0:
            raise ValueError(f"success_rate={params.success_rate!r} is not allowed: expected a "
                             f"probability in [0, 1]")
        return frozen_lake_outcomes(params.map_name, bool(params.is_slippery),
                                    float(params.success_rate))


class FrozenLake8x8(FrozenLake):
    env_id = "FrozenLake8x8-v1"

    @property
    def default_params(self):
        return FrozenLakeParams(map_name="8x8", max_steps_in_episode=200)


class CliffWalking(TabularEnv):
    env_id, params_class = "CliffWalking-v1", CliffWalkingParams

    def outcomes(self, params) -> Outcomes:
        return cliff_walking_outcomes(bool(params.is_slippery))


class Taxi(TabularEnv):
    env_id, params_class = "Taxi-v4", TaxiParams

    def outcomes(self, params) -> Outcomes:
        if not 0.0 <= params.rainy_probability <= 1.0:
            raise ValueError(f"rainy_probability={params.rainy_probability!r} is not allowed: "
                             f"expected a probability in [0, 1]")
        return taxi_outcomes(bool(params.is_rainy), float(params.rainy_probability))


class DynaMaze(TabularEnv):
    env_id, params_class = "DynaMaze-v0", DynaMazeParams

    def outcomes(self, params) -> Outcomes:
        return dyna_maze_outcomes()


ENVIRONMENTS = {cls.env_id: cls for cls in (FrozenLake, FrozenLake8x8, CliffWalking, Taxi, DynaMaze)}


def is_tabular(env: Any) -> bool:
    """Whether `env` (an environment object, possibly wrapped) has an explicit tabular model."""
    while env is not None and not isinstance(env, TabularEnv):
        env = getattr(env, "_env", None)
    return env is not None


def _unwrap(env: Any) -> TabularEnv:
    inner = env
    while inner is not None and not isinstance(inner, TabularEnv):
        inner = getattr(inner, "_env", None)
    if inner is None:
        name = getattr(env, "name", type(env).__name__)
        raise ValueError(f"env: {name} has no tabular model; tabular environments: "
                         f"{', '.join(ENVIRONMENTS)}")
    return inner


def tabular_model(env: Any, env_params=None) -> TabularModel:
    """The model of a tabular environment as dense arrays (see `TabularModel`).

    `rewards[s, a, s']` is the expected reward of the transitions from s under a that land in
    s' (two outcomes may land in the same state with different rewards, e.g. a slippery
    cliff), 0 where P(s' | s, a) = 0. `terminal[s']` marks the states that end an episode.
    """
    env = _unwrap(env)
    table = env.outcomes(env.default_params if env_params is None else env_params)
    num_states, num_actions, _ = table.prob.shape
    transitions = np.zeros((num_states, num_actions, num_states))
    reward_mass = np.zeros((num_states, num_actions, num_states))
    s_idx, a_idx = np.meshgrid(np.arange(num_states), np.arange(num_actions), indexing="ij")
    for k in range(table.prob.shape[2]):
        np.add.at(transitions, (s_idx, a_idx, table.next_state[..., k]), table.prob[..., k])
        np.add.at(reward_mass, (s_idx, a_idx, table.next_state[..., k]),
                  table.prob[..., k] * table.reward[..., k])
    rewards = np.divide(reward_mass, transitions, out=np.zeros_like(reward_mass),
                        where=transitions > 0)
    terminal = np.zeros(num_states, bool)
    terminal[table.next_state[table.terminated & (table.prob > 0)]] = True
    return TabularModel(transitions=jnp.asarray(transitions, jnp.float32),
                        rewards=jnp.asarray(rewards, jnp.float32),
                        terminal=jnp.asarray(terminal), initial=jnp.asarray(table.initial, jnp.float32))
