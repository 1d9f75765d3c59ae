"""Proximal Policy Optimization (Schulman et al. 2017), discrete or continuous actions.

One iteration of `update`:
  1. collect `num_steps` transitions from `num_envs` parallel environments;
  2. compute GAE advantages, bootstrapping truncated episodes from their final
     observation and never bootstrapping terminated ones;
  3. run `update_epochs` epochs of `num_minibatches` minibatch steps on the
     clipped surrogate + value + entropy loss.

The action space decides the policy head: categorical logits for `Discrete`,
a diagonal Gaussian with a learned state-independent log std for `Box`. The
observation's rank decides the torso: hidden layers for vectors, a 3x3 convolution
first for images (MinAtar's [10, 10, C]).

With `recurrent` (PureJaxRL's `ppo_rnn.py`) the actor and the critic share a GRU (Cho et
al. 2014) whose state each environment carries from step to step, reset to zeros at every
episode's first observation (with same-step auto-reset, the observation after a
terminated or truncated step). Step 2 bootstraps from the final observation with the GRU
state that reached it; step 3 cuts minibatches of whole environments' sequences and
re-runs the GRU over them from the rollout's first state.

    env, env_params = envs.make("CartPole-v1")
    agent = ppo.make(ppo.Config(), env, env_params)
    state = agent.init(key)
    state, metrics = agent.update(state)
    action = agent.act(state.params, obs, key, deterministic=True)
    # recurrent: the GRU state in and out, `agent.init_carry(batch_shape)` at an episode's start
    action, carry = agent.act(state.params, obs, key, deterministic=True, carry=carry)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import spaces

import envs
from agents.common import (
    EnvStepsConfig,
    ONLY_CONTINUOUS,
    ActorCritic,
    Agent,
    Score,
    approx_kl,
    check_action_space,
    check_choice,
    check_positive_int,
    check_real,
    check_sizes,
    clip_fraction,
    clipped_surrogate_loss,
    gae,
    invalid,
    linear_schedule,
    make_optimizer,
    normalize_fields,
    train_loop,
    value_loss,
)
from agents.common.networks import ACTIVATIONS, RecurrentActorCritic, ScannedGRU

SCORE = Score(metric="episode_return", higher_is_better=True, weight="episodes", label="return")
"""Results are judged by the mean return of the episodes that ended."""
NAN_METRICS = ("episode_return", "episode_length")
"""NaN in an iteration in which no episode ended."""
ACT_INPUT = "observation"
"""`act` takes raw environment observations, batched or not (and, recurrent, the GRU state)."""


@dataclasses.dataclass(frozen=True)
class Config(EnvStepsConfig):
    """PPO settings. Defaults are the reference CartPole-v1 configuration."""

    SHAPE_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"total_timesteps", "num_envs", "num_steps", "update_epochs", "num_minibatches",
         "hidden_sizes", "recurrent", "rnn_hidden_size"})

    total_timesteps: int = 500_000
    """Environment steps in the whole run, summed over the parallel environments."""
    num_envs: int = 4
    """Parallel environments stepped in lockstep."""
    num_steps: int = 128
    """Steps per environment in each rollout."""
    update_epochs: int = 4
    """Passes over each rollout batch."""
    num_minibatches: int = 4
    """Minibatches per epoch; must divide num_envs * num_steps (recurrent: num_envs)."""
    learning_rate: float = 2.5e-4
    """Adam step size (tunable: lives in the state)."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0 over the run."""
    gamma: float = 0.99
    """Discount factor (tunable)."""
    gae_lambda: float = 0.95
    """GAE lambda (tunable)."""
    clip_eps: float = 0.2
    """Clipping range of the policy ratio and, with clip_value_loss, of the value change (tunable)."""
    clip_value_loss: bool = True
    """Clip the value loss around the rollout's values, as the reference PPO."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient (tunable)."""
    vf_coef: float = 0.5
    """Value loss coefficient (tunable)."""
    max_grad_norm: float = 0.5
    """Global gradient norm clip (tunable)."""
    normalize_advantages: bool = True
    """Standardise advantages within each minibatch."""
    normalize_obs: bool = False
    """Normalise observations with running statistics (stored in state.params for acting)."""
    normalize_reward: bool = False
    """Scale rewards by the running std of the discounted return."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the actor and of the critic."""
    activation: str = "tanh"
    """Hidden activation: tanh or relu."""
    log_std_init: float = dataclasses.field(default=0.0, metadata=ONLY_CONTINUOUS)
    """Initial log standard deviation of the Gaussian policy (continuous actions only)."""
    recurrent: bool = False
    """A recurrent policy: an embedding layer, a GRU shared by the actor and the critic, then
    their heads (hidden_sizes); each minibatch is the whole rollout of num_envs //
    num_minibatches environments."""
    rnn_hidden_size: int = 128
    """Width of the GRU's state and of the embedding before it (recurrent only)."""

    def __post_init__(self):
        normalize_fields(self)
        check_positive_int(self, "total_timesteps", "num_envs", "num_steps", "update_epochs",
                           "num_minibatches", "rnn_hidden_size")
        if self.batch_size % self.num_minibatches:
            raise invalid("num_minibatches", self.num_minibatches,
                          f"must divide the batch num_envs * num_steps = {self.batch_size}")
        if self.recurrent and self.num_envs % self.num_minibatches:
            raise invalid("num_minibatches", self.num_minibatches,
                          f"must divide num_envs = {self.num_envs} with recurrent=True (a "
                          f"minibatch holds whole sequences of environments)")
        if self.total_timesteps < self.batch_size:
            raise invalid("total_timesteps", self.total_timesteps,
                          f"must be at least one batch, num_envs * num_steps = {self.batch_size}")
        check_real(self, "learning_rate", 0.0, low_open=True)
        check_real(self, "gamma", 0.0, 1.0)
        check_real(self, "gae_lambda", 0.0, 1.0)
        check_real(self, "clip_eps", 0.0, low_open=True)
        check_real(self, "ent_coef", 0.0)
        check_real(self, "vf_coef", 0.0)
        check_real(self, "max_grad_norm", 0.0, low_open=True)
        check_real(self, "log_std_init")
        check_sizes(self, "hidden_sizes")
        check_choice(self, "activation", ACTIVATIONS)

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        """Transitions per minibatch (recurrent: num_envs // num_minibatches sequences)."""
        return self.batch_size // self.num_minibatches


PRESETS: dict[str, Config] = {
    "cartpole": Config(),
    # Reaches a mean final return of about -166 over 4 seeds on Pendulum-v1 (good policies
    # score -150 to -200) in 1e6 steps; see README "Continuous control".
    "pendulum": Config(
        total_timesteps=1_000_000,
        num_envs=16,
        num_steps=128,
        update_epochs=10,
        num_minibatches=32,
        learning_rate=1e-3,
        gamma=0.95,
        gae_lambda=0.95,
        ent_coef=0.0,
        normalize_obs=True,
        normalize_reward=True,
    ),
    # Recurrent PPO on bsuite's MemoryChain (memory_length=5: the context shows at the first
    # two steps, the rewarded choice comes four steps later): a mean final return of about 1
    # (the maximum) over 4 seeds, where feed-forward PPO stays at 0, chance (README).
    "memory_chain": Config(
        total_timesteps=51_200,
        num_envs=16,
        num_steps=32,
        num_minibatches=4,
        learning_rate=5e-4,
        hidden_sizes=(64,),
        activation="relu",
        recurrent=True,
        rnn_hidden_size=64,
    ),
}
"""Named configurations: `ppo.PRESETS["pendulum"]`, or `--preset pendulum` on the CLI."""


# --------------------------------------------------------------------------- state


@struct.dataclass
class Params:
    """Everything the policy needs to act."""

    network: Any  # actor-critic weights
    obs_stats: envs.RunningMeanStd | None  # observation statistics; None without normalize_obs


@struct.dataclass
class HParams:
    """Tunable hyperparameters as arrays, so a vmap over states sweeps them."""

    learning_rate: jax.Array  # []
    gamma: jax.Array  # []
    gae_lambda: jax.Array  # []
    clip_eps: jax.Array  # []
    ent_coef: jax.Array  # []
    vf_coef: jax.Array  # []
    max_grad_norm: jax.Array  # []

    @classmethod
    def from_config(cls, config: Config) -> HParams:
        return cls(**{f: jnp.float32(getattr(config, f)) for f in cls.__dataclass_fields__})


@struct.dataclass
class State:
    params: Params
    opt_state: Any
    env_state: Any  # wrapped, batched environment state [num_envs]
    obs: jax.Array  # [num_envs, *obs_shape] observation to act on next (normalised if enabled)
    key: jax.Array
    hparams: HParams
    iteration: jax.Array  # [] int32, updates done so far
    # Recurrent only (None for a feed-forward policy):
    episode_start: jax.Array | None = None  # [num_envs] bool, obs is an episode's first
    rnn_state: jax.Array | None = None  # [num_envs, rnn_hidden_size] GRU state before obs


@struct.dataclass
class Transition:
    obs: jax.Array  # [T, num_envs, *obs_shape]
    action: jax.Array  # [T, num_envs] or [T, num_envs, action_dim]
    log_prob: jax.Array  # [T, num_envs]
    value: jax.Array  # [T, num_envs]
    reward: jax.Array  # [T, num_envs]
    terminated: jax.Array  # [T, num_envs]
    truncated: jax.Array  # [T, num_envs]
    final_obs: jax.Array  # [T, num_envs, *obs_shape] the observation each step really reached
    # Recurrent only (None for a feed-forward policy):
    episode_start: jax.Array | None = None  # [T, num_envs] bool, obs is an episode's first
    next_rnn_state: jax.Array | None = None  # [T, num_envs, rnn_hidden_size] GRU state after
    #   reading obs: the one final_obs continues from


# --------------------------------------------------------------------------- agent


def is_discrete(env, env_params) -> bool:
    return isinstance(env.action_space(env_params), spaces.Discrete)


def validate(config: Config, env, env_params) -> None:
    """Config checks that depend on the environment (the rest run in Config.__post_init__)."""
    space = env.action_space(env_params)
    if not isinstance(space, (spaces.Discrete, spaces.Box)):
        raise ValueError(f"env: PPO supports Discrete and Box action spaces, got {space}")
    check_action_space(config, isinstance(space, spaces.Discrete), env.name)


def wrap_env(config: Config, env, env_params):
    """The environment stack PPO trains on (inner first). Observations keep their shape:
    the network flattens them, after a convolution for images."""
    env = envs.EpisodeStatistics(env)
    if not is_discrete(env, env_params):
        env = envs.ClipAction(env)
    env = envs.VecEnv(env, config.num_envs)
    if config.normalize_obs:
        env = envs.NormalizeObservation(env)
    if config.normalize_reward:
        env = envs.ScaleReward(env, gamma=config.gamma)
    return env


def _obs_stats(config: Config, env_state) -> envs.RunningMeanStd | None:
    if not config.normalize_obs:
        return None
    if config.normalize_reward:
        env_state = env_state.env_state
    return env_state.obs_stats


def make_network(config: Config, env, env_params):
    """`ActorCritic`, or with `recurrent` the `RecurrentActorCritic`, for `env`'s spaces."""
    action_space = env.action_space(env_params)
    discrete = is_discrete(env, env_params)
    action_dim = action_space.n if discrete else int(math.prod(action_space.shape))
    obs_ndim = len(env.observation_space(env_params).shape)
    if config.recurrent:
        return RecurrentActorCritic(action_dim, discrete, config.hidden_sizes, config.activation,
                                    config.log_std_init, config.rnn_hidden_size, obs_ndim)
    return ActorCritic(action_dim, discrete, config.hidden_sizes, config.activation,
                       config.log_std_init, obs_ndim)


def make(config: Config, env, env_params) -> Agent:
    """Builds PPO's pure functions for `env` (any gymnax environment)."""
    validate(config, env, env_params)
    discrete = is_discrete(env, env_params)
    action_space = env.action_space(env_params)
    obs_shape = tuple(env.observation_space(env_params).shape)
    venv = wrap_env(config, env, env_params)
    network = make_network(config, env, env_params)
    optimizer = make_optimizer()

    def init_carry(batch_shape: tuple[int, ...]) -> jax.Array:
        """The GRU state before an episode's first step: zeros [*batch_shape, rnn_hidden_size]."""
        return ScannedGRU.initialize_carry(tuple(batch_shape), config.rnn_hidden_size)

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> State:
        """`hparams`: tunable hyperparameters replacing the config's (e.g. one sweep setting)."""
        hp = HParams.from_config(config)
        if hparams:
            hp = hp.replace(**{k: jnp.asarray(v, jnp.float32) for k, v in hparams.items()})
        key, key_net, key_env = jax.random.split(key, 3)
        obs, env_state = venv.reset(key_env, env_params)
        if config.normalize_reward:  # the reward scale tracks the return discounted by gamma
            env_state = env_state.replace(gamma=hp.gamma)
        if config.recurrent:
            episode_start = jnp.ones(config.num_envs, bool)
            rnn_state = init_carry((config.num_envs,))
            net_params = network.init(key_net, rnn_state, obs[:, None], episode_start[:, None])
        else:
            episode_start = rnn_state = None
            net_params = network.init(key_net, obs)
        params = Params(net_params, _obs_stats(config, env_state))
        return State(params, optimizer.init(net_params), env_state, obs, key, hp, jnp.int32(0),
                     episode_start, rnn_state)

    def policy_step(net_params, obs, episode_start, rnn_state):
        """(pi over [B], value [B], GRU state after obs) for obs [B, *obs_shape] at one step;
        feed-forward: the GRU inputs are None and so is the state returned."""
        if not config.recurrent:
            pi, value = network.apply(net_params, obs)
            return pi, value, None
        rnn_state, pi, value = network.apply(net_params, rnn_state, obs[:, None],
                                             episode_start[:, None])
        return pi[:, 0], value[:, 0], rnn_state

    def collect(state: State, key: jax.Array):
        def step(carry, key):
            env_state, obs, episode_start, rnn_state = carry
            key_act, key_step = jax.random.split(key)
            pi, value, next_rnn_state = policy_step(state.params.network, obs, episode_start,
                                                    rnn_state)
            action = pi.sample(seed=key_act)
            log_prob = pi.log_prob(action)
            next_obs, env_state, reward, terminated, truncated, info = venv.step(
                key_step, env_state, action, env_params
            )
            transition = Transition(obs, action, log_prob, value, reward.astype(jnp.float32),
                                    terminated, truncated, info["final_observation"],
                                    episode_start, next_rnn_state)
            # Same-step auto-reset: next_obs starts an episode wherever this step ended one.
            next_start = (terminated | truncated) if config.recurrent else None
            return (env_state, next_obs, next_start, next_rnn_state), (transition, info["episode"])

        keys = jax.random.split(key, config.num_steps)
        first = (state.env_state, state.obs, state.episode_start, state.rnn_state)
        (env_state, obs, episode_start, rnn_state), (traj, episode) = jax.lax.scan(step, first, keys)
        return env_state, obs, episode_start, rnn_state, traj, episode

    def final_values(net_params, traj: Transition) -> jax.Array:
        """V(final observation) [T, num_envs]; recurrent: from the GRU state after obs, as the
        final observation continues obs's episode."""
        if not config.recurrent:
            return network.apply(net_params, traj.final_obs, method=ActorCritic.value)
        final_obs, rnn_state = (x.reshape(config.batch_size, *x.shape[2:])
                                for x in (traj.final_obs, traj.next_rnn_state))
        _, _, value = network.apply(net_params, rnn_state, final_obs[:, None],
                                    jnp.zeros((config.batch_size, 1), bool))
        return value.reshape(config.num_steps, config.num_envs)

    def loss_fn(net_params, batch, hp: HParams):
        traj, advantage, target, rnn_state = batch
        if config.recurrent:  # re-run the GRU over whole sequences [envs, T] from their start
            _, pi, value = network.apply(net_params, rnn_state, traj.obs, traj.episode_start)
        else:
            pi, value = network.apply(net_params, traj.obs)
        # The losses take a flat batch: [minibatch] transitions ([envs * T] recurrent).
        log_ratio, advantage, value, old_value, target = (x.reshape(-1) for x in (
            pi.log_prob(traj.action) - traj.log_prob, advantage, value, traj.value, target))
        if config.normalize_advantages:
            advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        policy_loss = clipped_surrogate_loss(log_ratio, advantage, hp.clip_eps)
        v_loss = value_loss(value, old_value, target, hp.clip_eps, config.clip_value_loss)
        entropy = pi.entropy().mean()
        total = policy_loss + hp.vf_coef * v_loss - hp.ent_coef * entropy
        return total, {
            "loss": total,
            "policy_loss": policy_loss,
            "value_loss": v_loss,
            "entropy": entropy,
            "approx_kl": approx_kl(log_ratio),
            "clip_fraction": clip_fraction(log_ratio, hp.clip_eps),
        }

    def learn(state: State, key: jax.Array, batch, learning_rate):
        """Epochs of minibatch steps on `batch`, whose leading axis is shuffled and split:
        transitions [batch_size] feed-forward, environments [num_envs] recurrent."""
        hp = state.hparams
        num_samples = config.num_envs if config.recurrent else config.batch_size

        def minibatch_step(carry, minibatch):
            net_params, opt_state = carry
            grads, stats = jax.grad(loss_fn, has_aux=True)(net_params, minibatch, hp)
            updates, opt_state = optimizer.update(
                grads, opt_state, learning_rate=learning_rate, max_grad_norm=hp.max_grad_norm
            )
            net_params = jax.tree.map(jnp.add, net_params, updates)
            return (net_params, opt_state), stats

        def epoch(carry, key):
            order = jax.random.permutation(key, num_samples)
            shuffled = jax.tree.map(
                lambda x: x[order].reshape(config.num_minibatches,
                                           num_samples // config.num_minibatches, *x.shape[1:]),
                batch,
            )
            return jax.lax.scan(minibatch_step, carry, shuffled)

        (net_params, opt_state), stats = jax.lax.scan(
            epoch, (state.params.network, state.opt_state),
            jax.random.split(key, config.update_epochs),
        )
        return net_params, opt_state, jax.tree.map(jnp.mean, stats)

    def update(state: State) -> tuple[State, dict[str, jax.Array]]:
        hp = state.hparams
        key, key_collect, key_learn = jax.random.split(state.key, 3)

        # 1. Collect.
        env_state, obs, episode_start, rnn_state, traj, episode = collect(state, key_collect)

        # 2. Advantages: V(final observation) is V(next observation) except where an
        #    episode ended, where it is the value of the state really reached.
        v_next = final_values(state.params.network, traj)
        advantage, target = jax.vmap(gae, in_axes=(1, 1, 1, 1, 1, None, None), out_axes=1)(
            traj.reward, traj.value, v_next, traj.terminated, traj.truncated,
            hp.gamma, hp.gae_lambda,
        )

        # 3. Learn: on the flattened batch, or (recurrent) on whole sequences [num_envs, T]
        #    from the rollout's first GRU state.
        if config.recurrent:
            batch = (*jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1),
                                   (traj.replace(next_rnn_state=None), advantage, target)),
                     state.rnn_state)
        else:
            batch = (*jax.tree.map(lambda x: x.reshape(config.batch_size, *x.shape[2:]),
                                   (traj, advantage, target)), None)
        learning_rate = (
            linear_schedule(hp.learning_rate, state.iteration, config.num_iterations)
            if config.anneal_lr else hp.learning_rate
        )
        net_params, opt_state, stats = learn(state, key_learn, batch, learning_rate)

        params = Params(net_params, _obs_stats(config, env_state))
        state = state.replace(params=params, opt_state=opt_state, env_state=env_state, obs=obs,
                              key=key, iteration=state.iteration + 1,
                              episode_start=episode_start, rnn_state=rnn_state)
        metrics = {**envs.summarize_episodes(episode), **stats, "learning_rate": learning_rate}
        return state, metrics

    def act(params: Params, obs: jax.Array, key: jax.Array, deterministic: bool = False,
            carry: jax.Array | None = None):
        """Actions for raw environment observations, batched ([..., *obs_shape]) or not.

        Recurrent: also takes the GRU state `carry` [..., rnn_hidden_size] before obs (None:
        an episode's start, `init_carry`) and returns (action, the state after obs).
        """
        batch_shape = obs.shape[: obs.ndim - len(obs_shape)]
        if params.obs_stats is not None:
            obs = envs.normalize(params.obs_stats, obs)
        if config.recurrent:
            carry = init_carry(batch_shape) if carry is None else carry
            flat_obs = obs.reshape(-1, *obs_shape)
            pi, _, carry = policy_step(params.network, flat_obs,
                                       jnp.zeros(flat_obs.shape[0], bool),
                                       carry.reshape(-1, config.rnn_hidden_size))
            carry = carry.reshape(*batch_shape, config.rnn_hidden_size)
        else:
            pi = network.apply(params.network, obs, method=ActorCritic.policy)
        action = pi.mode() if deterministic else pi.sample(seed=key)
        if config.recurrent:
            action = action.reshape(*batch_shape, *action.shape[1:])
        if not discrete:
            action = jnp.clip(action, action_space.low, action_space.high)
        return (action, carry) if config.recurrent else action

    return Agent(init, update, act, init_carry if config.recurrent else None)


def make_train(config: Config, env, env_params):
    """`train(key) -> (final state, metrics [num_iterations])`: init, then scan(update)."""
    return train_loop(make(config, env, env_params), config.num_iterations)
