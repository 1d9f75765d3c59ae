"""Bandits: multi-armed (Sutton & Barto's 10-armed testbed, Bernoulli) and contextual
(Riquelme et al. 2018's linear and wheel problems).

    KArmedTestbed-v0            q*(a) ~ N(mean, stddev^2) drawn at reset, R ~ N(q*(A), 1)
    BernoulliBandit-v0          p(a) ~ U(0, 1) drawn at reset, R ~ Bernoulli(p(A))
    LinearContextualBandit-v0   x ~ N(0, I_d), R ~ N(x . beta_A, (0.01 (A + 1))^2)
    WheelBandit-v0              x uniform in the unit disc, the wheel's rewards (delta)

A bandit problem is drawn at `reset` and lasts the whole run: episodes never end (a run of
T rounds is T steps of one episode). The observation is the context (x, [d]) of a
contextual bandit and a constant [1] otherwise. An action outside [0, k) is clipped into it.
Every step reports in `info`:

    expected_reward   E[R | x, A]
    regret            max_a E[R | x, a] - E[R | x, A]  (expected, not sampled)
    optimal           whether A is an optimal action
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class BanditState:
    arms: jax.Array  # the problem drawn at reset: q* [k] (testbed), p [k], beta [d, k] (linear)
    context: jax.Array  # [d] the current context (zeros [1] without one)
    time: jax.Array  # int32: rounds played


@struct.dataclass
class TestbedParams:
    num_arms: int = struct.field(pytree_node=False, default=10)
    """k: arms of the bandit."""
    mean: float = 0.0
    """Mean of the true values q*(a) (Figure 2.5 uses +4)."""
    stddev: float = 1.0
    """Standard deviation of the true values q*(a) around `mean`."""
    reward_stddev: float = 1.0
    """Standard deviation of a reward around q*(A)."""
    walk_stddev: float = 0.0
    """Non-stationary (Exercise 2.5): every q*(a) takes a N(0, walk_stddev^2) step per round;
    0: stationary."""
    equal_start: bool = struct.field(pytree_node=False, default=False)
    """Exercise 2.5: every q*(a) starts at `mean` (then walks) instead of being drawn."""


@struct.dataclass
class BernoulliParams:
    num_arms: int = struct.field(pytree_node=False, default=10)
    """k: arms, each paying 1 with a probability drawn from U(0, 1) at reset."""


@struct.dataclass
class LinearParams:
    num_arms: int = struct.field(pytree_node=False, default=8)
    context_dim: int = struct.field(pytree_node=False, default=10)
    noise_scale: float = 0.01
    """The reward noise of arm j is N(0, (noise_scale (j + 1))^2)."""


@struct.dataclass
class WheelParams:
    delta: float = 0.95
    """Radius of the inner disc: outside it one arm (by the context's quadrant) pays 50."""
    inner_mean: float = 1.2
    """Mean reward of arm 4, the best arm inside the disc."""
    other_mean: float = 1.0
    """Mean reward of arms 0-3 (inside the disc, or outside for the wrong quadrant)."""
    outer_mean: float = 50.0
    """Mean reward of the quadrant's arm outside the disc."""
    noise_stddev: float = 0.01


class Bandit(environment.Environment):
    """A bandit as a gymnax environment (see the module docstring); subclasses draw the
    problem and the contexts and say what each arm pays."""

    env_id = "Bandit"
    params_class: type = TestbedParams
    contextual = False

    @property
    def name(self) -> str:
        return self.env_id

    @property
    def default_params(self):
        return self.params_class()

    def num_arms(self, params) -> int:
        return params.num_arms

    def context_dim(self, params) -> int:
        """Features of a context (1, a constant, for a bandit without context)."""
        return 1

    def action_space(self, params=None) -> spaces.Discrete:
        return spaces.Discrete(self.num_arms(params or self.default_params))

    def observation_space(self, params=None) -> spaces.Box:
        params = params or self.default_params
        return spaces.Box(-jnp.inf, jnp.inf, (self.context_dim(params),), jnp.float32)

    # -------------------------------------------------------------- what a subclass defines

    def draw_arms(self, key: jax.Array, params) -> jax.Array:
        raise NotImplementedError

    def draw_context(self, key: jax.Array, params) -> jax.Array:
        return jnp.zeros((1,), jnp.float32)

    def expected_rewards(self, arms: jax.Array, context: jax.Array, params) -> jax.Array:
        """E[R | x, a] for every arm: [k]."""
        raise NotImplementedError

    def sample_reward(self, key: jax.Array, arms, context, action, params) -> jax.Array:
        raise NotImplementedError

    def evolve(self, key: jax.Array, arms: jax.Array, params) -> jax.Array:
        """The arms after a round (a non-stationary bandit walks them)."""
        return arms

    # -------------------------------------------------------------- the environment API

    def reset_env(self, key: jax.Array, params):
        key_arms, key_context = jax.random.split(key)
        state = BanditState(arms=self.draw_arms(key_arms, params),
                            context=self.draw_context(key_context, params), time=jnp.int32(0))
        return state.context, state

    def step_env(self, key: jax.Array, state: BanditState, action, params):
        key_reward, key_walk, key_context = jax.random.split(key, 3)
        # An arm outside [0, k) is clipped into it: a compiled step cannot raise, and the
        # linear bandit's noise scale grows with the arm's index.
        action = jnp.clip(jnp.asarray(action, jnp.int32), 0, self.num_arms(params) - 1)
        means = self.expected_rewards(state.arms, state.context, params)
        reward = self.sample_reward(key_reward, state.arms, state.context, action, params)
        best = means.max()
        info = {"expected_reward": means[action], "regret": best - means[action],
                "optimal": means[action] >= best}
        new = BanditState(arms=self.evolve(key_walk, state.arms, params),
                          context=self.draw_context(key_context, params), time=state.time + 1)
        return new.context, new, reward.astype(jnp.float32), jnp.bool_(False), info

    def is_truncated(self, state: BanditState, params) -> jax.Array:
        return jnp.bool_(False)

    def is_terminal(self, state: BanditState, params) -> jax.Array:
        return jnp.bool_(False)

    def get_obs(self, state: BanditState, params=None, key=None) -> jax.Array:
        return state.context


class KArmedTestbed(Bandit):
    """Sutton & Barto section 2.3 (and Exercise 2.5 with `walk_stddev`, `equal_start`)."""

    env_id, params_class = "KArmedTestbed-v0", TestbedParams

    def draw_arms(self, key, params):
        if params.equal_start:
            return jnp.full(params.num_arms, params.mean, jnp.float32)
        return params.mean + params.stddev * jax.random.normal(key, (params.num_arms,))

    def expected_rewards(self, arms, context, params):
        return arms

    def sample_reward(self, key, arms, context, action, params):
        return arms[action] + params.reward_stddev * jax.random.normal(key)

    def evolve(self, key, arms, params):
        return arms + params.walk_stddev * jax.random.normal(key, arms.shape)

    def check_params(self, params) -> None:
        _check_arms(params.num_arms)
        for name in ("stddev", "reward_stddev", "walk_stddev"):
            if not float(getattr(params, name)) >= 0.0:
                raise ValueError(f"{name}={getattr(params, name)!r} is not allowed: expected >= 0")


class BernoulliBandit(Bandit):
    """k arms paying 1 with probability p(a) (drawn from U(0, 1) at reset), else 0."""

    env_id, params_class = "BernoulliBandit-v0", BernoulliParams

    def draw_arms(self, key, params):
        return jax.random.uniform(key, (params.num_arms,))

    def expected_rewards(self, arms, context, params):
        return arms

    def sample_reward(self, key, arms, context, action, params):
        return jax.random.bernoulli(key, arms[action]).astype(jnp.float32)

    def check_params(self, params) -> None:
        _check_arms(params.num_arms)


class LinearContextualBandit(Bandit):
    """Riquelme et al. 2018, the linear problem: arm parameters beta_j uniform in [-1, 1]^d,
    scaled to unit norm, drawn at reset; contexts x ~ N(0, I_d); R = x . beta_A + noise of
    standard deviation noise_scale (A + 1)."""

    env_id, params_class, contextual = "LinearContextualBandit-v0", LinearParams, True

    def context_dim(self, params) -> int:
        return params.context_dim

    def draw_arms(self, key, params):
        beta = jax.random.uniform(key, (params.context_dim, params.num_arms), minval=-1.0, maxval=1.0)
        return beta / jnp.linalg.norm(beta, axis=0, keepdims=True)

    def draw_context(self, key, params):
        return jax.random.normal(key, (params.context_dim,))

    def expected_rewards(self, arms, context, params):
        return context @ arms

    def sample_reward(self, key, arms, context, action, params):
        scale = params.noise_scale * (action + 1).astype(jnp.float32)
        return (context @ arms)[action] + scale * jax.random.normal(key)

    def check_params(self, params) -> None:
        _check_arms(params.num_arms)
        if params.context_dim < 1:
            raise ValueError(f"context_dim={params.context_dim!r} is not allowed: expected >= 1")


class WheelBandit(Bandit):
    """Riquelme et al. 2018, the wheel: x uniform in the unit disc, 5 arms. Inside the disc of
    radius delta arm 4 pays inner_mean (best) and arms 0-3 other_mean; outside it the arm of
    x's quadrant (0: x1 > 0, x2 > 0; 1: x1 > 0, x2 <= 0; 2: x1 <= 0, x2 > 0; 3: both <= 0)
    pays outer_mean instead. Every reward has noise N(0, noise_stddev^2)."""

    env_id, params_class, contextual = "WheelBandit-v0", WheelParams, True

    def num_arms(self, params) -> int:
        return 5

    def context_dim(self, params) -> int:
        return 2

    def draw_arms(self, key, params):
        return jnp.zeros((0,), jnp.float32)  # the wheel has no hidden parameters

    def draw_context(self, key, params):
        key_radius, key_angle = jax.random.split(key)
        radius = jnp.sqrt(jax.random.uniform(key_radius))  # uniform in area
        angle = jax.random.uniform(key_angle, minval=0.0, maxval=2 * jnp.pi)
        return jnp.stack([radius * jnp.cos(angle), radius * jnp.sin(angle)])

    def expected_rewards(self, arms, context, params):
        x1, x2 = context[0], context[1]
        quadrant = jnp.where(x1 > 0, jnp.where(x2 > 0, 0, 1), jnp.where(x2 > 0, 2, 3))
        outside = jnp.linalg.norm(context) >= params.delta
        means = jnp.full(5, params.other_mean, jnp.float32).at[4].set(params.inner_mean)
        return jnp.where(outside & (jnp.arange(5) == quadrant), params.outer_mean, means)

    def sample_reward(self, key, arms, context, action, params):
        return self.expected_rewards(arms, context, params)[action] + params.noise_stddev * jax.random.normal(key)

    def check_params(self, params) -> None:
        if not 0.0 <= float(params.delta) <= 1.0:
            raise ValueError(f"delta={params.delta!r} is not allowed: expected a radius in [0, 1]")


def _check_arms(num_arms: Any) -> None:
    if isinstance(num_arms, bool) or not isinstance(num_arms, int) or num_arms < 2:
        raise ValueError(f"num_arms={num_arms!r} is not allowed: expected an integer >= 2")


ENVIRONMENTS = {cls.env_id: cls for cls in (KArmedTestbed, BernoulliBandit, LinearContextualBandit,
                                            WheelBandit)}


def bandit_of(env: Any) -> Bandit | None:
    """The `Bandit` inside `env` (unwrapping wrappers), or None."""
    while env is not None and not isinstance(env, Bandit):
        env = getattr(env, "_env", None)
    return env


def is_bandit(env: Any) -> bool:
    return bandit_of(env) is not None


def is_contextual(env: Any) -> bool:
    """Whether `env` is a bandit whose rewards depend on a context."""
    bandit = bandit_of(env)
    return bandit is not None and bandit.contextual
