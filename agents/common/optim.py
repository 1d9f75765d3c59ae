"""Optimiser factory: global-norm gradient clipping then Adam, hyperparameters passed per step.

The learning rate and clipping norm are arguments of `update`, not constants
baked into the transformation, so they can live in an agent's state as arrays
and be vmapped over (a hyperparameter sweep in one compiled program).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from agents.common import cpu


def make_optimizer(eps: float = 1e-5) -> optax.GradientTransformationExtraArgs:
    """`update(grads, opt_state, params=None, *, learning_rate, max_grad_norm)`.

    Clipping follows `optax.clip_by_global_norm`: gradients are scaled by
    max_grad_norm / ||g|| when ||g|| > max_grad_norm. Then Adam (optax's, or on CPU
    `agents.common.cpu.scale_by_adam`, the same up to float32 rounding) and a step of size
    `learning_rate`.
    """
    adam = cpu.adam(eps)

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


def linear_schedule(value: jax.Array, step: jax.Array, total_steps: int) -> jax.Array:
    """value * (1 - step / total_steps): linear annealing to 0 over `total_steps`."""
    return value * (1.0 - step / total_steps)
