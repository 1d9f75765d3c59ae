"""The training loop of the search agents (AlphaZero, MuZero): self-play with Gumbel search,
a replay of whole trajectories, gradient steps on a loss the agent gives.

An agent differs from the other by its `SearchModel`: how the root of a search is made from
an observation, the model search steps through (`recurrent_fn`: the environment's own step
for AlphaZero, a learned dynamics network for MuZero) and the loss on replayed trajectories.
Everything else (self-play, episode statistics, the replay, the optimiser, a target network,
`act`) is `make_search_agent`.

The replay keeps the `length` most recent moves of each of the `num_envs` games in a ring
over time, so a sample can be a window of consecutive moves (MuZero unrolls its model along
one) and a value target can look ahead within the game (`outcome_values`, `n_step_values`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import spaces

import envs

from agents.common import search as S
from agents.common.config import (
    EnvStepsConfig,
    check_choice,
    check_positive_int,
    check_real,
    check_sizes,
    invalid,
    normalize_fields,
)
from agents.common.networks import ACTIVATIONS
from agents.common.optim import make_optimizer
from agents.common.types import Agent
from agents.common.value_learning import polyak


@dataclasses.dataclass(frozen=True)
class SearchConfig(EnvStepsConfig):
    """Settings every search agent has (self-play, search, replay, optimiser)."""

    SHAPE_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"total_timesteps", "num_envs", "num_steps", "num_simulations",
         "max_num_considered_actions", "buffer_size", "batch_size", "gradient_steps",
         "hidden_sizes"})

    total_timesteps: int = 200_000
    """Moves in the whole run, summed over the parallel games."""
    num_envs: int = 64
    """Games played side by side."""
    num_steps: int = 16
    """Moves of each game per iteration."""
    num_simulations: int = 32
    """Search simulations per self-play move (and per `act` move with Gumbel noise)."""
    eval_simulations: int = 128
    """Search simulations per deterministic `act` move (evaluation; no Gumbel noise)."""
    max_num_considered_actions: int | None = None
    """Root actions Gumbel search samples (without replacement) and halves down to one; None:
    all the environment's actions, up to 16."""
    buffer_size: int = 16_384
    """Most recent moves kept for learning (buffer_size // num_envs per game)."""
    batch_size: int = 256
    """Positions (or windows of positions) per gradient step."""
    gradient_steps: int = 32
    """Adam steps per iteration."""
    learning_rate: float = 1e-3
    """Adam step size (tunable)."""
    value_coef: float = 1.0
    """Weight of the value loss (tunable)."""
    max_grad_norm: float = 1.0
    """Global gradient norm clip (tunable)."""
    gamma: float = 1.0
    """Discount of a single-player environment (two-player games use -1 between turns)."""
    random_opening_moves: int = 0
    """The first this many moves of each self-play game are uniformly random legal moves (their
    positions keep the search's policy target): diverse openings for a board game, whose
    self-play otherwise repeats a few."""
    random_move_probability: float = 0.0
    """Each later self-play move is a uniformly random legal move with this probability:
    value targets then reflect play against an opponent that errs, and search prefers the
    lines that give it chances to."""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """Hidden layer widths (after a 3x3 conv layer on image observations)."""
    activation: str = "relu"
    """Hidden activation: relu or tanh."""

    @property
    def capacity(self) -> int:
        """Moves kept per game."""
        return self.buffer_size // self.num_envs

    def __post_init__(self):
        normalize_fields(self)
        check_positive_int(self, "total_timesteps", "num_envs", "num_steps", "num_simulations",
                           "eval_simulations", "buffer_size", "batch_size", "gradient_steps")
        if self.max_num_considered_actions is not None:
            check_positive_int(self, "max_num_considered_actions")
        if self.buffer_size < self.units_per_iteration:
            raise invalid("buffer_size", self.buffer_size, f"must hold one iteration's positions, "
                          f"num_envs * num_steps = {self.units_per_iteration}")
        if self.total_timesteps < self.units_per_iteration:
            raise invalid("total_timesteps", self.total_timesteps, f"must be at least one "
                          f"iteration, num_envs * num_steps = {self.units_per_iteration}")
        check_real(self, "learning_rate", 0.0, low_open=True)
        check_real(self, "value_coef", 0.0)
        check_real(self, "max_grad_norm", 0.0, low_open=True)
        check_real(self, "gamma", 0.0, 1.0)
        if (isinstance(self.random_opening_moves, bool) or not isinstance(self.random_opening_moves, int)
                or self.random_opening_moves < 0):
            raise invalid("random_opening_moves", self.random_opening_moves,
                          "expected an integer >= 0")
        check_real(self, "random_move_probability", 0.0, 1.0)
        check_sizes(self, "hidden_sizes")
        check_choice(self, "activation", ACTIVATIONS)


def validate(agent_name: str, config: SearchConfig, env, env_params) -> None:
    """Checks of a search agent's config against the environment (before compilation)."""
    space = env.action_space(env_params)
    if not isinstance(space, spaces.Discrete):
        raise ValueError(f"env: {agent_name} needs a Discrete action space, and {env.name} has "
                         f"{space}")
    if config.max_num_considered_actions is not None and config.max_num_considered_actions > space.n:
        raise invalid("max_num_considered_actions", config.max_num_considered_actions,
                      f"must be at most the {space.n} actions of {env.name}")


def self_play_params(env_params):
    """The environment parameters of self-play: a board game's two-player game (no opponent
    inside the step), else `env_params` unchanged."""
    return env_params.replace(opponent=None) if hasattr(env_params, "opponent") else env_params


def abstract_self_play_state(env, env_params):
    """The shapes of one environment state of self-play (`jax.eval_shape`, nothing runs)."""
    return jax.eval_shape(env.reset, jax.random.key(0), self_play_params(env_params))[1]


def is_two_player_game(env, env_params) -> bool:
    """Whether self-play on `env` is a two-player game (its state names the player to move)."""
    return S.is_two_player(abstract_self_play_state(env, env_params))


# ------------------------------------------------------------------------------- the replay


@struct.dataclass
class Trajectories:
    """The `length` most recent moves of `num_envs` games, a ring over time: [length, num_envs,
    ...] fields, time slot `pos` written next, `size` slots filled (the oldest is slot
    (pos - size) % length)."""

    obs: jax.Array  # [L, N, *obs_shape] the position before the move
    action: jax.Array  # [L, N] int32
    reward: jax.Array  # [L, N] the mover's reward
    discount: jax.Array  # [L, N] `search.step_discount` of the move (0 where it ended the game)
    terminated: jax.Array  # [L, N] bool, the move ended the game with an outcome
    truncated: jax.Array  # [L, N] bool, the game was cut after the move
    policy: jax.Array  # [L, N, A] the search's improved policy at the position
    pos: jax.Array  # [] int32
    size: jax.Array  # [] int32

    @property
    def length(self) -> int:
        return self.action.shape[0]


def empty_trajectories(length: int, num_envs: int, obs_shape, num_actions: int) -> Trajectories:
    z = lambda *shape, dtype=jnp.float32: jnp.zeros((length, num_envs, *shape), dtype)  # noqa: E731
    return Trajectories(z(*obs_shape), z(dtype=jnp.int32), z(), z(), z(dtype=bool), z(dtype=bool),
                        z(num_actions), jnp.int32(0), jnp.int32(0))


def add_moves(traj: Trajectories, moves: dict) -> Trajectories:
    """Appends `moves` (the fields of Trajectories, each [T, num_envs, ...])."""
    t = moves["action"].shape[0]
    slots = (traj.pos + jnp.arange(t)) % traj.length
    fields = {k: getattr(traj, k).at[slots].set(v) for k, v in moves.items()}
    return traj.replace(**fields, pos=(traj.pos + t) % traj.length,
                        size=jnp.minimum(traj.size + t, traj.length))


def time_order(traj: Trajectories):
    """(slots [L], filled [L]): the time slots oldest first, and whether each is filled."""
    ages = jnp.arange(traj.length)
    return (traj.pos - traj.size + ages) % traj.length, ages < traj.size


def outcome_values(traj: Trajectories):
    """(value [L, N], known [L, N]): each stored position's return to the end of its game from
    the view of its mover (`search.outcome_targets` over the replay in time order); unknown
    where the game is still running at the newest move or was truncated."""
    slots, filled = time_order(traj)
    unfilled = ~filled[:, None]
    value, known = S.outcome_targets(jnp.where(unfilled, 0.0, traj.reward[slots]),
                                     jnp.where(unfilled, 0.0, traj.discount[slots]),
                                     traj.terminated[slots] & ~unfilled,
                                     traj.truncated[slots] | unfilled)
    return (jnp.zeros_like(value).at[slots].set(value),
            jnp.zeros_like(known).at[slots].set(known))


class Windows(NamedTuple):
    """A batch of windows of `width` consecutive moves of one game each."""

    slots: jax.Array  # [B, W] time slots
    env: jax.Array  # [B] the game
    filled: jax.Array  # [B, W] bool, the move is in the replay (not past the newest)

    def take(self, field: jax.Array) -> jax.Array:
        """field [L, N, ...] -> [B, W, ...]."""
        return field[self.slots, self.env[:, None]]


def sample_windows(traj: Trajectories, key: jax.Array, batch: int, width: int) -> Windows:
    """`batch` windows whose first move is drawn uniformly from the stored moves."""
    key_env, key_age = jax.random.split(key)
    env = jax.random.randint(key_env, (batch,), 0, traj.action.shape[1])
    ages = jax.random.randint(key_age, (batch, 1), 0, traj.size) + jnp.arange(width)
    slots = (traj.pos - traj.size + ages) % traj.length
    return Windows(slots, env, ages < traj.size)


def n_step_values(reward: jax.Array, discount: jax.Array, terminated: jax.Array,
                  truncated: jax.Array, filled: jax.Array, bootstrap: jax.Array, n: int,
                  num_targets: int):
    """n-step value targets of the first `num_targets` positions of windows of moves.

    For position k: z_k = r_k + d_k r_{k+1} + ... + (d_k ... d_{k+n-2}) r_{k+n-1}
    + (d_k ... d_{k+n-1}) v_{k+n}, where d is the move's discount (0 where it ended the game,
    so nothing after the end counts; -1 between the turns of a two-player game) and v the
    bootstrap value of a position (a target network's, from its mover's view).

    Args:
      reward: [B, W] along the window (W >= num_targets + n), the mover's reward.
      discount: [B, W] the move's discount.
      terminated: [B, W] the move ended the game.
      truncated: [B, W] the game was cut at the move without an outcome.
      filled: [B, W] the move is stored (not past the newest).
      bootstrap: [B, W] the value of each position of the window.

    Returns:
      (targets, known) [B, num_targets]: known where the moves up to the game's end or to the
      bootstrap position are stored and the game was not truncated first (a truncated game
      has no outcome to learn from).
    """
    batch = reward.shape[0]
    targets, knowns = [], []
    for k in range(num_targets):
        z, scale = jnp.zeros(batch), jnp.ones(batch)
        known, live = jnp.ones(batch, bool), jnp.ones(batch, bool)  # live: the game goes on
        for j in range(k, k + n):
            z = z + scale * reward[:, j]
            known = known & ~(live & (~filled[:, j] | truncated[:, j]))
            scale = scale * discount[:, j]
            live = live & ~(terminated[:, j] | truncated[:, j])
        z = z + scale * bootstrap[:, k + n]
        targets.append(z)
        knowns.append(known & ~(live & ~filled[:, k + n]))
    return jnp.stack(targets, 1), jnp.stack(knowns, 1)


# ------------------------------------------------------------------------------- the loop


class SearchModel(NamedTuple):
    """What tells one search agent from another.

    init:   (key, obs [B, ...]) -> network parameters.
    root:   (params, obs [B, ...], env_state [B]) -> (prior logits [B, A], value [B],
            embedding): the root of a search, `embedding` the state `recurrent_fn` steps from.
    recurrent_fn: mctx's `(params, key, action [B], embedding) -> (RecurrentFnOutput,
            embedding)`.
    loss:   (params, target_params, traj, prepared, key, hparams) -> (loss, stats dict): one
            gradient step's loss on the replay (the agent samples from it).
    prepare: None, or (traj) -> `prepared`, computed once per iteration before the gradient
            steps (e.g. targets over the whole replay); `prepared` is None without it.
    target_tau: None (no target network), else the Polyak step of the target network towards
            the online one after each gradient step (1: a copy).
    """

    init: Callable
    root: Callable
    recurrent_fn: Callable
    loss: Callable
    prepare: Callable | None = None
    target_tau: float | None = None


@struct.dataclass
class Params:
    """Everything `act` needs: the network's weights."""

    network: Any


@struct.dataclass
class State:
    params: Params
    target: Any  # target network weights, None without a target network
    opt_state: Any
    env_state: Any  # batched environment state [num_envs] (no wrappers)
    episode: dict  # running return (first mover's view), length and first mover [num_envs]
    replay: Trajectories
    key: jax.Array
    hparams: Any
    iteration: jax.Array  # [] int32


def make_search_agent(config: SearchConfig, env, env_params, model: SearchModel,
                      hparams_from_config: Callable) -> Agent:
    """The search agent of `model` (see the module docstring): `init`, `update`, `act`.

    `act(params, env_state, key, deterministic=False)` searches from environment states,
    batched [B] or not (the observation and the legal moves come from the state): Gumbel noise
    and `num_simulations` unless `deterministic` (no noise, `eval_simulations`).
    """
    num_actions = env.action_space(env_params).n
    considered = config.max_num_considered_actions or min(16, num_actions)
    obs_shape = tuple(env.observation_space(env_params).shape)
    play_params = self_play_params(env_params)
    optimizer = make_optimizer()
    abstract_state = abstract_self_play_state(env, env_params)
    two_player = S.is_two_player(abstract_state)

    def observe(env_state):
        return jax.vmap(env.get_obs, in_axes=(0, None))(env_state, play_params)

    def first_mover(env_state, batch):
        return env_state.current_player if two_player else jnp.zeros(batch, jnp.int32)

    def search(net_params, key, env_state, num_simulations, gumbel_scale):
        obs = observe(env_state)
        logits, value, embedding = model.root(net_params, obs, env_state)
        mask = S.legal_action_mask(env_state, obs.shape[0], num_actions)
        return obs, S.search(net_params, key, logits, value, embedding, model.recurrent_fn, mask,
                             num_simulations, considered, gumbel_scale)

    def init(key: jax.Array, hparams=None) -> State:
        """`hparams`: tunable hyperparameters replacing the config's (e.g. one sweep setting)."""
        key, key_net, key_env = jax.random.split(key, 3)
        env_state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(key_env, config.num_envs), play_params)[1]
        net_params = model.init(key_net, observe(env_state))
        n = config.num_envs
        episode = {"return": jnp.zeros(n), "length": jnp.zeros(n, jnp.int32),
                   "first": first_mover(env_state, n)}
        replay = empty_trajectories(config.capacity, n, obs_shape, num_actions)
        target = None if model.target_tau is None else net_params
        return State(Params(net_params), target, optimizer.init(net_params), env_state, episode,
                     replay, key, hparams_from_config(config, hparams), jnp.int32(0))

    def self_play(state: State, key: jax.Array):
        n = config.num_envs

        def move(carry, key):
            env_state, ep = carry
            key_search, key_step, key_open = jax.random.split(key, 3)
            obs, out = search(state.params.network, key_search, env_state,
                              config.num_simulations, 1.0)
            action = out.action
            if config.random_opening_moves or config.random_move_probability:
                key_coin = jax.random.fold_in(key_open, 1)
                legal = S.legal_action_mask(env_state, n, num_actions)
                random_move = jax.random.categorical(key_open, jnp.where(legal, 0.0, S.MASKED))
                explore = (ep["length"] < config.random_opening_moves) | (
                    jax.random.uniform(key_coin, (n,)) < config.random_move_probability)
                action = jnp.where(explore, random_move, action)
            mover = first_mover(env_state, n)
            _, env_state, reward, term, trunc, _ = jax.vmap(
                env.step, in_axes=(0, 0, 0, None))(jax.random.split(key_step, n), env_state,
                                                   action, play_params)
            ended = term | trunc
            sign = jnp.where(mover == ep["first"], 1.0, -1.0)
            ret = ep["return"] + sign * reward
            length = ep["length"] + 1
            done = {"done": ended, "return": ret, "length": length}
            ep = {"return": jnp.where(ended, 0.0, ret), "length": jnp.where(ended, 0, length),
                  "first": jnp.where(ended, first_mover(env_state, n), ep["first"])}
            moves = {"obs": obs, "action": action, "reward": reward.astype(jnp.float32),
                     "discount": S.step_discount(ended, two_player, config.gamma),
                     "terminated": term, "truncated": trunc, "policy": out.action_weights}
            return (env_state, ep), (moves, done)

        (env_state, episode), (moves, done) = jax.lax.scan(
            move, (state.env_state, state.episode), jax.random.split(key, config.num_steps))
        return env_state, episode, moves, done

    def learn(state: State, replay: Trajectories, key: jax.Array):
        hp = state.hparams
        prepared = None if model.prepare is None else model.prepare(replay)

        def step(carry, key):
            net_params, target, opt_state = carry
            grads, stats = jax.grad(model.loss, has_aux=True)(net_params, target, replay, prepared,
                                                                key, hp)
            updates, opt_state = optimizer.update(grads, opt_state, learning_rate=hp.learning_rate,
                                                  max_grad_norm=hp.max_grad_norm)
            net_params = jax.tree.map(jnp.add, net_params, updates)
            if model.target_tau is not None:
                target = polyak(net_params, target, model.target_tau)
            return (net_params, target, opt_state), stats

        (net_params, target, opt_state), stats = jax.lax.scan(
            step, (state.params.network, state.target, state.opt_state),
            jax.random.split(key, config.gradient_steps))
        return net_params, target, opt_state, jax.tree.map(jnp.mean, stats)

    def update(state: State) -> tuple[State, dict[str, jax.Array]]:
        key, key_play, key_learn = jax.random.split(state.key, 3)
        env_state, episode, moves, done = self_play(state, key_play)
        replay = add_moves(state.replay, moves)
        net_params, target, opt_state, stats = learn(state, replay, key_learn)
        metrics = {**envs.summarize_episodes(done), **stats}
        state = state.replace(params=Params(net_params), target=target, opt_state=opt_state,
                              env_state=env_state, episode=episode, replay=replay,
                              key=key, iteration=state.iteration + 1)
        return state, metrics

    def act(params: Params, env_state: Any, key: jax.Array, deterministic: bool = False):
        """Actions for environment states, batched [B] or not: the search's choice, with
        Gumbel noise and `num_simulations` unless `deterministic` (no noise,
        `eval_simulations`)."""
        single = jax.tree.leaves(env_state)[0].ndim == jax.tree.leaves(abstract_state)[0].ndim
        states = jax.tree.map(lambda x: x[None], env_state) if single else env_state
        sims = config.eval_simulations if deterministic else config.num_simulations
        _, out = search(params.network, key, states, sims, 0.0 if deterministic else 1.0)
        return out.action[0] if single else out.action

    return Agent(init, update, act)
