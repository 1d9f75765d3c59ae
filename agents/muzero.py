"""MuZero (Schrittwieser et al. 2020, "Mastering Atari, Go, chess and shogi by planning with
a learned model") with Gumbel search (Danihelka et al. 2022).

Search steps through a learned model: a representation function maps the observation to a
latent state, a dynamics function maps (latent state, action) to the next latent state and
the move's reward, a prediction function maps a latent state to a policy and a value
(`agents.common.MuZeroNetwork`). Values and rewards are categorical over the support of the
h-transformed scalar (`agents.common.categorical`).

One iteration of `update` (the loop is `agents.common.planning.make_search_agent`'s, shared
with AlphaZero; MuZero's part is its model and its loss):
  1. self-play: `num_steps` moves in each of `num_envs` environments, each chosen by
     `mctx.gumbel_muzero_policy` with `num_simulations` simulations through the learned
     model (illegal moves masked at the root, where the state tells them);
  2. the moves go into a replay of the `buffer_size` most recent moves (whole trajectories);
  3. `gradient_steps` Adam steps, each on `batch_size` windows of `unroll_steps + td_steps + 1`
     consecutive moves drawn uniformly from the replay: the model is unrolled `unroll_steps`
     moves from the first position along the moves played, and at every unrolled step the
     loss is the cross-entropy of
       - the policy to the search's improved policy (`action_weights`) at that position,
       - the value to the `td_steps`-step return bootstrapped from a target network's value
         (`planning.n_step_values`; two-player games: discount -1 between turns),
       - the reward (steps after the first) to the reward of the move played,
     value and reward targets as two-hot distributions of h(target). Past a game's end the
     model is taught an absorbing state: reward 0, value 0, no policy loss. The unrolled steps
     weigh 1 / unroll_steps each and the gradient into each next latent state is halved
     (MuZero's scaling). The target network follows the online one by Polyak averaging.

`act(params, env_state, key, deterministic=False)` takes environment states, as AlphaZero's
does: the observation and, for a board game, the legal moves come from the state; the model
searched is the learned one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import struct

from agents.common import MuZeroNetwork, Score, check_positive_int, check_real, invalid
from agents.common import categorical as C
from agents.common import hparams_from_config, train_loop
from agents.common import planning as P
from agents.common.planning import Params, State  # noqa: F401  (the agent's state types)

SCORE = Score(metric="episode_return", higher_is_better=True, weight="episodes", label="return")
"""Self-play episode returns (two players: the first mover's result)."""
NAN_METRICS = ("episode_return", "episode_length")
"""NaN in an iteration in which no episode ended."""
ACT_INPUT = "env_state"
"""`act` searches from environment states (observation and legal moves)."""
ACTION_SPACES = ("discrete",)


@dataclasses.dataclass(frozen=True)
class Config(P.SearchConfig):
    """MuZero settings: `planning.SearchConfig`'s and the model's. Defaults are sized for
    small control tasks (CartPole-v1)."""

    SHAPE_FIELDS: ClassVar[frozenset[str]] = P.SearchConfig.SHAPE_FIELDS | {
        "unroll_steps", "td_steps", "support_size", "embedding_size"}

    num_envs: int = 16
    num_steps: int = 20
    num_simulations: int = 16
    eval_simulations: int = 32
    buffer_size: int = 32_768
    batch_size: int = 128
    gradient_steps: int = 16
    learning_rate: float = 3e-3
    gamma: float = 0.99
    hidden_sizes: tuple[int, ...] = (64, 64)
    unroll_steps: int = 5
    """K: moves the model is unrolled along in the loss."""
    td_steps: int = 10
    """n: moves of rewards in a value target before bootstrapping from the target network."""
    support_size: int = 10
    """S: value and reward heads are categorical over {-S, ..., S} (h-transformed scalars;
    S = 10 covers returns up to about 120)."""
    embedding_size: int = 64
    """Units of the latent state."""
    reward_coef: float = 1.0
    """Weight of the reward loss (tunable)."""
    target_tau: float = 0.01
    """Polyak step of the target network after each gradient step (1: a copy)."""

    def __post_init__(self):
        super().__post_init__()
        check_positive_int(self, "unroll_steps", "td_steps", "support_size", "embedding_size")
        check_real(self, "reward_coef", 0.0)
        check_real(self, "target_tau", 0.0, 1.0, low_open=True)
        window = self.unroll_steps + self.td_steps + 1
        if self.capacity < window:
            raise invalid("buffer_size", self.buffer_size,
                          f"must keep a window of unroll_steps + td_steps + 1 = {window} moves "
                          f"per game: buffer_size // num_envs = {self.capacity}")


PRESETS: dict[str, Config] = {
    # Catch-bsuite: 25,600 env steps; 10x5 grid, 9 moves an episode, reward at the end.
    "catch": Config(total_timesteps=25_600, num_envs=8, num_simulations=16,
                    max_num_considered_actions=3, buffer_size=8192, gradient_steps=32,
                    hidden_sizes=(128,), embedding_size=64, support_size=2),
    # CartPole-v1: 2e5 env steps.
    "cartpole": Config(total_timesteps=200_000),
}
"""Named configurations: `muzero.PRESETS["catch"]`, or `--preset catch` on the CLI."""


@struct.dataclass
class HParams:
    """Tunable hyperparameters as arrays, so a vmap over states sweeps them."""

    learning_rate: jax.Array  # []
    value_coef: jax.Array  # []
    reward_coef: jax.Array  # []
    max_grad_norm: jax.Array  # []

    @classmethod
    def from_config(cls, config: Config, overrides: Mapping[str, Any] | None = None) -> HParams:
        return hparams_from_config(cls, config, overrides)


def scale_gradient(x: jax.Array, scale: float) -> jax.Array:
    """x forward; its gradient times `scale` backward."""
    return x * scale + jax.lax.stop_gradient(x) * (1.0 - scale)


def unroll_targets(reward, discount, terminated, truncated, filled, bootstrap, policy,
                   unroll_steps: int, td_steps: int):
    """MuZero's targets along the unroll from windows of stored moves.

    Args:
      reward: [B, W] along windows of W >= unroll_steps + td_steps + 1 consecutive moves
        (this and the next four are `planning.Trajectories` fields).
      discount: [B, W] the move's discount.
      terminated: [B, W] the move ended the game.
      truncated: [B, W] the game was cut at the move without an outcome.
      filled: [B, W] the move is stored.
      bootstrap: [B, W] the target network's value of each position.
      policy: [B, W, A] the search's improved policy at each position.

    Returns:
      (policy [B, K+1, A], policy weight [B, K+1], value [B, K+1], value known [B, K+1],
      reward [B, K], reward known [B, K]), K = unroll_steps; reward k is that of the move
      made at unrolled position k. Values are `planning.n_step_values` over td_steps moves.
      Past the first stored move that ended the game: after a termination the model is taught
      an absorbing state (reward 0 and value 0, known; no policy); after a truncation (a time
      limit, not the game's end) nothing is known.
    """
    k_steps = unroll_steps
    b = reward.shape[0]
    value, value_known = P.n_step_values(reward, discount, terminated, truncated, filled,
                                         bootstrap, td_steps, k_steps + 1)
    end = ((terminated | truncated) & filled)[:, :k_steps]
    past = jnp.concatenate([jnp.zeros((b, 1), bool), jnp.cumsum(end, axis=1) > 0], 1)
    first_end = jnp.argmax(end, axis=1)[:, None]
    ended_by_term = jnp.take_along_axis(terminated[:, :k_steps], first_end, axis=1)
    absorbing, cut, alive = past & ended_by_term, past & ~ended_by_term, ~past
    stored = filled[:, :k_steps + 1]
    value = jnp.where(alive, value, 0.0)
    value_known = jnp.where(absorbing, True, value_known & ~cut)
    step_reward = jnp.where(alive[:, :k_steps], reward[:, :k_steps], 0.0)
    reward_known = jnp.where(absorbing[:, :k_steps], True, stored[:, :k_steps] & ~cut[:, :k_steps])
    return (policy[:, :k_steps + 1], alive & stored, jax.lax.stop_gradient(value), value_known,
            step_reward, reward_known)


def make(config: Config, env, env_params):
    """Builds MuZero's pure functions for `env` (discrete actions).

    `act(params, env_state, key, deterministic=False)` takes environment states, batched [B]
    or not: Gumbel search through the learned model with `num_simulations`, or without noise
    and with `eval_simulations` when `deterministic`."""
    P.validate("MuZero", config, env, env_params)
    num_actions = env.action_space(env_params).n
    obs_ndim = len(env.observation_space(env_params).shape)
    network = MuZeroNetwork(num_actions, config.hidden_sizes, config.activation, obs_ndim,
                            config.embedding_size, config.support_size)
    discount = -1.0 if P.is_two_player_game(env, env_params) else config.gamma
    support = config.support_size
    k_steps, n_steps = config.unroll_steps, config.td_steps

    def represent(params, obs):
        return network.apply(params, obs, method=MuZeroNetwork.represent)

    def dynamics(params, latent, action):
        return network.apply(params, latent, action, method=MuZeroNetwork.dynamics)

    def predict(params, latent):
        return network.apply(params, latent, method=MuZeroNetwork.predict)

    def root(params, obs, env_state):
        del env_state
        latent = represent(params, obs)
        logits, value_logits = predict(params, latent)
        return logits, C.logits_to_scalar(value_logits, support), latent

    def recurrent_fn(params, key, action, latent):
        import mctx

        del key
        latent, reward_logits = dynamics(params, latent, action)
        logits, value_logits = predict(params, latent)
        out = mctx.RecurrentFnOutput(
            reward=C.logits_to_scalar(reward_logits, support),
            discount=jnp.full(action.shape, discount, jnp.float32),
            prior_logits=logits, value=C.logits_to_scalar(value_logits, support))
        return out, latent

    def targets(target_params, replay: P.Trajectories, w: P.Windows):
        """Policy, value and reward targets with their weights along the unroll, [B, K + 1]."""
        reward, disc = w.take(replay.reward), w.take(replay.discount)
        term, trunc = w.take(replay.terminated), w.take(replay.truncated)
        obs = w.take(replay.obs)
        boot_obs = obs[:, n_steps:]  # positions n .. n + K
        b, m = boot_obs.shape[:2]
        _, boot_logits = predict(target_params,
                                 represent(target_params, boot_obs.reshape(b * m, *obs.shape[2:])))
        boot = C.logits_to_scalar(boot_logits, support).reshape(b, m)
        boot = jnp.concatenate([jnp.zeros((b, n_steps)), boot], axis=1)
        return unroll_targets(reward, disc, term, trunc, w.filled, boot, w.take(replay.policy),
                              k_steps, n_steps)

    def loss(params, target_params, replay: P.Trajectories, prepared, key, hparams):
        del prepared
        w = P.sample_windows(replay, key, config.batch_size, k_steps + n_steps + 1)
        policy_t, policy_w, value_t, value_w, reward_t, reward_w = targets(target_params, replay, w)
        actions = w.take(replay.action)
        latent = represent(params, w.take(replay.obs)[:, 0])
        policy_l, value_l, reward_l = [], [], []
        for k in range(k_steps + 1):
            logits, value_logits = predict(params, latent)
            policy_l.append(optax.softmax_cross_entropy(logits, policy_t[:, k]))
            value_l.append(optax.softmax_cross_entropy(
                value_logits, C.scalar_to_probs(value_t[:, k], support)))
            if k < k_steps:
                latent, reward_logits = dynamics(params, latent, actions[:, k])
                latent = scale_gradient(latent, 0.5)
                reward_l.append(optax.softmax_cross_entropy(
                    reward_logits, C.scalar_to_probs(reward_t[:, k], support)))
        # Step 0 weighs 1, each unrolled step 1 / K.
        step_weight = jnp.concatenate([jnp.ones(1), jnp.full(k_steps, 1.0 / k_steps)])

        def mean(losses, weight, steps):  # sum over the unroll, mean over the batch
            return (jnp.stack(losses, 1) * weight * steps).sum() / config.batch_size

        policy_loss = mean(policy_l, policy_w, step_weight)
        value_loss = mean(value_l, value_w, step_weight)
        reward_loss = mean(reward_l, reward_w, step_weight[1:])
        total = policy_loss + hparams.value_coef * value_loss + hparams.reward_coef * reward_loss
        return total, {"loss": total, "policy_loss": policy_loss, "value_loss": value_loss,
                       "reward_loss": reward_loss,
                       "known_targets": value_w[:, 0].astype(jnp.float32).mean()}

    model = P.SearchModel(init=network.init, root=root, recurrent_fn=recurrent_fn, loss=loss,
                          target_tau=config.target_tau)
    return P.make_search_agent(config, env, env_params, model, HParams.from_config)


def make_train(config: Config, env, env_params):
    """`train(key) -> (final state, metrics [num_iterations])`: init, then scan(update)."""
    return train_loop(make(config, env, env_params), config.num_iterations)
