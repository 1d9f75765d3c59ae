"""Return and advantage estimators: unbatched over time, callers vmap over environments."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def gae(
    r_t: jax.Array,
    v_t: jax.Array,
    v_next_t: jax.Array,
    terminated_t: jax.Array,
    truncated_t: jax.Array,
    gamma: float | jax.Array,
    lambda_: float | jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation with termination and truncation kept apart.

    Schulman et al. 2016, "High-Dimensional Continuous Control Using GAE":

        delta_t = r_t + gamma * (1 - terminated_t) * v_next_t - v_t
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1},   done = terminated or truncated

    `v_next_t` is the value of the state the transition really reached: with
    same-step auto-reset that is `V(info["final_observation"])`, so a truncated
    episode is bootstrapped from its final observation, a terminated one is not,
    and no trace crosses into the next episode. The last step bootstraps from
    `v_next_t[-1]` as well (no separate "last value").

    Args:
      r_t: rewards [T].
      v_t: values of the observations acted on [T].
      v_next_t: values of the true next observations [T].
      terminated_t: True where the episode ended in a terminal state [T].
      truncated_t: True where the episode was cut by a time limit [T].
      gamma: discount factor.
      lambda_: GAE lambda; 1 gives discounted returns minus values, 0 gives TD(0).

    Returns:
      (advantages [T], value targets = advantages + v_t [T]).
    """
    chex.assert_rank([r_t, v_t, v_next_t, terminated_t, truncated_t], 1)
    chex.assert_equal_shape([r_t, v_t, v_next_t, terminated_t, truncated_t])
    not_terminated = 1.0 - terminated_t.astype(v_t.dtype)
    not_done = 1.0 - jnp.logical_or(terminated_t, truncated_t).astype(v_t.dtype)
    delta_t = r_t + gamma * not_terminated * v_next_t - v_t
    trace_t = gamma * lambda_ * not_done

    def backward(next_advantage, inputs):
        delta, trace = inputs
        advantage = delta + trace * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(
        backward, jnp.zeros((), v_t.dtype), (delta_t, trace_t), reverse=True
    )
    return advantages, advantages + v_t


def discounted_returns(
    r_t: jax.Array, discount_t: jax.Array, v_bootstrap: float | jax.Array
) -> jax.Array:
    """G_t = r_t + discount_t * G_{t+1}, with G_T = v_bootstrap. Shapes [T] -> [T]."""
    chex.assert_rank([r_t, discount_t], 1)

    def backward(g_next, inputs):
        r, d = inputs
        g = r + d * g_next
        return g, g

    _, returns = jax.lax.scan(
        backward, jnp.asarray(v_bootstrap, r_t.dtype), (r_t, discount_t), reverse=True
    )
    return returns
