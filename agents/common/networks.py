"""Networks with orthogonal initialisation: encoders for any observation, the PPO
actor-critic and its policies (distrax), Q-networks (DQN, PQN) and SAC's actor and critics.

`Encoder` picks its torso from the observation's rank: vectors go through the hidden
layers; images [H, W, C] (MinAtar's 10x10xC grids) first through a 3x3 convolution.
`ScannedGRU` and `RecurrentActorCritic` are recurrent PPO's core and network.
On the CPU backend Dense layers use `agents.common.cpu`'s speed-ups.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from agents.common import cpu

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu}


def _dense(features: int, scale: float, name: str | None = None) -> nn.Dense:
    return cpu.dense(features, scale, name)


def _orthogonal(scale: float):
    return cpu.orthogonal(scale) if cpu.active() else nn.initializers.orthogonal(scale)


def flat_features(x: jnp.ndarray, obs_ndim: int) -> jnp.ndarray:
    """[..., *obs_shape] -> [..., prod(obs_shape)]."""
    return x.reshape(*x.shape[: x.ndim - obs_ndim], -1)


class Encoder(nn.Module):
    """Observation [..., *obs_shape] -> features [..., hidden_sizes[-1]].

    `obs_ndim` is the observation's rank: 3 ([H, W, C] images) adds a 3x3 "VALID"
    convolution with `conv_features` channels (MinAtar's torso, Young & Tian 2019), then
    flattens; other ranks are flattened. The hidden layers follow, each Dense (orthogonal
    sqrt 2 weights), optionally LayerNorm (PQN), then the activation.
    """

    hidden_sizes: Sequence[int]
    activation: str = "relu"
    obs_ndim: int = 1
    layer_norm: bool = False
    conv_features: int = 16

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        act = ACTIVATIONS[self.activation]
        if self.obs_ndim == 3:
            batch_shape = x.shape[:-3]
            x = x.reshape(-1, *x.shape[-3:])
            x = cpu.conv(self.conv_features, (3, 3), np.sqrt(2.0), name="Conv_0")(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = act(x).reshape(*batch_shape, -1)
        else:
            x = flat_features(x, self.obs_ndim)
        for size in self.hidden_sizes:
            x = _dense(size, np.sqrt(2.0))(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = act(x)
        return x


class MLP(nn.Module):
    """An `Encoder` torso, then a linear head: x [..., *obs_shape] -> [..., out_features].

    The torso shares the MLP's scope, so its layers sit beside the head (`Conv_0` for
    images, `Dense_0` ... `Dense_{n-1}`, the head `Dense_n`): for vectors the parameters are
    those of plain hidden layers (orthogonal sqrt 2 weights, zero biases) and a head.
    """

    hidden_sizes: Sequence[int]
    out_features: int
    activation: str = "tanh"
    head_scale: float = 1.0
    obs_ndim: int = 1
    conv_features: int = 16

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        head = _dense(self.out_features, self.head_scale, name=f"Dense_{len(self.hidden_sizes)}")
        torso = Encoder(self.hidden_sizes, self.activation, self.obs_ndim,
                        conv_features=self.conv_features)
        nn.share_scope(self, torso)
        return head(torso(x))


def _action_distribution(out: jnp.ndarray, discrete: bool, log_std) -> distrax.Distribution:
    """Categorical over logits `out`, or a diagonal Gaussian of mean `out` and std exp(log_std)."""
    if discrete:
        return distrax.Categorical(logits=out)
    return distrax.MultivariateNormalDiag(out, jnp.exp(log_std))


class ActorCritic(nn.Module):
    """Separate actor and critic networks (as the reference PPO), each an `MLP`: an
    `Encoder` torso (hidden layers; a 3x3 convolution first for image observations,
    `obs_ndim` 3) and a linear head.

    The actor head is initialised with scale 0.01 (a near-uniform initial
    policy), the critic head with scale 1.0. For continuous actions the policy is
    a diagonal Gaussian with a state-independent, learned log standard deviation.

    Call: obs [..., *obs_shape] -> (distrax distribution over actions, value [...]).
    """

    action_dim: int
    discrete: bool
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"
    log_std_init: float = 0.0
    obs_ndim: int = 1
    conv_features: int = 16

    def setup(self):
        self.actor = MLP(self.hidden_sizes, self.action_dim, self.activation, head_scale=0.01,
                         obs_ndim=self.obs_ndim, conv_features=self.conv_features)
        self.critic = MLP(self.hidden_sizes, 1, self.activation, head_scale=1.0,
                          obs_ndim=self.obs_ndim, conv_features=self.conv_features)
        if not self.discrete:
            self.log_std = self.param(
                "log_std", nn.initializers.constant(self.log_std_init), (self.action_dim,)
            )

    def policy(self, obs: jnp.ndarray) -> distrax.Distribution:
        return _action_distribution(self.actor(obs), self.discrete,
                                    None if self.discrete else self.log_std)

    def value(self, obs: jnp.ndarray) -> jnp.ndarray:
        return self.critic(obs)[..., 0]

    def __call__(self, obs: jnp.ndarray):
        return self.policy(obs), self.value(obs)


class QNetwork(nn.Module):
    """obs [..., *obs_shape] -> action values [..., num_actions].

    With `dueling` (Wang et al. 2016, "Dueling Network Architectures"), two linear heads
    share the encoder: Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a').
    """

    num_actions: int
    hidden_sizes: Sequence[int] = (120, 84)
    activation: str = "relu"
    obs_ndim: int = 1
    layer_norm: bool = False
    dueling: bool = False

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        h = Encoder(self.hidden_sizes, self.activation, self.obs_ndim, self.layer_norm)(obs)
        if not self.dueling:
            return _dense(self.num_actions, 1.0)(h)
        value = _dense(1, 1.0)(h)
        advantage = _dense(self.num_actions, 1.0)(h)
        return value + advantage - advantage.mean(axis=-1, keepdims=True)


class PolicyValueNetwork(nn.Module):
    """obs [..., *obs_shape] -> (policy logits [..., num_actions], value [...]): one `Encoder`
    torso, two linear heads (AlphaZero's network; the value is from the view of the player
    to move)."""

    num_actions: int
    hidden_sizes: Sequence[int] = (128, 128)
    activation: str = "relu"
    obs_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        h = Encoder(self.hidden_sizes, self.activation, self.obs_ndim)(obs)
        return _dense(self.num_actions, 0.01)(h), _dense(1, 1.0)(h)[..., 0]


class MuZeroNetwork(nn.Module):
    """MuZero's three functions (Schrittwieser et al. 2020), MLPs over a latent state of
    `embedding_size` units:

    represent: obs [B, *obs_shape] -> latent [B, E] (an `Encoder` torso, a linear layer);
    dynamics:  (latent [B, E], action [B]) -> (next latent [B, E], reward logits [B, 2 S + 1]);
    predict:   latent [B, E] -> (policy logits [B, A], value logits [B, 2 S + 1]).

    Latent states are min-max scaled to [0, 1] per sample, as in MuZero. The value and reward
    heads are categorical over the support {-S, ..., S} of h-transformed scalars
    (`agents.common.categorical`); their weights start at zero, so the first predictions are
    uniform over the support, whose scalar is 0.
    """

    num_actions: int
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "relu"
    obs_ndim: int = 1
    embedding_size: int = 64
    support_size: int = 10

    def setup(self):
        size = 2 * self.support_size + 1
        self.represent_torso = Encoder(self.hidden_sizes, self.activation, self.obs_ndim)
        self.represent_head = _dense(self.embedding_size, 1.0)
        self.dynamics_torso = Encoder(self.hidden_sizes, self.activation)
        self.dynamics_head = _dense(self.embedding_size, 1.0)
        self.reward_head = _dense(size, 0.0)
        self.predict_torso = Encoder(self.hidden_sizes, self.activation)
        self.policy_head = _dense(self.num_actions, 0.01)
        self.value_head = _dense(size, 0.0)

    @staticmethod
    def _scale(latent: jnp.ndarray) -> jnp.ndarray:
        low = latent.min(-1, keepdims=True)
        high = latent.max(-1, keepdims=True)
        return (latent - low) / jnp.maximum(high - low, 1e-5)

    def represent(self, obs: jnp.ndarray) -> jnp.ndarray:
        return self._scale(self.represent_head(self.represent_torso(obs)))

    def dynamics(self, latent: jnp.ndarray, action: jnp.ndarray):
        x = jnp.concatenate([latent, jax.nn.one_hot(action, self.num_actions)], axis=-1)
        h = self.dynamics_torso(x)
        return self._scale(self.dynamics_head(h)), self.reward_head(h)

    def predict(self, latent: jnp.ndarray):
        h = self.predict_torso(latent)
        return self.policy_head(h), self.value_head(h)

    def __call__(self, obs: jnp.ndarray):
        """All three functions once (to initialise the parameters)."""
        latent = self.represent(obs)
        next_latent, _ = self.dynamics(latent, jnp.zeros(latent.shape[:-1], jnp.int32))
        return self.predict(next_latent)


class GaussianActor(nn.Module):
    """SAC's actor: obs [..., *obs_shape] -> (mean [..., A], log_std [..., A]) of the
    Gaussian whose samples are squashed by tanh (`agents.common.squashed_gaussian`).
    log_std is clipped to [log_std_min, log_std_max] (Stable-Baselines3's -20 and 2)."""

    action_dim: int
    hidden_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"
    obs_ndim: int = 1
    log_std_min: float = -20.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, obs: jnp.ndarray):
        h = Encoder(self.hidden_sizes, self.activation, self.obs_ndim)(obs)
        mean = _dense(self.action_dim, 0.01)(h)
        log_std = _dense(self.action_dim, 0.01)(h)
        return mean, jnp.clip(log_std, self.log_std_min, self.log_std_max)


class Critic(nn.Module):
    """Q(s, a): concat(flattened obs, action) -> hidden layers -> [...]."""

    hidden_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"
    obs_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
        x = jnp.concatenate([flat_features(obs, self.obs_ndim), action], axis=-1)
        h = Encoder(self.hidden_sizes, self.activation)(x)
        return _dense(1, 1.0)(h)[..., 0]


class CriticEnsemble(nn.Module):
    """`num_critics` independent critics (SAC's twin Q): (obs, action) -> [num_critics, ...]."""

    num_critics: int = 2
    hidden_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"
    obs_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
        ensemble = nn.vmap(Critic, variable_axes={"params": 0}, split_rngs={"params": True},
                           in_axes=None, out_axes=0, axis_size=self.num_critics)
        return ensemble(self.hidden_sizes, self.activation, self.obs_ndim)(obs, action)


class ScannedGRU(nn.Module):
    """A GRU cell (Cho et al. 2014) scanned over time, its hidden state reset to zeros where
    an episode starts (PureJaxRL's `ScannedRNN`).

    Call: (carry [B, hidden_size], (x [B, T, features], start [B, T] bool)) ->
    (carry [B, hidden_size] after step T, outputs [B, T, hidden_size]). At step t the cell
    reads x[:, t] from a zero state where start[:, t] (x[:, t] is an episode's first input),
    else from the state step t - 1 left. The recurrent kernels are orthogonal.
    """

    hidden_size: int

    @functools.partial(nn.scan, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=1, out_axes=1)
    @nn.compact
    def __call__(self, carry: jnp.ndarray, inputs: tuple[jnp.ndarray, jnp.ndarray]):
        x, start = inputs  # [B, features], [B]
        carry = jnp.where(start[:, None], jnp.zeros_like(carry), carry)
        cell = nn.GRUCell(self.hidden_size, recurrent_kernel_init=_orthogonal(1.0))
        return cell(carry, x)

    @staticmethod
    def initialize_carry(batch_shape: tuple[int, ...], hidden_size: int) -> jnp.ndarray:
        """The state before an episode's first step: zeros [*batch_shape, hidden_size]."""
        return jnp.zeros((*batch_shape, hidden_size), jnp.float32)


class RecurrentActorCritic(nn.Module):
    """Recurrent PPO's network (PureJaxRL's `ActorCriticRNN`): an `Encoder` embedding (one
    layer of `rnn_hidden_size` units; for images a 3x3 convolution first), a `ScannedGRU`
    core shared by the actor and the critic, then their `MLP` heads over the GRU's output
    (`hidden_sizes`; head scales 0.01 and 1.0 and the policies as `ActorCritic`).

    Call: (carry [B, rnn_hidden_size], obs [B, T, *obs_shape], start [B, T] bool) ->
    (carry [B, rnn_hidden_size], distribution over actions [B, T], value [B, T]).
    """

    action_dim: int
    discrete: bool
    hidden_sizes: Sequence[int] = (128,)
    activation: str = "relu"
    log_std_init: float = 0.0
    rnn_hidden_size: int = 128
    obs_ndim: int = 1
    conv_features: int = 16

    def setup(self):
        self.embedding = Encoder((self.rnn_hidden_size,), self.activation, self.obs_ndim,
                                 conv_features=self.conv_features)
        self.core = ScannedGRU(self.rnn_hidden_size)
        self.actor = MLP(self.hidden_sizes, self.action_dim, self.activation, head_scale=0.01)
        self.critic = MLP(self.hidden_sizes, 1, self.activation, head_scale=1.0)
        if not self.discrete:
            self.log_std = self.param(
                "log_std", nn.initializers.constant(self.log_std_init), (self.action_dim,)
            )

    def __call__(self, carry: jnp.ndarray, obs: jnp.ndarray, start: jnp.ndarray):
        carry, features = self.core(carry, (self.embedding(obs), start))
        pi = _action_distribution(self.actor(features), self.discrete,
                                  None if self.discrete else self.log_std)
        return carry, pi, self.critic(features)[..., 0]
