"""Optimiser factory: global-norm gradient clipping then Adam, hyperparameters passed per step.

The learning rate and clipping norm are arguments of `update`, not constants
baked into the transformation, so they can live in an agent's state as arrays
and be vmapped over (a hyperparameter sweep in one compiled program).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def make_optimizer(eps: float = 1e-5) -> optax.GradientTransformationExtraArgs:
    """`update(grads, opt_state, params=None, *, learning_rate, max_grad_norm)`.

    Clipping follows `optax.clip_by_global_norm`: gradients are scaled by
    max_grad_norm / ||g|| when ||g|| > max_grad_norm. Then Adam (`scale_by_adam`, the
    same as `optax.scale_by_adam`'s up to float32 rounding) and a step of size `learning_rate`.
    """
    adam = scale_by_adam(eps=eps)

    def init(params):
        return adam.init(params)

    def update(grads, opt_state, params=None, *, learning_rate, max_grad_norm):
        del params
        g_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
        scale = jnp.where(g_norm < max_grad_norm, 1.0, max_grad_norm / g_norm)
        grads = jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
        updates, opt_state = adam.update(grads, opt_state)
        updates = jax.tree.map(lambda u: -learning_rate * u, updates)
        return updates, opt_state

    return optax.GradientTransformationExtraArgs(init, update)


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """`optax.scale_by_adam` (same state, `optax.ScaleByAdamState`), with its bias corrections
    written as multiplications by 1 / (1 - b**t) instead of divisions by (1 - b**t).

    XLA rewrites `x / broadcast(c)` as `x * broadcast(1 / c)` when it compiles for one
    device but not in the SPMD-partitioned program it compiles for several, so optax's form
    made a run's last bits depend on how many devices shared the batch. Written as a
    multiplication, both programs compute the same numbers.
    """

    def init(params):
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32),
                                      mu=jax.tree.map(jnp.zeros_like, params),
                                      nu=jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params
        mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.mu)
        nu = jax.tree.map(lambda g, v: (1 - b2) * (g**2) + b2 * v, updates, state.nu)
        count = optax.safe_increment(state.count)
        inv1, inv2 = 1 / (1 - b1**count), 1 / (1 - b2**count)
        updates = jax.tree.map(
            lambda m, v: (m * inv1.astype(m.dtype)) / (jnp.sqrt(v * inv2.astype(v.dtype)) + eps), mu, nu)
        return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def linear_schedule(value: jax.Array, step: jax.Array, total_steps: int) -> jax.Array:
    """value * (1 - step / total_steps): linear annealing to 0 over `total_steps`."""
    return value * (1.0 - step / total_steps)
