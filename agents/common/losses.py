"""PPO losses as small pure functions over a flat batch [B] (rlax style: ranks checked first).

Schulman et al. 2017, "Proximal Policy Optimization Algorithms".
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def clipped_surrogate_loss(
    log_ratio_t: jax.Array, adv_t: jax.Array, epsilon: float | jax.Array
) -> jax.Array:
    """-mean(min(rho * A, clip(rho, 1 - eps, 1 + eps) * A)), rho = exp(log_ratio).

    Args:
      log_ratio_t: log pi(a|s) - log pi_old(a|s) [B].
      adv_t: advantages [B].
      epsilon: clipping range.
    """
    chex.assert_rank([log_ratio_t, adv_t], 1)
    ratio = jnp.exp(log_ratio_t)
    unclipped = ratio * adv_t
    clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon) * adv_t
    return -jnp.mean(jnp.minimum(unclipped, clipped))


def value_loss(
    v_t: jax.Array,
    v_old_t: jax.Array,
    target_t: jax.Array,
    epsilon: float | jax.Array,
    clip: bool = True,
) -> jax.Array:
    """0.5 * mean(max((v - G)^2, (v_old + clip(v - v_old, -eps, eps) - G)^2)).

    With `clip=False`: 0.5 * mean((v - G)^2).
    """
    chex.assert_rank([v_t, v_old_t, target_t], 1)
    squared = jnp.square(v_t - target_t)
    if clip:
        v_clipped = v_old_t + jnp.clip(v_t - v_old_t, -epsilon, epsilon)
        squared = jnp.maximum(squared, jnp.square(v_clipped - target_t))
    return 0.5 * jnp.mean(squared)


def approx_kl(log_ratio_t: jax.Array) -> jax.Array:
    """mean((rho - 1) - log rho): an unbiased, non-negative estimate of KL(old || new)."""
    chex.assert_rank(log_ratio_t, 1)
    return jnp.mean(jnp.expm1(log_ratio_t) - log_ratio_t)


def clip_fraction(log_ratio_t: jax.Array, epsilon: float | jax.Array) -> jax.Array:
    """Fraction of samples whose ratio lies outside [1 - eps, 1 + eps]."""
    chex.assert_rank(log_ratio_t, 1)
    return jnp.mean((jnp.abs(jnp.expm1(log_ratio_t)) > epsilon).astype(jnp.float32))
