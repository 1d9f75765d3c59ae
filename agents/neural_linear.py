"""Neural-linear Thompson sampling (NeuralLinear, Riquelme et al. 2018): a small network's
last hidden layer z(x) as features, and per arm the Bayesian linear regression of
`agents.lin_ts` on them (R = z(x) . beta_a + eps, normal-inverse-gamma posterior).

The network (an MLP torso z(x) and a linear head with one output per arm) learns to predict
the reward of the arm taken. One iteration is `train_every` rounds:
  1. each round, with context x: draw every arm's beta from its posterior over z(x),
     A = argmax_a beta_a . z(x); observe R; store (x, A, R); add (z(x), R) to arm A's
     statistics;
  2. then `train_steps` Adam steps on minibatches of the stored rounds, loss
     (head(z(x))_A - R)^2;
  3. recompute every arm's statistics from all stored rounds with the new features.
Metrics are the means over the iteration's rounds (`cumulative_regret` at its end).

Each arm keeps its posterior covariance factor Lambda^-1 (Sherman-Morrison updates between
trainings, a fresh inverse after each), and a round draws each arm's value beta_a . z(x)
directly: with sigma^2 ~ IG(a, b), beta_a . z ~ N(mu_a . z, sigma^2 z^T Lambda_a^-1 z), the
distribution of the product under a full draw of beta_a, so the choice is Thompson
sampling's without a Cholesky factor per round.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from agents.common import bandit as B
from agents.common import cpu
from agents.common.config import check_positive_int, check_real, check_sizes, hparams_from_config
from agents.common.networks import Encoder
from agents.common.optim import make_optimizer
from agents.common.types import Agent, train_loop

SCORE, NAN_METRICS, ACT_INPUT, EPISODIC = B.SCORE, B.NAN_METRICS, B.ACT_INPUT, B.EPISODIC
PLOT_METRICS, PLOT_STATISTIC = B.PLOT_METRICS, B.PLOT_STATISTIC
ENV_KINDS = B.CONTEXTUAL_ENV_KINDS


@dataclasses.dataclass(frozen=True)
class Config(B.BanditConfig):
    """NeuralLinear settings (Riquelme et al. 2018's names where they have one)."""

    SHAPE_FIELDS = frozenset({"total_timesteps", "train_every", "train_steps", "batch_size",
                              "hidden_sizes"})

    hidden_sizes: tuple[int, ...] = (50,)
    """Widths of the network's hidden layers; the last one is z(x)."""
    train_every: int = 50
    """Rounds between trainings of the network (one iteration)."""
    train_steps: int = 100
    """Adam steps per training."""
    batch_size: int = 64
    """Stored rounds per Adam step."""
    learning_rate: float = 3e-3
    """Adam step size (tunable)."""
    max_grad_norm: float = 5.0
    """Clip the gradient's global norm to this (tunable)."""
    lambda_prior: float = 0.25
    """Prior precision factor of the linear models (tunable)."""
    a0: float = 6.0
    """Inverse-gamma shape of the prior (tunable)."""
    b0: float = 6.0
    """Inverse-gamma scale of the prior (tunable)."""

    def __post_init__(self):
        super().__post_init__()
        check_sizes(self, "hidden_sizes")
        check_positive_int(self, "train_every", "train_steps", "batch_size")
        if self.total_timesteps < self.train_every:
            raise ValueError(f"total_timesteps={self.total_timesteps} is not allowed: expected at "
                             f"least one iteration, train_every = {self.train_every} rounds")
        for name in ("learning_rate", "max_grad_norm", "lambda_prior", "a0", "b0"):
            check_real(self, name, 0.0, low_open=True)

    @property
    def num_iterations(self) -> int:
        return self.total_timesteps // self.train_every

    @property
    def units_per_iteration(self) -> int:
        return self.train_every


PRESETS: dict[str, Config] = {
    "wheel": Config(total_timesteps=1_000, hidden_sizes=(50,), train_every=50, train_steps=100),
}


@struct.dataclass
class HParams:
    learning_rate: jax.Array
    max_grad_norm: jax.Array
    lambda_prior: jax.Array
    a0: jax.Array
    b0: jax.Array


class FeatureNetwork(nn.Module):
    """x -> (z(x) [h], predicted rewards [k])."""

    hidden_sizes: tuple[int, ...]
    num_arms: int

    @nn.compact
    def __call__(self, x):
        z = Encoder(self.hidden_sizes, "relu")(x)
        return z, nn.Dense(self.num_arms)(z)


@struct.dataclass
class Params:
    network: Any  # the feature network's variables
    cov: jax.Array  # [k, h, h] Lambda_a^-1 = (Z_a^T Z_a + lambda I)^-1 per arm
    zty: jax.Array  # [k, h] Z_a^T y_a
    yty: jax.Array  # [k] y_a^T y_a
    n: jax.Array  # [k] rounds per arm
    lambda_prior: jax.Array
    a0: jax.Array
    b0: jax.Array


@struct.dataclass
class Data:
    contexts: jax.Array  # [total_timesteps, d]
    actions: jax.Array  # [total_timesteps] int32
    rewards: jax.Array  # [total_timesteps]
    size: jax.Array  # int32: rounds stored


@struct.dataclass
class State:
    params: Params
    hparams: HParams
    opt_state: Any
    data: Data
    env_state: Any
    obs: jax.Array  # [d] the current context
    cumulative_regret: jax.Array
    key: jax.Array


def sample_values(params: Params, z: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
    """[k] draws of beta_a . z under each arm's posterior (their means if `deterministic`)."""
    mu = jnp.einsum("kij,kj->ki", params.cov, params.zty)  # Lambda^-1 Z^T y
    mean = mu @ z
    if deterministic:
        return mean
    key_sigma, key_value = jax.random.split(key)
    a = params.a0 + params.n / 2.0
    b = params.b0 + jnp.maximum(params.yty - jnp.einsum("ki,ki->k", mu, params.zty), 0.0) / 2.0
    sigma2 = b / jax.random.gamma(key_sigma, a)
    variance = jnp.einsum("i,kij,j->k", z, params.cov, z)
    return mean + jnp.sqrt(sigma2 * jnp.maximum(variance, 0.0)) * jax.random.normal(key_value, mean.shape)


def inverse_spd(a: jax.Array) -> jax.Array:
    """a^-1 [..., h, h] of symmetric positive definite matrices: with a = L L^T, the rows of
    X = solve(L, I) are the columns of L^-1, and a^-1 = L^-T L^-1 = X X^T."""
    factor = cpu.cholesky(a)
    eye = jnp.broadcast_to(jnp.eye(a.shape[-1]), a.shape)
    x = cpu.solve_lower(factor[..., None, :, :], eye)
    return x @ jnp.swapaxes(x, -1, -2)


def make(config: Config, env, env_params) -> Agent:
    k, d = B.num_arms(env, env_params), B.context_dim(env, env_params)
    h = config.hidden_sizes[-1]
    network = FeatureNetwork(tuple(config.hidden_sizes), k)
    optimizer = make_optimizer()

    def act(params: Params, x: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
        """argmax_a beta_a . z(x) for a posterior draw (`deterministic`: the posterior means)."""
        key_draw, key_tie = jax.random.split(key)
        z, _ = network.apply(params.network, x)
        return B.argmax_random(key_tie, sample_values(params, z, key_draw, deterministic))

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> State:
        key, key_reset, key_net = jax.random.split(key, 3)
        hp = hparams_from_config(HParams, config, hparams)
        obs, env_state = env.reset(key_reset, env_params)
        variables = network.init(key_net, jnp.zeros(d))
        params = Params(network=variables, cov=jnp.broadcast_to(jnp.eye(h) / hp.lambda_prior, (k, h, h)),
                        zty=jnp.zeros((k, h)), yty=jnp.zeros(k), n=jnp.zeros(k),
                        lambda_prior=hp.lambda_prior, a0=hp.a0, b0=hp.b0)
        t = config.total_timesteps
        data = Data(contexts=jnp.zeros((t, d)), actions=jnp.zeros(t, jnp.int32),
                    rewards=jnp.zeros(t), size=jnp.int32(0))
        return State(params=params, hparams=hp, opt_state=optimizer.init(variables), data=data,
                     env_state=env_state, obs=obs, cumulative_regret=jnp.float32(0.0), key=key)

    def play(state: State, _) -> tuple[State, dict]:
        """One round (step 1)."""
        key, key_act, key_step = jax.random.split(state.key, 3)
        x = state.obs
        action = act(state.params, x, key_act)
        obs, env_state, reward, _, _, info = env.step(key_step, state.env_state, action, env_params)
        z, _ = network.apply(state.params.network, x)
        p = state.params
        cov = p.cov[action]
        u = cov @ z  # Sherman-Morrison: (Lambda + z z^T)^-1 = cov - u u^T / (1 + z^T u)
        params = p.replace(cov=p.cov.at[action].set(cov - jnp.outer(u, u) / (1.0 + z @ u)),
                           zty=p.zty.at[action].add(reward * z),
                           yty=p.yty.at[action].add(reward ** 2), n=p.n.at[action].add(1.0))
        i = state.data.size
        data = Data(contexts=state.data.contexts.at[i].set(x),
                    actions=state.data.actions.at[i].set(action),
                    rewards=state.data.rewards.at[i].set(reward), size=i + 1)
        cumulative = state.cumulative_regret + info["regret"]
        state = state.replace(params=params, data=data,
                              env_state=env_state, obs=obs, cumulative_regret=cumulative, key=key)
        return state, {"reward": reward, "regret": info["regret"],
                       "optimal_action": info["optimal"].astype(jnp.float32)}

    def loss_fn(variables, data: Data, index: jax.Array) -> jax.Array:
        _, predicted = network.apply(variables, data.contexts[index])
        chosen = jnp.take_along_axis(predicted, data.actions[index][:, None], axis=1)[:, 0]
        return jnp.mean((chosen - data.rewards[index]) ** 2)

    def train(state: State, key: jax.Array) -> tuple[Any, Any, jax.Array]:
        """Step 2: Adam on minibatches of the stored rounds."""
        hp = state.hparams

        def step(carry, key_batch):
            variables, opt_state = carry
            index = jax.random.randint(key_batch, (config.batch_size,), 0, state.data.size)
            loss, grads = jax.value_and_grad(loss_fn)(variables, state.data, index)
            updates, opt_state = optimizer.update(grads, opt_state, learning_rate=hp.learning_rate,
                                                  max_grad_norm=hp.max_grad_norm)
            return (jax.tree.map(lambda p, u: p + u, variables, updates), opt_state), loss

        (variables, opt_state), losses = jax.lax.scan(
            step, (state.params.network, state.opt_state), jax.random.split(key, config.train_steps))
        return variables, opt_state, losses.mean()

    def refit(params: Params, variables, data: Data) -> Params:
        """Step 3: the statistics of every arm from all stored rounds, with the new features."""
        z, _ = network.apply(variables, data.contexts)  # [T, h]
        stored = (jnp.arange(data.rewards.shape[0]) < data.size).astype(jnp.float32)
        w = jax.nn.one_hot(data.actions, k) * stored[:, None]  # [T, k]
        precision = jnp.einsum("tk,ti,tj->kij", w, z, z) + params.lambda_prior * jnp.eye(h)
        return params.replace(network=variables, cov=inverse_spd(precision),
                              zty=jnp.einsum("tk,t,ti->ki", w, data.rewards, z),
                              yty=w.T @ data.rewards ** 2, n=w.sum(0))

    def update(state: State) -> tuple[State, dict]:
        state, rounds = jax.lax.scan(play, state, None, config.train_every)
        key, key_train = jax.random.split(state.key)
        variables, opt_state, loss = train(state, key_train)
        params = refit(state.params, variables, state.data)
        metrics = {name: value.mean() for name, value in rounds.items()}
        metrics.update(cumulative_regret=state.cumulative_regret, loss=loss)
        return state.replace(params=params, opt_state=opt_state, key=key), metrics

    return Agent(init=init, update=update, act=act)


def make_train(config: Config, env, env_params):
    return train_loop(make(config, env, env_params), config.num_iterations)
