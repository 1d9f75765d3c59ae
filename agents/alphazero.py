"""AlphaZero (Silver et al. 2018) with Gumbel search (Danihelka et al. 2022, "Policy
improvement by planning with Gumbel"): the environment's own step is the model.

One iteration of `update`:
  1. self-play: `num_steps` moves in each of `num_envs` games (or episodes of a single-player
     environment), each move chosen by `mctx.gumbel_muzero_policy` with `num_simulations`
     simulations (Gumbel noise on, illegal moves masked at every node);
  2. value targets from outcomes over the rollout (`agents.common.search.outcome_targets`):
     the return of the position's episode from the view of its mover (two players: +1 win,
     0 draw, -1 loss, discount -1 between turns; one player: rewards discounted by gamma),
     known where the episode ended within the rollout; policy targets: the search's improved
     policy (`action_weights`);
  3. the rollout's positions go into a replay of the `buffer_size` most recent positions;
  4. `gradient_steps` Adam steps on `batch_size` positions drawn uniformly from it:
     cross-entropy to the policy target plus `value_coef` times the squared error to the
     known value targets.

Board games (`envs.make("TicTacToe-v0")`) are played against the agent itself whatever
opponent the environment's parameters name: `make(config, *envs.make("TicTacToe-v0",
opponent="random"))` trains by self-play and the lab evaluates against the random player.
`act` takes the environment state (search needs the model's state), batched or not:

    agent = alphazero.make(alphazero.Config(), env, env_params)
    action = agent.act(state.params, env_state, key, deterministic=True)  # no Gumbel noise

The reported `episode_return` of self-play is the return of single-player episodes and, in a
two-player game, the result of the player who moved first (+1, 0, -1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import struct
from gymnax.environments import spaces

import envs

from agents.common import (
    EnvStepsConfig,
    Agent,
    PolicyValueNetwork,
    Score,
    check_choice,
    check_positive_int,
    check_real,
    check_sizes,
    hparams_from_config,
    invalid,
    make_optimizer,
    normalize_fields,
    train_loop,
)
from agents.common import search as S
from agents.common.networks import ACTIVATIONS

SCORE = Score(metric="episode_return", higher_is_better=True, weight="episodes", label="return")
"""Self-play episode returns (two players: the first mover's result); evaluate a board game
against an opponent through the environment's parameters."""
NAN_METRICS = ("episode_return", "episode_length")
"""NaN in an iteration in which no episode ended."""
ACT_INPUT = "env_state"
"""`act` searches from environment states (the model is the environment's step)."""
ACTION_SPACES = ("discrete",)


@dataclasses.dataclass(frozen=True)
class Config(EnvStepsConfig):
    """AlphaZero settings. Defaults are sized for small board games (TicTacToe-v0)."""

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
    """Most recent positions kept for learning."""
    batch_size: int = 256
    """Positions per gradient step."""
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
    hidden_sizes: tuple[int, ...] = (128, 128)
    """Hidden layer widths (after a 3x3 conv layer on image observations)."""
    activation: str = "relu"
    """Hidden activation: relu or tanh."""

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
        check_sizes(self, "hidden_sizes")
        check_choice(self, "activation", ACTIVATIONS)


PRESETS: dict[str, Config] = {
    # TicTacToe-v0 by self-play: 3e5 moves, 32 gradient steps per iteration, the most recent
    # 65,536 positions (about 3 minutes for 2 seeds on 2 CPU cores; benchmarks/README.md).
    "tictactoe": Config(total_timesteps=300_000, buffer_size=65_536),
    # Catch-bsuite (single player, deterministic step): 10x5 grid, 9 moves an episode.
    "catch": Config(total_timesteps=12_800, num_envs=16, num_steps=20, num_simulations=16,
                    max_num_considered_actions=3, buffer_size=4096, batch_size=128,
                    gradient_steps=8, learning_rate=3e-3, gamma=0.99, hidden_sizes=(64, 64)),
}
"""Named configurations: `alphazero.PRESETS["catch"]`, or `--preset catch` on the CLI."""


@struct.dataclass
class Params:
    """Everything `act` needs: the policy-value network's weights."""

    network: Any


@struct.dataclass
class HParams:
    """Tunable hyperparameters as arrays, so a vmap over states sweeps them."""

    learning_rate: jax.Array  # []
    value_coef: jax.Array  # []
    max_grad_norm: jax.Array  # []

    @classmethod
    def from_config(cls, config: Config, overrides: Mapping[str, Any] | None = None) -> HParams:
        return hparams_from_config(cls, config, overrides)


@struct.dataclass
class Replay:
    """The `capacity` most recent positions (a ring) with their targets."""

    obs: jax.Array  # [capacity, *obs_shape]
    policy: jax.Array  # [capacity, num_actions] the search's improved policy
    value: jax.Array  # [capacity] outcome-based value target
    known: jax.Array  # [capacity] bool, the value target is known
    pos: jax.Array  # [] int32, next slot
    size: jax.Array  # [] int32, filled slots


@struct.dataclass
class State:
    params: Params
    opt_state: Any
    env_state: Any  # batched environment state [num_envs] (no wrappers)
    episode: dict  # running return (first mover's view), length and first mover [num_envs]
    replay: Replay
    key: jax.Array
    hparams: HParams
    iteration: jax.Array  # [] int32


def validate(config: Config, env, env_params) -> None:
    """Checks that depend on the environment (the rest run in Config.__post_init__)."""
    space = env.action_space(env_params)
    if not isinstance(space, spaces.Discrete):
        raise ValueError(f"env: AlphaZero needs a Discrete action space, and {env.name} has {space}")
    if config.max_num_considered_actions is not None and config.max_num_considered_actions > space.n:
        raise invalid("max_num_considered_actions", config.max_num_considered_actions,
                      f"must be at most the {space.n} actions of {env.name}")


def make(config: Config, env, env_params) -> Agent:
    """Builds AlphaZero's pure functions for `env` (discrete actions, deterministic step)."""
    validate(config, env, env_params)
    num_actions = env.action_space(env_params).n
    considered = config.max_num_considered_actions or min(16, num_actions)
    obs_shape = tuple(env.observation_space(env_params).shape)
    play_params = env_params.replace(opponent=None) if hasattr(env_params, "opponent") else env_params
    network = PolicyValueNetwork(num_actions, config.hidden_sizes, config.activation, len(obs_shape))
    optimizer = make_optimizer()
    _, abstract_state = jax.eval_shape(env.reset, jax.random.key(0), play_params)
    two_player = S.is_two_player(abstract_state)

    def predict(net_params, obs):
        return network.apply(net_params, obs)

    recurrent_fn = S.true_model(env, play_params, predict, num_actions, two_player, config.gamma)

    def observe(env_state):
        return jax.vmap(env.get_obs, in_axes=(0, None))(env_state, play_params)

    def first_mover(env_state, batch):
        return env_state.current_player if two_player else jnp.zeros(batch, jnp.int32)

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> State:
        """`hparams`: tunable hyperparameters replacing the config's (e.g. one sweep setting)."""
        key, key_net, key_env = jax.random.split(key, 3)
        env_state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(key_env, config.num_envs), play_params)[1]
        net_params = network.init(key_net, observe(env_state))
        n = config.num_envs
        episode = {"return": jnp.zeros(n), "length": jnp.zeros(n, jnp.int32),
                   "first": first_mover(env_state, n)}
        c = config.buffer_size
        replay = Replay(jnp.zeros((c, *obs_shape)), jnp.zeros((c, num_actions)), jnp.zeros(c),
                        jnp.zeros(c, bool), jnp.int32(0), jnp.int32(0))
        return State(Params(net_params), optimizer.init(net_params), env_state, episode, replay,
                     key, HParams.from_config(config, hparams), jnp.int32(0))

    def self_play(state: State, key: jax.Array):
        n = config.num_envs

        def move(carry, key):
            env_state, ep = carry
            key_search, key_step = jax.random.split(key)
            obs = observe(env_state)
            out = S.search(state.params.network, key_search, predict, recurrent_fn, obs,
                           env_state, S.legal_action_mask(env_state, n, num_actions),
                           config.num_simulations, considered)
            mover = first_mover(env_state, n)
            _, env_state, reward, term, trunc, _ = jax.vmap(
                env.step, in_axes=(0, 0, 0, None))(jax.random.split(key_step, n), env_state,
                                                   out.action, play_params)
            ended = term | trunc
            sign = jnp.where(mover == ep["first"], 1.0, -1.0)
            ret = ep["return"] + sign * reward
            length = ep["length"] + 1
            done = {"done": ended, "return": ret, "length": length}
            ep = {"return": jnp.where(ended, 0.0, ret), "length": jnp.where(ended, 0, length),
                  "first": jnp.where(ended, first_mover(env_state, n), ep["first"])}
            record = (obs, out.action_weights, reward, S.step_discount(ended, two_player,
                                                                       config.gamma), term, trunc)
            return (env_state, ep), (record, done)

        (env_state, episode), (record, done) = jax.lax.scan(
            move, (state.env_state, state.episode), jax.random.split(key, config.num_steps))
        return env_state, episode, record, done

    def store(replay: Replay, obs, policy, value, known) -> Replay:
        m, c = obs.shape[0], config.buffer_size
        slots = (replay.pos + jnp.arange(m)) % c
        return Replay(replay.obs.at[slots].set(obs), replay.policy.at[slots].set(policy),
                      replay.value.at[slots].set(value), replay.known.at[slots].set(known),
                      (replay.pos + m) % c, jnp.minimum(replay.size + m, c))

    def loss_fn(net_params, batch, value_coef):
        obs, policy, value, known = batch
        logits, v = predict(net_params, obs)
        policy_loss = optax.softmax_cross_entropy(logits, policy).mean()
        weight = known.astype(jnp.float32)
        value_loss = (weight * jnp.square(v - value)).sum() / jnp.maximum(weight.sum(), 1.0)
        loss = policy_loss + value_coef * value_loss
        return loss, {"loss": loss, "policy_loss": policy_loss, "value_loss": value_loss}

    def learn(state: State, replay: Replay, key: jax.Array):
        hp = state.hparams

        def step(carry, key):
            net_params, opt_state = carry
            idx = jax.random.randint(key, (config.batch_size,), 0, replay.size)
            batch = (replay.obs[idx], replay.policy[idx], replay.value[idx], replay.known[idx])
            grads, stats = jax.grad(loss_fn, has_aux=True)(net_params, batch, hp.value_coef)
            updates, opt_state = optimizer.update(grads, opt_state, learning_rate=hp.learning_rate,
                                                  max_grad_norm=hp.max_grad_norm)
            return (jax.tree.map(jnp.add, net_params, updates), opt_state), stats

        (net_params, opt_state), stats = jax.lax.scan(
            step, (state.params.network, state.opt_state),
            jax.random.split(key, config.gradient_steps))
        return net_params, opt_state, jax.tree.map(jnp.mean, stats)

    def update(state: State) -> tuple[State, dict[str, jax.Array]]:
        key, key_play, key_learn = jax.random.split(state.key, 3)
        env_state, episode, record, done = self_play(state, key_play)
        positions, policy, reward, discount, term, trunc = record
        value, known = S.outcome_targets(reward, discount, term, trunc)
        m = config.units_per_iteration
        replay = store(state.replay, positions.reshape(m, *obs_shape),
                       policy.reshape(m, num_actions), value.reshape(m), known.reshape(m))
        net_params, opt_state, stats = learn(state, replay, key_learn)
        metrics = {**envs.summarize_episodes(done), "known_targets": known.mean(), **stats}
        state = state.replace(params=Params(net_params), opt_state=opt_state,
                              env_state=env_state, episode=episode, replay=replay,
                              key=key, iteration=state.iteration + 1)
        return state, metrics

    def act(params: Params, env_state: Any, key: jax.Array, deterministic: bool = False):
        """Actions for environment states, batched [B] or not: the search's choice, with
        Gumbel noise and `num_simulations` unless `deterministic` (no noise,
        `eval_simulations`)."""
        single = jax.tree.leaves(env_state)[0].ndim == jax.tree.leaves(abstract_state)[0].ndim
        states = jax.tree.map(lambda x: x[None], env_state) if single else env_state
        obs = observe(states)
        sims = config.eval_simulations if deterministic else config.num_simulations
        out = S.search(params.network, key, predict, recurrent_fn, obs, states,
                       S.legal_action_mask(states, obs.shape[0], num_actions), sims, considered,
                       0.0 if deterministic else 1.0)
        return out.action[0] if single else out.action

    return Agent(init, update, act)


def make_train(config: Config, env, env_params):
    """`train(key) -> (final state, metrics [num_iterations])`: init, then scan(update)."""
    return train_loop(make(config, env, env_params), config.num_iterations)
