"""Scalars as categorical distributions over a fixed support (MuZero's value and reward heads).

A scalar x is first squashed by the invertible h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x
(Pohlen et al. 2018), then spread over the two neighbouring integers of the support
{-S, ..., S} (a "two-hot" vector whose mean is h(x)). The network predicts logits over the
support; its scalar is h^-1 of the distribution's mean.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EPS = 1e-3
"""The eps of h (MuZero's)."""


def h(x: jax.Array, eps: float = EPS) -> jax.Array:
    """sign(x) (sqrt(|x| + 1) - 1) + eps x."""
    return jnp.sign(x) * (jnp.sqrt(jnp.abs(x) + 1.0) - 1.0) + eps * x


def h_inverse(y: jax.Array, eps: float = EPS) -> jax.Array:
    """The inverse of h: sign(y) (((sqrt(1 + 4 eps (|y| + 1 + eps)) - 1) / (2 eps))^2 - 1)."""
    root = (jnp.sqrt(1.0 + 4.0 * eps * (jnp.abs(y) + 1.0 + eps)) - 1.0) / (2.0 * eps)
    return jnp.sign(y) * (jnp.square(root) - 1.0)


def two_hot(y: jax.Array, support_size: int) -> jax.Array:
    """y [...] -> [..., 2 S + 1]: weights on the support {-S, ..., S} at the two integers
    around y (clipped to [-S, S]), summing to 1, with mean y."""
    y = jnp.clip(y, -support_size, support_size)
    low = jnp.floor(y)
    upper = y - low  # weight of low + 1
    index = (low + support_size).astype(jnp.int32)
    size = 2 * support_size + 1
    return (jax.nn.one_hot(index, size) * (1.0 - upper)[..., None]
            + jax.nn.one_hot(jnp.minimum(index + 1, size - 1), size) * upper[..., None])


def scalar_to_probs(x: jax.Array, support_size: int) -> jax.Array:
    """A scalar target [...] -> its distribution over the support [..., 2 S + 1]: two_hot(h(x))."""
    return two_hot(h(x), support_size)


def logits_to_scalar(logits: jax.Array, support_size: int) -> jax.Array:
    """Logits [..., 2 S + 1] -> scalar [...]: h^-1 of the mean of softmax(logits) over the
    support."""
    support = jnp.arange(-support_size, support_size + 1, dtype=jnp.float32)
    return h_inverse(jnp.sum(jax.nn.softmax(logits) * support, axis=-1))
