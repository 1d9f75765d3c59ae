"""Dynamic programming on a tabular model (Sutton & Barto chapter 4): plain functions,
jit-compatible, on `envs.tabular_model(env, env_params)`.

    q(s, a) = sum_s' P(s' | s, a) [R(s, a, s') + gamma (1 - terminal(s')) v(s')]

    policy_evaluation   v_pi, exactly: the linear system v = r_pi + gamma P_pi v
    value_iteration     v <- max_a q(s, a) until the largest change is below tol
    policy_iteration    evaluate exactly, act greedily, until the policy is stable

A terminal state's value is 0. Ties between actions go to the lowest index.

    model = envs.tabular_model(*envs.make("FrozenLake8x8-v1"))
    values, policy = agents.tabular.value_iteration(model, gamma=0.99)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from envs.tabular import TabularModel


def _check(model: TabularModel, gamma) -> None:
    if model.transitions.ndim != 3 or model.transitions.shape[0] != model.transitions.shape[2]:
        raise ValueError(f"model.transitions: expected [S, A, S], got shape {model.transitions.shape}")
    if isinstance(gamma, (int, float)) and not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma={gamma!r} is not allowed: expected a discount in [0, 1]")


def action_values(model: TabularModel, values: jax.Array, gamma) -> jax.Array:
    """q [S, A]: sum_s' P(s'|s,a) (R(s,a,s') + gamma (1 - terminal(s')) v(s'))."""
    future = gamma * jnp.where(model.terminal, 0.0, values)
    return jnp.einsum("sat,sat->sa", model.transitions, model.rewards + future[None, None, :])


def greedy(model: TabularModel, values: jax.Array, gamma) -> jax.Array:
    """The greedy policy [S] (int32) of `values`."""
    return jnp.argmax(action_values(model, values, gamma), axis=1).astype(jnp.int32)


def _policy_matrix(policy: jax.Array, num_actions: int) -> jax.Array:
    """pi(a | s) [S, A] from a deterministic policy [S] or a stochastic one [S, A]."""
    if policy.ndim == 1:
        return jax.nn.one_hot(policy, num_actions, dtype=jnp.float32)
    if policy.ndim != 2 or policy.shape[1] != num_actions:
        raise ValueError(f"policy: expected [S] actions or [S, {num_actions}] probabilities, "
                         f"got shape {policy.shape}")
    return policy


def policy_evaluation(model: TabularModel, policy: jax.Array, gamma) -> jax.Array:
    """v_pi [S] exactly: solves (I - gamma P_pi M) v = r_pi, M masking terminal successors,
    with v = 0 on terminal states.

    Args:
      policy: actions [S] (int) or probabilities pi(a | s) [S, A].
      gamma: discount; gamma = 1 needs a policy that ends every episode.
    """
    _check(model, gamma)
    num_states, num_actions, _ = model.transitions.shape
    pi = _policy_matrix(policy, num_actions)
    p_pi = jnp.einsum("sa,sat->st", pi, model.transitions)  # [S, S]
    r_pi = jnp.einsum("sa,sat,sat->s", pi, model.transitions, model.rewards)  # [S]
    live = ~model.terminal
    p_pi = jnp.where(live[:, None] & live[None, :], p_pi, 0.0)
    r_pi = jnp.where(live, r_pi, 0.0)
    return jnp.linalg.solve(jnp.eye(num_states) - gamma * p_pi, r_pi)


def value_iteration(model: TabularModel, gamma, tol: float = 1e-8,
                    max_iterations: int = 100_000) -> tuple[jax.Array, jax.Array]:
    """-> (v* [S], a greedy policy [S]): v <- max_a q(s, a) until max |change| <= tol (or
    `max_iterations` sweeps)."""
    _check(model, gamma)

    def sweep(carry):
        values, _, i = carry
        new = jnp.where(model.terminal, 0.0, action_values(model, values, gamma).max(axis=1))
        return new, jnp.abs(new - values).max(), i + 1

    def running(carry):
        return (carry[1] > tol) & (carry[2] < max_iterations)

    zeros = jnp.zeros(model.transitions.shape[0], model.rewards.dtype)
    values, _, _ = jax.lax.while_loop(running, sweep, (zeros, jnp.asarray(jnp.inf, zeros.dtype),
                                                       jnp.int32(0)))
    return values, greedy(model, values, gamma)


def policy_iteration(model: TabularModel, gamma, max_iterations: int = 1_000
                     ) -> tuple[jax.Array, jax.Array]:
    """-> (v* [S], an optimal policy [S]): exact evaluation and greedy improvement until the
    policy is stable. An action changes only when another is strictly better (by more than
    1e-6 of the value's scale), so the loop ends."""
    _check(model, gamma)
    num_states = model.transitions.shape[0]

    def step(carry):
        policy, _, i = carry
        values = policy_evaluation(model, policy, gamma)
        q = action_values(model, values, gamma)
        current = jnp.take_along_axis(q, policy[:, None], axis=1)[:, 0]
        better = q.max(axis=1) > current + 1e-6 * (1.0 + jnp.abs(current))
        new = jnp.where(better, jnp.argmax(q, axis=1).astype(jnp.int32), policy)
        return new, jnp.any(new != policy), i + 1

    def running(carry):
        return carry[1] & (carry[2] < max_iterations)

    start = jnp.zeros(num_states, jnp.int32)
    policy, _, _ = jax.lax.while_loop(running, step, (start, jnp.bool_(True), jnp.int32(0)))
    return policy_evaluation(model, policy, gamma), policy
