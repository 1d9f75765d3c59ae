"""MLP actor-critic networks with orthogonal initialisation, and their policies (distrax).

On the CPU backend their Dense layers use `agents.common.cpu`'s speed-ups.
"""

from __future__ import annotations

from collections.abc import Sequence

import distrax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from agents.common import cpu

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu}


def _dense(features: int, scale: float) -> nn.Dense:
    return cpu.dense(features, scale)


class MLP(nn.Module):
    """Hidden layers with orthogonal(sqrt 2) weights and zero biases, then a linear head."""

    hidden_sizes: Sequence[int]
    out_features: int
    activation: str = "tanh"
    head_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        act = ACTIVATIONS[self.activation]
        for size in self.hidden_sizes:
            x = act(_dense(size, np.sqrt(2.0))(x))
        return _dense(self.out_features, self.head_scale)(x)


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs (as the reference PPO).

    The actor head is initialised with scale 0.01 (a near-uniform initial
    policy), the critic head with scale 1.0. For continuous actions the policy is
    a diagonal Gaussian with a state-independent, learned log standard deviation.

    Call: obs [..., obs_dim] -> (distrax distribution over actions, value [...]).
    """

    action_dim: int
    discrete: bool
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"
    log_std_init: float = 0.0

    def setup(self):
        self.actor = MLP(self.hidden_sizes, self.action_dim, self.activation, head_scale=0.01)
        self.critic = MLP(self.hidden_sizes, 1, self.activation, head_scale=1.0)
        if not self.discrete:
            self.log_std = self.param(
                "log_std", nn.initializers.constant(self.log_std_init), (self.action_dim,)
            )

    def policy(self, obs: jnp.ndarray) -> distrax.Distribution:
        out = self.actor(obs)
        if self.discrete:
            return distrax.Categorical(logits=out)
        return distrax.MultivariateNormalDiag(out, jnp.exp(self.log_std))

    def value(self, obs: jnp.ndarray) -> jnp.ndarray:
        return self.critic(obs)[..., 0]

    def __call__(self, obs: jnp.ndarray):
        return self.policy(obs), self.value(obs)
