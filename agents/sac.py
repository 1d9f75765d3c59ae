"""Soft Actor-Critic (Haarnoja et al. 2018) for continuous (Box) actions.

One iteration of `update`:
  1. act for `num_steps` steps in each of `num_envs` environments: uniform random actions
     until `learning_starts` steps are stored, then samples of the policy;
  2. store the steps in the replay buffer held in the state (`agents.common.replay`);
  3. once `learning_starts` steps are stored, take `gradient_steps` steps, each on
     `batch_size` transitions drawn uniformly from the buffer, in Stable-Baselines3's order:
       - critics: twin Q-networks regress onto
             r + gamma * (1 - terminated) * (min_i Q_target_i(s', a') - alpha * log pi(a'|s')),
         a' ~ pi(s'), a truncated episode bootstrapped from its final observation;
       - actor: minimise alpha * log pi(a|s) - min_i Q_i(s, a), a ~ pi(s) reparameterised;
       - temperature: minimise -log(alpha) * (log pi(a|s) + target_entropy), driving the
         policy's entropy towards target_entropy (-|A| by default);
       - target critics: Polyak averaging with rate tau.

The policy is a Gaussian squashed by tanh, with the log-density corrected for the squash
(`squashed_gaussian`); its actions in (-1, 1) are rescaled to the action space's bounds.

    env, env_params = envs.make("Pendulum-v1")
    agent = sac.make(sac.Config(), env, env_params)
    state = agent.init(key)
    state, metrics = agent.update(state)
    action = agent.act(state.params, obs, key, deterministic=True)   # tanh(mean), rescaled
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
    Agent,
    CriticEnsemble,
    GaussianActor,
    Score,
    check_choice,
    check_positive_int,
    check_real,
    check_replay,
    check_sizes,
    hparams_from_config,
    invalid,
    make_optimizer,
    make_replay,
    max_episode_steps,
    normalize_fields,
    polyak,
    sac_actor_loss,
    sac_critic_target,
    squashed_gaussian,
    temperature_loss,
    train_loop,
)
from agents.common.networks import ACTIVATIONS
from agents.common.replay import ReplayState, Steps

SCORE = Score(metric="episode_return", higher_is_better=True, weight="episodes", label="return")
"""Results are judged by the mean return of the episodes that ended."""
NAN_METRICS = ("episode_return", "episode_length", "critic_loss", "actor_loss", "alpha_loss",
               "q_value", "entropy")
"""NaN in an iteration in which no episode ended (the returns) or before learning starts
(the losses and statistics of the learner)."""
ACT_INPUT = "observation"
"""`act` takes raw environment observations, batched or not."""
ACTION_SPACES = ("continuous",)
"""The action spaces SAC acts in."""


@dataclasses.dataclass(frozen=True)
class Config(EnvStepsConfig):
    """SAC settings. Defaults are the RL Zoo's Pendulum-v1 configuration for
    Stable-Baselines3 (its defaults with learning rate 1e-3), the buffer sized for the run."""

    SHAPE_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"total_timesteps", "num_envs", "num_steps", "gradient_steps", "buffer_size",
         "batch_size", "hidden_sizes"})

    total_timesteps: int = 20_000
    """Environment steps in the whole run, summed over the parallel environments."""
    num_envs: int = 1
    """Parallel environments stepped in lockstep."""
    num_steps: int = 1
    """Steps per environment in each iteration, before its gradient steps."""
    gradient_steps: int = 1
    """Gradient steps per iteration."""
    buffer_size: int = 20_000
    """Transitions the replay buffer holds (over all environments); the oldest are replaced.
    The default holds every step of the default run."""
    batch_size: int = 256
    """Transitions per gradient step."""
    learning_starts: int = 100
    """Environment steps of uniform random actions before the first gradient step."""
    learning_rate: float = 1e-3
    """Adam step size of the actor and the critics (tunable)."""
    alpha_learning_rate: float = 1e-3
    """Adam step size of the entropy temperature (tunable)."""
    gamma: float = 0.99
    """Discount factor (tunable)."""
    tau: float = 0.005
    """Polyak rate of the target critics in (0, 1] (tunable)."""
    init_alpha: float = 1.0
    """Initial entropy temperature (tunable)."""
    autotune_alpha: bool = True
    """Learn the temperature towards target_entropy; False keeps init_alpha."""
    target_entropy_scale: float = 1.0
    """The target entropy is -target_entropy_scale * |A| (tunable)."""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor and of each critic."""
    activation: str = "relu"
    """Hidden activation: relu or tanh."""

    def __post_init__(self):
        normalize_fields(self)
        check_positive_int(self, "total_timesteps", "num_envs", "num_steps", "gradient_steps",
                           "buffer_size", "batch_size")
        check_replay(self, 1)
        check_real(self, "learning_rate", 0.0, low_open=True)
        check_real(self, "alpha_learning_rate", 0.0, low_open=True)
        check_real(self, "gamma", 0.0, 1.0)
        check_real(self, "tau", 0.0, 1.0, low_open=True)
        check_real(self, "init_alpha", 0.0, low_open=True)
        check_real(self, "target_entropy_scale")
        check_sizes(self, "hidden_sizes")
        check_choice(self, "activation", ACTIVATIONS)

    @property
    def capacity(self) -> int:
        """Steps the buffer keeps per environment: buffer_size // num_envs."""
        return self.buffer_size // self.num_envs


PRESETS: dict[str, Config] = {"pendulum": Config()}
"""Named configurations: `sac.PRESETS["pendulum"]`, or `--preset pendulum` on the CLI."""


# --------------------------------------------------------------------------- state


@struct.dataclass
class Params:
    """Everything the policy needs to act: the actor's weights."""

    actor: Any


@struct.dataclass
class HParams:
    """Tunable hyperparameters as arrays, so a vmap over states sweeps them."""

    learning_rate: jax.Array  # []
    alpha_learning_rate: jax.Array  # []
    gamma: jax.Array  # []
    tau: jax.Array  # []
    init_alpha: jax.Array  # []
    target_entropy_scale: jax.Array  # []

    @classmethod
    def from_config(cls, config: Config, overrides: Mapping[str, Any] | None = None) -> HParams:
        return hparams_from_config(cls, config, overrides)


@struct.dataclass
class Learner:
    """What the gradient steps change."""

    actor: Any  # actor weights
    critic: Any  # twin critic weights, leaves [2, ...]
    critic_target: Any  # their Polyak average
    log_alpha: jax.Array  # [] log of the entropy temperature
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any


@struct.dataclass
class State:
    params: Params
    learner: Learner
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
    if not isinstance(space, spaces.Box):
        raise ValueError(f"env: SAC needs a Box (continuous) action space, and {env.name} "
                         f"has {space}")


def make(config: Config, env, env_params) -> Agent:
    """Builds SAC's pure functions for `env` (a gymnax environment with Box actions)."""
    validate(config, env, env_params)
    action_space = env.action_space(env_params)
    action_shape = tuple(action_space.shape)
    action_dim = int(math.prod(action_shape))
    obs_ndim = len(env.observation_space(env_params).shape)
    # The agent acts in [-1, 1]; RescaleAction maps that onto the space's bounds.
    venv = envs.VecEnv(envs.RescaleAction(envs.EpisodeStatistics(env)), config.num_envs)
    actor = GaussianActor(action_dim, config.hidden_sizes, config.activation, obs_ndim)
    critic = CriticEnsemble(2, config.hidden_sizes, config.activation, obs_ndim)
    optimizer = make_optimizer(eps=1e-8)  # PyTorch's Adam, as Stable-Baselines3
    no_clip = jnp.float32(jnp.inf)
    replay = make_replay(config.capacity, config.num_envs, 1, max_episode_steps(env_params))

    def policy(actor_params, obs, key):
        """(actions in (-1, 1) [..., A], log_prob [...]) sampled from pi(obs)."""
        mean, log_std = actor.apply(actor_params, obs)
        return squashed_gaussian(key, mean, log_std)

    def to_env(action):
        """[-1, 1] -> the action space's bounds, shaped like the space."""
        action = action.reshape(*action.shape[:-1], *action_shape)
        low, high = action_space.low, action_space.high
        return low + (jnp.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (high - low)

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> State:
        """`hparams`: tunable hyperparameters replacing the config's (e.g. one sweep setting)."""
        hp = HParams.from_config(config, hparams)
        key, key_actor, key_critic, key_env = jax.random.split(key, 4)
        obs, env_state = venv.reset(key_env, env_params)
        action = jnp.zeros((config.num_envs, action_dim))
        actor_params = actor.init(key_actor, obs)
        critic_params = critic.init(key_critic, obs, action)
        log_alpha = jnp.log(hp.init_alpha)
        learner = Learner(actor_params, critic_params, critic_params, log_alpha,
                          optimizer.init(actor_params), optimizer.init(critic_params),
                          optimizer.init(log_alpha))
        flags = jnp.zeros((config.num_envs,), bool)
        example = Steps(obs, action, jnp.zeros((config.num_envs,)), flags, flags, obs)
        return State(Params(actor_params), learner, replay.init(example), env_state, obs, key,
                     hp, jnp.int32(0))

    def collect(state: State, key: jax.Array, random_actions: jax.Array):
        def step(carry, key):
            env_state, obs = carry
            key_act, key_random, key_step = jax.random.split(key, 3)
            action, _ = policy(state.params.actor, obs, key_act)
            uniform = jax.random.uniform(key_random, action.shape, minval=-1.0, maxval=1.0)
            action = jnp.where(random_actions, uniform, action)
            next_obs, env_state, reward, terminated, truncated, info = venv.step(
                key_step, env_state, action.reshape(config.num_envs, *action_shape), env_params)
            steps = Steps(obs, action, reward.astype(jnp.float32), terminated, truncated,
                          info["final_observation"])
            return (env_state, next_obs), (steps, info["episode"])

        keys = jax.random.split(key, config.num_steps)
        (env_state, obs), (steps, episode) = jax.lax.scan(step, (state.env_state, state.obs), keys)
        return env_state, obs, steps, episode

    def critic_loss_fn(critic_params, learner: Learner, batch, key, alpha, hp: HParams):
        next_action, next_log_prob = policy(learner.actor, batch.next_obs, key)
        q_next = critic.apply(learner.critic_target, batch.next_obs, next_action)  # [2, B]
        discount = hp.gamma * (1.0 - batch.terminated[:, 0].astype(jnp.float32))
        target = jax.vmap(sac_critic_target, in_axes=(0, 0, 1, 0, None))(
            batch.reward[:, 0], discount, q_next, next_log_prob, alpha)
        q = critic.apply(critic_params, batch.obs, batch.action)  # [2, B]
        loss = 0.5 * jnp.sum(jnp.mean(jnp.square(q - target), axis=1))
        return loss, q.mean()

    def actor_loss_fn(actor_params, critic_params, batch, key, alpha):
        action, log_prob = policy(actor_params, batch.obs, key)
        q = critic.apply(critic_params, batch.obs, action)  # [2, B]
        loss = jax.vmap(sac_actor_loss, in_axes=(1, 0, None))(q, log_prob, alpha).mean()
        return loss, log_prob

    def gradient_step(learner: Learner, batch, key, hp: HParams):
        key_critic, key_actor = jax.random.split(key)
        alpha = jnp.exp(learner.log_alpha)

        (critic_loss, q_value), grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
            learner.critic, learner, batch, key_critic, alpha, hp)
        updates, critic_opt = optimizer.update(grads, learner.critic_opt,
                                               learning_rate=hp.learning_rate,
                                               max_grad_norm=no_clip)
        critic_params = jax.tree.map(jnp.add, learner.critic, updates)

        (actor_loss, log_prob), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(
            learner.actor, critic_params, batch, key_actor, alpha)
        updates, actor_opt = optimizer.update(grads, learner.actor_opt,
                                              learning_rate=hp.learning_rate,
                                              max_grad_norm=no_clip)
        actor_params = jax.tree.map(jnp.add, learner.actor, updates)

        target_entropy = -hp.target_entropy_scale * action_dim
        alpha_loss, grad = jax.value_and_grad(
            lambda la: jax.vmap(temperature_loss, in_axes=(None, 0, None))(
                la, log_prob, target_entropy).mean())(learner.log_alpha)
        updates, alpha_opt = optimizer.update(grad, learner.alpha_opt,
                                              learning_rate=hp.alpha_learning_rate,
                                              max_grad_norm=no_clip)
        log_alpha = learner.log_alpha + updates if config.autotune_alpha else learner.log_alpha

        learner = Learner(actor_params, critic_params,
                          polyak(critic_params, learner.critic_target, hp.tau), log_alpha,
                          actor_opt, critic_opt, alpha_opt)
        stats = {"critic_loss": critic_loss, "actor_loss": actor_loss, "alpha_loss": alpha_loss,
                 "q_value": q_value, "entropy": -log_prob.mean()}
        return learner, stats

    def update(state: State) -> tuple[State, dict[str, jax.Array]]:
        hp = state.hparams
        key, key_collect, key_learn = jax.random.split(state.key, 3)
        steps_before = state.iteration * config.units_per_iteration
        steps_after = steps_before + config.units_per_iteration

        # 1-2. Act (uniformly at random until learning starts), store the steps.
        random_actions = steps_before < config.learning_starts
        env_state, obs, steps, episode = collect(state, key_collect, random_actions)
        replay_state = replay.add(state.replay, steps)

        # 3. Learn once learning_starts steps are stored (computed, then kept or dropped:
        #    under a vmap over runs a lax.cond would compute both branches anyway).
        def learn_step(learner, key):
            key_sample, key_step = jax.random.split(key)
            batch = replay.sample(replay_state, key_sample, config.batch_size)
            return gradient_step(learner, batch, key_step, hp)

        learner, stats = jax.lax.scan(learn_step, state.learner,
                                      jax.random.split(key_learn, config.gradient_steps))
        learning = jnp.logical_and(steps_after >= config.learning_starts,
                                   replay.can_sample(replay_state))
        learner = jax.tree.map(lambda n, o: jnp.where(learning, n, o), learner, state.learner)

        state = state.replace(params=Params(learner.actor), learner=learner,
                              replay=replay_state, env_state=env_state, obs=obs, key=key,
                              iteration=state.iteration + 1)
        metrics = {**envs.summarize_episodes(episode), "alpha": jnp.exp(learner.log_alpha),
                   "learning": learning.astype(jnp.float32),
                   **{k: jnp.where(learning, v.mean(), jnp.nan) for k, v in stats.items()}}
        return state, metrics

    def act(params: Params, obs: jax.Array, key: jax.Array, deterministic: bool = False):
        """Actions in the action space's bounds for raw observations [..., *obs_shape]:
        tanh of the Gaussian's mean when `deterministic`, else a sample."""
        if deterministic:
            mean, _ = actor.apply(params.actor, obs)
            return to_env(jnp.tanh(mean))
        return to_env(policy(params.actor, obs, key)[0])

    return Agent(init, update, act)


def make_train(config: Config, env, env_params):
    """`train(key) -> (final state, metrics [num_iterations])`: init, then scan(update)."""
    return train_loop(make(config, env, env_params), config.num_iterations)
