"""Deep Q-Networks (Mnih et al. 2015) and their common variants, as config flags.

One iteration of `update`:
  1. act epsilon-greedily for `num_steps` steps in each of `num_envs` environments, epsilon
     annealed linearly from `epsilon_start` to `epsilon_end` over `epsilon_decay_steps`;
  2. store the steps in the replay buffer held in the state (`agents.common.replay`);
  3. once `learning_starts` environment steps are stored, take `gradient_steps` Adam steps,
     each on `batch_size` n-step windows drawn uniformly from the buffer, regressing
     Q(s, a) onto

         G + discount * Q_target(s', argmax_a Q(s', a))      double Q-learning, or
         G + discount * max_a Q_target(s', a)                 with double_q=False,

     G and discount from `n_step_return` (stopping at termination, bootstrapping a
     truncated episode from its final observation) with a Huber or squared loss;
  4. every `target_update_interval` environment steps, move the target network towards
     the online one: target <- tau * online + (1 - tau) * target (tau = 1: a copy).

Variants: double Q-learning (van Hasselt et al. 2016), a dueling head (Wang et al. 2016),
n-step returns, hard or Polyak target updates, Huber or squared loss. Observations of
rank 3 (MinAtar) go through a convolutional torso.

    env, env_params = envs.make("CartPole-v1")
    agent = dqn.make(dqn.Config(), env, env_params)
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
    check_replay,
    check_sizes,
    hparams_from_config,
    epsilon_greedy,
    invalid,
    linear_epsilon,
    linear_schedule,
    make_optimizer,
    make_replay,
    max_episode_steps,
    n_step_return,
    normalize_fields,
    polyak,
    q_learning_target,
    td_loss,
    train_loop,
)
from agents.common.networks import ACTIVATIONS
from agents.common.replay import ReplayState, Steps

SCORE = Score(metric="episode_return", higher_is_better=True, weight="episodes", label="return")
"""Results are judged by the mean return of the episodes that ended."""
NAN_METRICS = ("episode_return", "episode_length", "loss", "q_value")
"""NaN in an iteration in which no episode ended (the returns) or before learning starts
(the loss and the mean Q-value of the actions taken)."""
ACT_INPUT = "observation"
"""`act` takes raw environment observations, batched or not."""
ACTION_SPACES = ("discrete",)
"""The action spaces DQN acts in."""


@dataclasses.dataclass(frozen=True)
class Config(EnvStepsConfig):
    """DQN settings. Defaults solve CartPole-v1 in 5e5 steps (README, Value-based agents)."""

    SHAPE_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"total_timesteps", "num_envs", "num_steps", "gradient_steps", "buffer_size",
         "batch_size", "n_step", "hidden_sizes"})

    total_timesteps: int = 500_000
    """Environment steps in the whole run, summed over the parallel environments."""
    num_envs: int = 10
    """Parallel environments stepped in lockstep."""
    num_steps: int = 1
    """Steps per environment in each iteration, before its gradient steps."""
    gradient_steps: int = 1
    """Gradient steps per iteration (the replay ratio is gradient_steps * batch_size per
    num_envs * num_steps new transitions)."""
    buffer_size: int = 50_000
    """Transitions the replay buffer holds (over all environments); the oldest are replaced.
    CartPole's default holds the last 5,000 steps of each of the 10 environments (1.5 MB)."""
    batch_size: int = 128
    """Transitions (n-step windows) per gradient step."""
    learning_starts: int = 10_000
    """Environment steps collected before the first gradient step."""
    learning_rate: float = 2.5e-4
    """Adam step size (tunable)."""
    anneal_lr: bool = False
    """Anneal the learning rate linearly to 0 over the run."""
    gamma: float = 0.99
    """Discount factor (tunable)."""
    n_step: int = 3
    """Steps per return before bootstrapping (n-step Q-learning; 1: one-step targets)."""
    double_q: bool = True
    """Double Q-learning: the online network picks the bootstrap action, the target
    network values it."""
    dueling: bool = False
    """Dueling head: Q = V + A - mean(A)."""
    huber: bool = False
    """Huber loss on the TD error (threshold 1); False: half the squared error (on CartPole
    the Huber loss let the Q-values grow without bound in our runs)."""
    target_update_interval: int = 500
    """Environment steps between target updates (1 with a small tau: Polyak averaging
    every iteration)."""
    tau: float = 0.2
    """Target update rate in (0, 1]: 1 copies the online network (tunable). With 0.2 every
    500 steps all 16 benchmark seeds end at the maximum return on CartPole; with copies
    (1.0) 3 of 16 ended below 400."""
    epsilon_start: float = 1.0
    """Exploration rate at the start (tunable)."""
    epsilon_end: float = 0.05
    """Exploration rate after the decay (tunable)."""
    epsilon_decay_steps: int = 250_000
    """Environment steps over which epsilon decays linearly (tunable)."""
    max_grad_norm: float = 10.0
    """Global gradient norm clip (tunable)."""
    hidden_sizes: tuple[int, ...] = (120, 84)
    """Hidden layer widths of the Q-network (after the conv layer on image observations)."""
    activation: str = "relu"
    """Hidden activation: relu or tanh."""

    def __post_init__(self):
        normalize_fields(self)
        check_positive_int(self, "total_timesteps", "num_envs", "num_steps", "gradient_steps",
                           "buffer_size", "batch_size", "n_step", "target_update_interval",
                           "epsilon_decay_steps")
        check_replay(self, self.n_step)
        check_real(self, "learning_rate", 0.0, low_open=True)
        check_real(self, "gamma", 0.0, 1.0)
        check_real(self, "tau", 0.0, 1.0, low_open=True)
        check_real(self, "epsilon_start", 0.0, 1.0)
        check_real(self, "epsilon_end", 0.0, 1.0)
        check_real(self, "max_grad_norm", 0.0, low_open=True)
        check_sizes(self, "hidden_sizes")
        check_choice(self, "activation", ACTIVATIONS)

    @property
    def capacity(self) -> int:
        """Steps the buffer keeps per environment: buffer_size // num_envs."""
        return self.buffer_size // self.num_envs


PRESETS: dict[str, Config] = {
    "cartpole": Config(),
    # PureJaxRL's dqn.py CartPole configuration, to compare like with like
    # (benchmarks/off_policy.py): a 1e4 buffer, one-step targets, no double Q, hard target
    # copies, no gradient clipping.
    "reference": Config(buffer_size=10_000, n_step=1, double_q=False, tau=1.0,
                        max_grad_norm=1e10),
}
"""Named configurations: `dqn.PRESETS["reference"]`, or `--preset reference` on the CLI."""


# --------------------------------------------------------------------------- state


@struct.dataclass
class Params:
    """Everything the greedy policy needs: the online Q-network's weights."""

    network: Any


@struct.dataclass
class HParams:
    """Tunable hyperparameters as arrays, so a vmap over states sweeps them."""

    learning_rate: jax.Array  # []
    gamma: jax.Array  # []
    tau: jax.Array  # []
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
    target_network: Any  # target Q-network weights
    opt_state: Any
    replay: ReplayState  # [capacity, num_envs, ...] (agents.common.replay)
    env_state: Any  # wrapped, batched environment state [num_envs]
    obs: jax.Array  # [num_envs, *obs_shape] observation to act on next
    key: jax.Array
    hparams: HParams
    iteration: jax.Array  # [] int32, updates done so far


# --------------------------------------------------------------------------- agent


def validate(config: Config, env, env_params) -> None:
    """Checks that depend on the environment (the rest run in Config.__post_init__)."""
    space = env.action_space(env_params)
    if not isinstance(space, spaces.Discrete):
        raise ValueError(f"env: DQN needs a Discrete action space, and {env.name} has {space}")


def make(config: Config, env, env_params) -> Agent:
    """Builds DQN's pure functions for `env` (a gymnax environment with discrete actions)."""
    validate(config, env, env_params)
    num_actions = env.action_space(env_params).n
    obs_shape = tuple(env.observation_space(env_params).shape)
    venv = envs.VecEnv(envs.EpisodeStatistics(env), config.num_envs)
    network = QNetwork(num_actions, config.hidden_sizes, config.activation, len(obs_shape),
                       dueling=config.dueling)
    optimizer = make_optimizer()
    replay = make_replay(config.capacity, config.num_envs, config.n_step,
                         max_episode_steps(env_params))

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> State:
        """`hparams`: tunable hyperparameters replacing the config's (e.g. one sweep setting)."""
        key, key_net, key_env = jax.random.split(key, 3)
        obs, env_state = venv.reset(key_env, env_params)
        net_params = network.init(key_net, obs)
        action = jnp.zeros((config.num_envs,), jnp.int32)
        flags = jnp.zeros((config.num_envs,), bool)
        example = Steps(obs, action, jnp.zeros((config.num_envs,)), flags, flags, obs)
        return State(Params(net_params), net_params, optimizer.init(net_params),
                     replay.init(example), env_state, obs, key,
                     HParams.from_config(config, hparams), jnp.int32(0))

    def collect(state: State, key: jax.Array, epsilon: jax.Array):
        def step(carry, key):
            env_state, obs = carry
            key_act, key_step = jax.random.split(key)
            q = network.apply(state.params.network, obs)
            action = epsilon_greedy(key_act, q, epsilon)
            next_obs, env_state, reward, terminated, truncated, info = venv.step(
                key_step, env_state, action, env_params)
            steps = Steps(obs, action, reward.astype(jnp.float32), terminated, truncated,
                          info["final_observation"])
            return (env_state, next_obs), (steps, info["episode"])

        keys = jax.random.split(key, config.num_steps)
        (env_state, obs), (steps, episode) = jax.lax.scan(step, (state.env_state, state.obs), keys)
        return env_state, obs, steps, episode

    def loss_fn(net_params, target_params, batch, hp: HParams):
        q_tm1 = network.apply(net_params, batch.obs)  # [B, num_actions]
        q_t_target = network.apply(target_params, batch.next_obs)
        q_t_online = network.apply(net_params, batch.next_obs) if config.double_q else q_t_target
        ret, discount = jax.vmap(n_step_return, in_axes=(0, 0, 0, None))(
            batch.reward, batch.terminated, batch.truncated, hp.gamma)
        target = jax.vmap(q_learning_target)(ret, discount, q_t_target,
                                             jax.lax.stop_gradient(q_t_online))
        loss = jax.vmap(td_loss, in_axes=(0, 0, 0, None))(q_tm1, batch.action, target,
                                                           config.huber).mean()
        q_taken = jnp.take_along_axis(q_tm1, batch.action[:, None], axis=1)
        return loss, {"loss": loss, "q_value": q_taken.mean()}

    def learn(state: State, replay_state: ReplayState, key: jax.Array, learning_rate):
        hp = state.hparams

        def gradient_step(carry, key):
            net_params, opt_state = carry
            batch = replay.sample(replay_state, key, config.batch_size)
            grads, stats = jax.grad(loss_fn, has_aux=True)(net_params, state.target_network,
                                                           batch, hp)
            updates, opt_state = optimizer.update(grads, opt_state, learning_rate=learning_rate,
                                                  max_grad_norm=hp.max_grad_norm)
            return (jax.tree.map(jnp.add, net_params, updates), opt_state), stats

        (net_params, opt_state), stats = jax.lax.scan(
            gradient_step, (state.params.network, state.opt_state),
            jax.random.split(key, config.gradient_steps))
        return net_params, opt_state, jax.tree.map(jnp.mean, stats)

    def update(state: State) -> tuple[State, dict[str, jax.Array]]:
        hp = state.hparams
        key, key_collect, key_learn = jax.random.split(state.key, 3)
        steps_before = state.iteration * config.units_per_iteration
        steps_after = steps_before + config.units_per_iteration

        # 1-2. Act epsilon-greedily, store the steps.
        epsilon = linear_epsilon(steps_before, hp.epsilon_start, hp.epsilon_end,
                                 hp.epsilon_decay_steps)
        env_state, obs, steps, episode = collect(state, key_collect, epsilon)
        replay_state = replay.add(state.replay, steps)

        # 3. Learn, once learning_starts steps are stored (under a vmap over runs a
        #    lax.cond would compute both branches anyway: compute, then keep or drop).
        learning_rate = (linear_schedule(hp.learning_rate, state.iteration, config.num_iterations)
                         if config.anneal_lr else hp.learning_rate)
        net_params, opt_state, stats = learn(state, replay_state, key_learn, learning_rate)
        learning = jnp.logical_and(steps_after >= config.learning_starts,
                                   replay.can_sample(replay_state))
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(learning, n, o), new, old)
        net_params, opt_state = keep((net_params, opt_state),
                                     (state.params.network, state.opt_state))

        # 4. Target update when a multiple of target_update_interval steps is crossed.
        due = jnp.logical_and(
            learning, steps_after // config.target_update_interval
            > steps_before // config.target_update_interval)
        target = jax.tree.map(lambda n, o: jnp.where(due, n, o),
                              polyak(net_params, state.target_network, hp.tau),
                              state.target_network)

        state = state.replace(params=Params(net_params), target_network=target,
                              opt_state=opt_state, replay=replay_state, env_state=env_state,
                              obs=obs, key=key, iteration=state.iteration + 1)
        metrics = {**envs.summarize_episodes(episode), "epsilon": epsilon,
                   "learning": learning.astype(jnp.float32),
                   **{k: jnp.where(learning, v, jnp.nan) for k, v in stats.items()}}
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
