"""AlphaZero (Silver et al. 2018) with Gumbel search (Danihelka et al. 2022, "Policy
improvement by planning with Gumbel"): the environment's own step is the model.

One iteration of `update`:
  1. self-play: `num_steps` moves in each of `num_envs` games (or episodes of a single-player
     environment), each move chosen by `mctx.gumbel_muzero_policy` with `num_simulations`
     simulations (Gumbel noise on, illegal moves masked at every node);
  2. the moves go into a replay of the `buffer_size` most recent moves (whole trajectories,
     `agents.common.planning`);
  3. value targets from outcomes over the replay (`planning.outcome_values`): the return of
     the position's game from the view of its mover (two players: +1 win, 0 draw, -1 loss,
     discount -1 between turns; one player: rewards discounted by gamma), known where the
     game has ended; policy targets: the search's improved policy (`action_weights`);
  4. `gradient_steps` Adam steps on `batch_size` positions drawn uniformly from the replay:
     cross-entropy to the policy target plus `value_coef` times the squared error to the
     known value targets.

The loop is `agents.common.planning.make_search_agent`'s, shared with MuZero; AlphaZero's part
is its model (the environment's step, `search.true_model`) and its loss.

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
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from agents.common import PolicyValueNetwork, Score, hparams_from_config, train_loop
from agents.common import planning as P
from agents.common import search as S
from agents.common.planning import Params, State  # noqa: F401  (the agent's state types)

SCORE = Score(metric="episode_return", higher_is_better=True, weight="episodes", label="return")
"""Self-play episode returns (two players: the first mover's result); evaluate a board game
against an opponent through the environment's parameters."""
NAN_METRICS = ("episode_return", "episode_length")
"""NaN in an iteration in which no episode ended."""
ACT_INPUT = "env_state"
"""`act` searches from environment states (the model is the environment's step)."""
ACTION_SPACES = ("discrete",)


@dataclasses.dataclass(frozen=True)
class Config(P.SearchConfig):
    """AlphaZero settings (all `planning.SearchConfig`'s). Defaults are sized for small board
    games (TicTacToe-v0)."""


PRESETS: dict[str, Config] = {
    # TicTacToe-v0 by self-play: 3e5 moves, 32 gradient steps per iteration, the most recent
    # 65,536 moves, two random opening moves and a random move with probability 0.1 after
    # them (about 2.5 minutes for 2 seeds on 2 CPU cores; benchmarks/README.md).
    "tictactoe": Config(total_timesteps=300_000, buffer_size=65_536, random_opening_moves=2,
                        random_move_probability=0.1),
    # ConnectFour-v0 by self-play (a 3x3 conv torso on the 6x7x2 board): 8e6 moves, about
    # 40 minutes for one seed on 2 CPU cores.
    "connectfour": Config(total_timesteps=8_000_000, num_envs=128, num_steps=16,
                          buffer_size=131_072, batch_size=512, gradient_steps=32,
                          random_opening_moves=2, hidden_sizes=(256, 256)),
    # Catch-bsuite (single player, deterministic step): 10x5 grid, 9 moves an episode.
    "catch": Config(total_timesteps=12_800, num_envs=16, num_steps=20, num_simulations=16,
                    max_num_considered_actions=3, buffer_size=4096, batch_size=128,
                    gradient_steps=8, learning_rate=3e-3, gamma=0.99, hidden_sizes=(64, 64)),
}
"""Named configurations: `alphazero.PRESETS["catch"]`, or `--preset catch` on the CLI."""


@struct.dataclass
class HParams:
    """Tunable hyperparameters as arrays, so a vmap over states sweeps them."""

    learning_rate: jax.Array  # []
    value_coef: jax.Array  # []
    max_grad_norm: jax.Array  # []

    @classmethod
    def from_config(cls, config: Config, overrides: Mapping[str, Any] | None = None) -> HParams:
        return hparams_from_config(cls, config, overrides)


def validate(config: Config, env, env_params) -> None:
    """Checks that depend on the environment (the rest run in Config.__post_init__)."""
    P.validate("AlphaZero", config, env, env_params)
    S.check_deterministic_step(env, P.self_play_params(env_params), "AlphaZero")


def loss_fn(predict, batch_size: int):
    """AlphaZero's loss on `batch_size` positions of the replay: cross-entropy to the search's
    policy plus value_coef times the squared error to the known outcome values."""

    def loss(net_params, target, replay: P.Trajectories, prepared, key, hparams):
        del target
        value_target, known = prepared
        w = P.sample_windows(replay, key, batch_size, 1)
        logits, v = predict(net_params, w.take(replay.obs)[:, 0])
        policy_loss = optax.softmax_cross_entropy(logits, w.take(replay.policy)[:, 0]).mean()
        weight = w.take(known)[:, 0].astype(jnp.float32)
        value_loss = (weight * jnp.square(v - w.take(value_target)[:, 0])).sum() / jnp.maximum(
            weight.sum(), 1.0)
        total = policy_loss + hparams.value_coef * value_loss
        return total, {"loss": total, "policy_loss": policy_loss, "value_loss": value_loss,
                       "known_targets": weight.mean()}

    return loss


def make(config: Config, env, env_params):
    """Builds AlphaZero's pure functions for `env` (discrete actions, deterministic step).

    `act(params, env_state, key, deterministic=False)` takes environment states, batched [B]
    or not: Gumbel search with `num_simulations`, or without noise and with `eval_simulations`
    when `deterministic`."""
    validate(config, env, env_params)
    num_actions = env.action_space(env_params).n
    obs_ndim = len(env.observation_space(env_params).shape)
    network = PolicyValueNetwork(num_actions, config.hidden_sizes, config.activation, obs_ndim)
    play_params = P.self_play_params(env_params)

    def predict(net_params, obs):
        return network.apply(net_params, obs)

    def root(net_params, obs, env_state):
        logits, value = predict(net_params, obs)
        return logits, value, env_state

    model = P.SearchModel(
        init=network.init,
        root=root,
        recurrent_fn=S.true_model(env, play_params, predict, num_actions,
                                  P.is_two_player_game(env, env_params), config.gamma),
        loss=loss_fn(predict, config.batch_size),
        prepare=P.outcome_values)
    return P.make_search_agent(config, env, env_params, model, HParams.from_config)


def make_train(config: Config, env, env_params):
    """`train(key) -> (final state, metrics [num_iterations])`: init, then scan(update)."""
    return train_loop(make(config, env, env_params), config.num_iterations)
