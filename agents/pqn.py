"""PQN: Parallelised Q-Network (Gallici et al. 2024, "Simplifying Deep Temporal
Difference Learning"). No replay buffer and no target network: many parallel
environments and LayerNorm keep Q-learning stable.

One iteration of `update`:
  1. act epsilon-greedily for `num_steps` steps in each of `num_envs` environments,
     epsilon annealed linearly from `epsilon_start` to `epsilon_end` over
     `epsilon_decay_steps` environment steps;
  2. compute Peng's Q(lambda) targets over the rollout with the network that collected it
     (`q_lambda_targets`): traces stop at episode ends, a terminated step does not
     bootstrap, a truncated one bootstraps from its final observation;
  3. run `update_epochs` epochs of `num_minibatches` minibatch steps regressing Q(s, a)
     onto the targets (half the squared error), Adam with global-norm clipping.

Rewards are multiplied by `reward_scale` for learning (episode returns are reported
unscaled). Observations of rank 3 (MinAtar) go through a convolutional torso.

    env, env_params = envs.make("CartPole-v1")
    agent = pqn.make(pqn.Config(), env, env_params)
    state = agent.init(key)
    state, metrics = agent.update(state)
    action = agent.act(state.params, obs, key, deterministic=True)   # greedy
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import spaces

import envs
from agents.common import (
    EnvStepsConfig,
    Agent,
    QNetwork,
    Score,
    check_choice,
    check_positive_int,
    check_real,
    check_sizes,
    hparams_from_config,
    epsilon_greedy,
    invalid,
    linear_epsilon,
    linear_schedule,
    make_optimizer,
    normalize_fields,
    q_lambda_targets,
    td_loss,
    train_loop,
)
from agents.common.networks import ACTIVATIONS

SCORE = Score(metric="episode_return", higher_is_better=True, weight="episodes", label="return")
"""Results are judged by the mean return of the episodes that ended."""
NAN_METRICS = ("episode_return", "episode_length")
"""NaN in an iteration in which no episode ended."""
ACT_INPUT = "observation"
"""`act` takes raw environment observations, batched or not."""
ACTION_SPACES = ("discrete",)
"""The action spaces PQN acts in."""


@dataclasses.dataclass(frozen=True)
class Config(EnvStepsConfig):
    """PQN settings. Defaults are the paper's CartPole-v1 configuration (purejaxql
    `pqn_cartpole.yaml`), with Adam instead of RAdam."""

    SHAPE_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"total_timesteps", "num_envs", "num_steps", "update_epochs", "num_minibatches",
         "hidden_sizes"})

    total_timesteps: int = 500_000
    """Environment steps in the whole run, summed over the parallel environments."""
    num_envs: int = 32
    """Parallel environments stepped in lockstep."""
    num_steps: int = 64
    """Steps per environment in each rollout."""
    update_epochs: int = 4
    """Passes over each rollout batch."""
    num_minibatches: int = 16
    """Minibatches per epoch; must divide num_envs * num_steps."""
    learning_rate: float = 1e-4
    """Adam step size (tunable)."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0 over the run."""
    gamma: float = 0.99
    """Discount factor (tunable)."""
    q_lambda: float = 0.95
    """Q(lambda) trace parameter: 0 gives one-step targets (tunable)."""
    reward_scale: float = 0.1
    """Rewards are multiplied by this for learning (tunable)."""
    epsilon_start: float = 1.0
    """Exploration rate at the start (tunable)."""
    epsilon_end: float = 0.2
    """Exploration rate after the decay (tunable)."""
    epsilon_decay_steps: int = 100_000
    """Environment steps over which epsilon decays linearly (tunable)."""
    max_grad_norm: float = 10.0
    """Global gradient norm clip (tunable)."""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """Hidden layer widths (after the conv layer on image observations)."""
    activation: str = "relu"
    """Hidden activation: relu or tanh."""
    layer_norm: bool = True
    """LayerNorm after every hidden layer (what lets PQN drop the target network)."""

    def __post_init__(self):
        normalize_fields(self)
        check_positive_int(self, "total_timesteps", "num_envs", "num_steps", "update_epochs",
                           "num_minibatches", "epsilon_decay_steps")
        if self.batch_size % self.num_minibatches:
            raise invalid("num_minibatches", self.num_minibatches,
                          f"must divide the batch num_envs * num_steps = {self.batch_size}")
        if self.total_timesteps < self.batch_size:
            raise invalid("total_timesteps", self.total_timesteps,
                          f"must be at least one batch, num_envs * num_steps = {self.batch_size}")
        check_real(self, "learning_rate", 0.0, low_open=True)
        check_real(self, "gamma", 0.0, 1.0)
        check_real(self, "q_lambda", 0.0, 1.0)
        check_real(self, "reward_scale", 0.0, low_open=True)
        check_real(self, "epsilon_start", 0.0, 1.0)
        check_real(self, "epsilon_end", 0.0, 1.0)
        check_real(self, "max_grad_norm", 0.0, low_open=True)
        check_sizes(self, "hidden_sizes")
        check_choice(self, "activation", ACTIVATIONS)

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches


PRESETS: dict[str, Config] = {
    "cartpole": Config(),
    # The paper's MinAtar configuration (purejaxql `pqn_minatar.yaml`): 128 environments,
    # 1e7 steps, a 3x3 conv layer then 128 units with LayerNorm.
    "minatar": Config(
        total_timesteps=10_000_000,
        num_envs=128,
        num_steps=32,
        update_epochs=2,
        num_minibatches=32,
        learning_rate=5e-4,
        q_lambda=0.65,
        reward_scale=1.0,
        epsilon_end=0.05,
        epsilon_decay_steps=1_000_000,
        hidden_sizes=(128,),
    ),
}
"""Named configurations: `pqn.PRESETS["minatar"]`, or `--preset minatar` on the CLI."""


# --------------------------------------------------------------------------- state


@struct.dataclass
class Params:
    """Everything the greedy policy needs: the Q-network's weights."""

    network: Any


@struct.dataclass
class HParams:
    """Tunable hyperparameters as arrays, so a vmap over states sweeps them."""

    learning_rate: jax.Array  # []
    gamma: jax.Array  # []
    q_lambda: jax.Array  # []
    reward_scale: jax.Array  # []
    epsilon_start: jax.Array  # []
    epsilon_end: jax.Array  # []
    epsilon_decay_steps: jax.Array  # [] int32
    max_grad_norm: jax.Array  # []

    @classmethod
    def from_config(cls, config: Config, overrides: Mapping[str, Any] | None = None) -> HParams:
        return hparams_from_config(cls, config, overrides, int_fields=("epsilon_decay_steps",))


@struct.dataclass
class State:
    params: Params
    opt_state: Any
    env_state: Any  # wrapped, batched environment state [num_envs]
    obs: jax.Array  # [num_envs, *obs_shape] observation to act on next
    key: jax.Array
    hparams: HParams
    iteration: jax.Array  # [] int32, updates done so far


@struct.dataclass
class Transition:
    obs: jax.Array  # [T, num_envs, *obs_shape]
    action: jax.Array  # [T, num_envs]
    reward: jax.Array  # [T, num_envs] scaled by reward_scale
    terminated: jax.Array  # [T, num_envs]
    truncated: jax.Array  # [T, num_envs]
    final_obs: jax.Array  # [T, num_envs, *obs_shape] the observation each step really reached


# --------------------------------------------------------------------------- agent


def validate(config: Config, env, env_params) -> None:
    """Checks that depend on the environment (the rest run in Config.__post_init__)."""
    space = env.action_space(env_params)
    if not isinstance(space, spaces.Discrete):
        raise ValueError(f"env: PQN needs a Discrete action space, and {env.name} has {space}")


def make(config: Config, env, env_params) -> Agent:
    """Builds PQN's pure functions for `env` (a gymnax environment with discrete actions)."""
    validate(config, env, env_params)
    num_actions = env.action_space(env_params).n
    obs_ndim = len(env.observation_space(env_params).shape)
    venv = envs.VecEnv(envs.EpisodeStatistics(env), config.num_envs)
    network = QNetwork(num_actions, config.hidden_sizes, config.activation, obs_ndim,
                       layer_norm=config.layer_norm)
    optimizer = make_optimizer()

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> State:
        """`hparams`: tunable hyperparameters replacing the config's (e.g. one sweep setting)."""
        key, key_net, key_env = jax.random.split(key, 3)
        obs, env_state = venv.reset(key_env, env_params)
        net_params = network.init(key_net, obs)
        return State(Params(net_params), optimizer.init(net_params), env_state, obs, key,
                     HParams.from_config(config, hparams), jnp.int32(0))

    def collect(state: State, key: jax.Array, epsilon: jax.Array):
        def step(carry, key):
            env_state, obs = carry
            key_act, key_step = jax.random.split(key)
            action = epsilon_greedy(key_act, network.apply(state.params.network, obs), epsilon)
            next_obs, env_state, reward, terminated, truncated, info = venv.step(
                key_step, env_state, action, env_params)
            transition = Transition(obs, action, reward * state.hparams.reward_scale,
                                    terminated, truncated, info["final_observation"])
            return (env_state, next_obs), (transition, info["episode"])

        keys = jax.random.split(key, config.num_steps)
        (env_state, obs), (traj, episode) = jax.lax.scan(step, (state.env_state, state.obs), keys)
        return env_state, obs, traj, episode

    def loss_fn(net_params, batch):
        traj, target = batch
        q = network.apply(net_params, traj.obs)  # [B, num_actions]
        loss = jax.vmap(td_loss, in_axes=(0, 0, 0, None))(q, traj.action, target, False).mean()
        q_taken = jnp.take_along_axis(q, traj.action[:, None], axis=1)
        return loss, {"loss": loss, "q_value": q_taken.mean()}

    def learn(state: State, key: jax.Array, batch, learning_rate):
        hp = state.hparams

        def minibatch_step(carry, minibatch):
            net_params, opt_state = carry
            grads, stats = jax.grad(loss_fn, has_aux=True)(net_params, minibatch)
            updates, opt_state = optimizer.update(grads, opt_state, learning_rate=learning_rate,
                                                  max_grad_norm=hp.max_grad_norm)
            return (jax.tree.map(jnp.add, net_params, updates), opt_state), stats

        def epoch(carry, key):
            order = jax.random.permutation(key, config.batch_size)
            shuffled = jax.tree.map(
                lambda x: x[order].reshape(config.num_minibatches, config.minibatch_size,
                                           *x.shape[1:]), batch)
            return jax.lax.scan(minibatch_step, carry, shuffled)

        (net_params, opt_state), stats = jax.lax.scan(
            epoch, (state.params.network, state.opt_state),
            jax.random.split(key, config.update_epochs))
        return net_params, opt_state, jax.tree.map(jnp.mean, stats)

    def update(state: State) -> tuple[State, dict[str, jax.Array]]:
        hp = state.hparams
        key, key_collect, key_learn = jax.random.split(state.key, 3)

        # 1. Collect.
        epsilon = linear_epsilon(state.iteration * config.batch_size, hp.epsilon_start,
                                 hp.epsilon_end, hp.epsilon_decay_steps)
        env_state, obs, traj, episode = collect(state, key_collect, epsilon)

        # 2. Q(lambda) targets, from max_a Q(s reached by each step, a).
        q_next = network.apply(state.params.network, traj.final_obs).max(axis=-1)
        target = jax.vmap(q_lambda_targets, in_axes=(1, 1, 1, 1, None, None), out_axes=1)(
            traj.reward, q_next, traj.terminated, traj.truncated, hp.gamma, hp.q_lambda)

        # 3. Learn on the flattened batch.
        flat = jax.tree.map(lambda x: x.reshape(config.batch_size, *x.shape[2:]), (traj, target))
        learning_rate = (linear_schedule(hp.learning_rate, state.iteration, config.num_iterations)
                         if config.anneal_lr else hp.learning_rate)
        net_params, opt_state, stats = learn(state, key_learn, flat, learning_rate)

        state = state.replace(params=Params(net_params), opt_state=opt_state,
                              env_state=env_state, obs=obs, key=key,
                              iteration=state.iteration + 1)
        metrics = {**envs.summarize_episodes(episode), **stats, "epsilon": epsilon,
                   "learning_rate": learning_rate}
        return state, metrics

    def act(params: Params, obs: jax.Array, key: jax.Array, deterministic: bool = False,
            epsilon: float = 0.05):
        """Actions for raw observations [..., *obs_shape]: greedy when `deterministic`, else
        epsilon-greedy with `epsilon`."""
        q = network.apply(params.network, obs)
        return jnp.argmax(q, axis=-1).astype(jnp.int32) if deterministic else (
            epsilon_greedy(key, q, epsilon))

    return Agent(init, update, act)


def make_train(config: Config, env, env_params):
    """`train(key) -> (final state, metrics [num_iterations])`: init, then scan(update)."""
    return train_loop(make(config, env, env_params), config.num_iterations)
