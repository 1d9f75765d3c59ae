"""MLP actor-critic networks with orthogonal initialisation, and their policies (distrax)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu}


def _gram_schmidt(z: jax.Array) -> jax.Array:
    """Q of the QR decomposition of z [n, m] (n >= m) with R's diagonal positive.

    Classical Gram-Schmidt applied twice per column ("twice is enough"), in plain
    matrix products: no LAPACK call.
    """
    m = z.shape[1]

    def column(j, q):
        v = q[:, j]
        earlier = (jnp.arange(m) < j).astype(z.dtype)
        for _ in range(2):
            v = v - q @ ((q.T @ v) * earlier)
        return q.at[:, j].set(v / jnp.sqrt(jnp.sum(v * v)))

    return jax.lax.fori_loop(0, m, column, z)


def orthogonal(scale: float = 1.0):
    """Orthogonal initialiser (Saxe et al. 2014) for Dense kernels [in, out].

    The same distribution and, for the same key, the same matrix (up to rounding)
    as `jax.nn.initializers.orthogonal`: the Gaussian draw is identical and Q is
    that of its QR with R's diagonal made positive (Mezzadri 2007). Q is computed
    with Gram-Schmidt instead of LAPACK's QR because XLA-CPU's batched LAPACK QR
    can deadlock when two run at once on a small thread pool (every vmapped
    `init` on a 2-core machine hung intermittently).
    """

    def init(key, shape, dtype=jnp.float32):
        n_rows, n_cols = math.prod(shape[:-1]), shape[-1]
        z = jax.random.normal(key, (max(n_rows, n_cols), min(n_rows, n_cols)), dtype)
        q = _gram_schmidt(z)
        if n_rows < n_cols:
            q = q.T
        return (scale * q).reshape(shape).astype(dtype)

    return init


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(x: jax.Array, kernel: jax.Array, precision=None) -> jax.Array:
    return jnp.matmul(x, kernel, precision=precision)


def _matmul_fwd(x, kernel, precision):
    return _matmul(x, kernel, precision), (x, kernel)


def _matmul_bwd(precision, residuals, g):
    x, kernel = residuals
    dx = jnp.matmul(g, kernel.T, precision=precision)
    # The kernel's gradient is x^T g, contracted over the batch. Left to itself XLA folds the
    # transpose into the product, and XLA-CPU then runs it through Eigen: YNNPACK only takes
    # products whose left operand is row-major [m, k]. Kept as its own op (the barrier), the
    # transpose costs one small copy and the product runs in YNNPACK: 4% faster PPO CartPole
    # at 1 seed, 7-10% at 8 seeds vmapped (README, Performance). The same value as autodiff's
    # to float32 rounding.
    x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    dkernel = jnp.matmul(jax.lax.optimization_barrier(x2.T), g2, precision=precision)
    return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def dense_dot_general(x, kernel, dimension_numbers, precision=None, preferred_element_type=None):
    """`nn.Dense`'s product x @ kernel, with a gradient that XLA-CPU runs faster (see
    `_matmul_bwd`). Reverse-mode only: `jax.jvp` through it is not supported."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    if (tuple(lhs_contract) != (x.ndim - 1,) or tuple(rhs_contract) != (0,) or lhs_batch
            or rhs_batch or kernel.ndim != 2 or preferred_element_type is not None):
        return jax.lax.dot_general(x, kernel, dimension_numbers, precision,
                                   preferred_element_type=preferred_element_type)
    return _matmul(x, kernel, precision)


def _dense(features: int, scale: float) -> nn.Dense:
    return nn.Dense(features, kernel_init=orthogonal(scale), bias_init=nn.initializers.zeros,
                    dot_general=dense_dot_general)


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
