"""Tree search through mctx, and value targets from outcomes, for the planning agents.

A search agent gives mctx a root (prior logits and value of the network at the current
observation) and a recurrent function (a model of one step). AlphaZero's model is the
environment's own step (`true_model`); MuZero's is learned. Both share `search` and the
targets below.

Conventions (mctx's): a node's value is from the view of the player to move there; the
reward of an edge is the mover's; the discount of an edge is 0 where the move ended the
episode, -1 between the turns of a two-player zero-sum game (the next node's value is the
other player's), and gamma in a single-player environment. Illegal moves get prior logit
`MASKED` at every node, not only at the root, so search never visits them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

MASKED = -1e9
"""The prior logit of an illegal move: finite (no NaN in softmax), never chosen."""


def legal_action_mask(env_state: Any, batch: int, num_actions: int) -> jax.Array:
    """[batch, num_actions] bool: the legal moves of a batch of environment states (a board
    game's `legal_action_mask`), every action for an environment without a mask."""
    mask = getattr(env_state, "legal_action_mask", None)
    return jnp.broadcast_to(True if mask is None else mask, (batch, num_actions))


def is_two_player(env_state: Any) -> bool:
    """Whether the state is of a two-player game (it names the player to move)."""
    return hasattr(env_state, "current_player")


def masked_logits(logits: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.where(mask, logits, MASKED)


def step_discount(ended: jax.Array, two_player: bool, gamma) -> jax.Array:
    """0 where the move ended the episode; else -1 (two players take turns) or gamma."""
    return jnp.where(ended, 0.0, -1.0 if two_player else gamma).astype(jnp.float32)


def check_deterministic_step(env, env_params, agent_name: str, games: int = 16,
                             moves: int = 12) -> None:
    """Refuses an environment whose step is random (it cannot be the search's model): from the
    states of `games` random games over `moves` moves, two steps with different keys must give
    the same observation, next state, reward and ending. Runs eagerly (before the agent
    compiles); the answer is remembered per environment and parameters."""
    from envs import transition

    cache_key = (type(env), env.name, repr(env_params))
    if cache_key in _DETERMINISTIC:
        deterministic = _DETERMINISTIC[cache_key]
    else:
        num_actions = env.action_space(env_params).n
        deterministic = _DETERMINISTIC[cache_key] = _probe(env, env_params, num_actions, games,
                                                           moves, transition, agent_name)
    if not deterministic:
        raise ValueError(
            f"env: {agent_name} plans with the environment's own step, and {env.name}'s step is "
            f"random (the same state and action gave different outcomes); MuZero learns a model "
            f"and fits it (purejaxrl-lab train muzero --env {env.name})")


_DETERMINISTIC: dict = {}


def _data(x: jax.Array) -> jax.Array:
    """An array comparable with ==: a typed PRNG key's data, else the array."""
    return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def _probe(env, env_params, num_actions, games, moves, transition, agent_name) -> bool:
    def probe(key):
        key_reset, key_moves = jax.random.split(key)
        _, state = env.reset(key_reset, env_params)

        def move(state, key):
            key_action, key_a, key_b, key_on = jax.random.split(key, 4)
            action = jax.random.randint(key_action, (), 0, num_actions)
            a = transition(env, key_a, state, action, env_params)
            b = transition(env, key_b, state, action, env_params)
            same = jax.tree.map(lambda x, y: jnp.all(_data(x) == _data(y)),
                                (a[0], a[1], a[2], a[3]), (b[0], b[1], b[2], b[3]))
            _, state, _, _, _, _ = env.step(key_on, state, action, env_params)
            return state, jnp.all(jnp.stack(jax.tree.leaves(same)))

        return jax.lax.scan(move, state, jax.random.split(key_moves, moves))[1].all()

    try:
        with jax.ensure_compile_time_eval():
            return bool(jax.jit(jax.vmap(probe))(jax.random.split(jax.random.key(0), games)).all())
    except ValueError as e:  # no step without the auto-reset (envs.transition)
        raise ValueError(f"env: {agent_name} cannot use {env.name}'s step as its model: {e}; "
                         f"MuZero learns a model and fits it") from None


def true_model(env, env_params, predict: Callable, num_actions: int, two_player: bool,
               gamma: float = 1.0) -> Callable:
    """mctx's `recurrent_fn` with the environment's own step as the model (AlphaZero).

    The embedding is the batched environment state. The step is gymnax's transition without
    the auto-reset (`envs.transition`) under `env_params`: for a board game, those of the
    two-player game (`opponent=None`). `predict(params, obs) -> (logits [B, A], value [B])`
    is the network. Terminal nodes get discount 0 and value 0; their children are never
    worth anything to the search.
    """
    import mctx

    from envs import transition

    def recurrent_fn(params, key, action, state):
        keys = jax.random.split(key, action.shape[0])
        obs, state, reward, terminated, _, _ = jax.vmap(
            transition, in_axes=(None, 0, 0, 0, None))(env, keys, state, action, env_params)
        logits, value = predict(params, obs)
        mask = legal_action_mask(state, action.shape[0], num_actions)
        out = mctx.RecurrentFnOutput(
            reward=reward.astype(jnp.float32),
            discount=step_discount(terminated, two_player, gamma),
            prior_logits=masked_logits(logits, mask),
            value=jnp.where(terminated, 0.0, value))
        return out, state

    return recurrent_fn


def search(params, key: jax.Array, prior_logits: jax.Array, value: jax.Array, embedding: Any,
           recurrent_fn: Callable, mask: jax.Array, num_simulations: int,
           max_num_considered_actions: int, gumbel_scale: float = 1.0):
    """Gumbel MuZero search (Danihelka et al. 2022) from a batch of roots.

    prior_logits [B, A] and value [B] are the network's at the roots, embedding (batched) the
    model's state there, mask [B, A] their legal moves (illegal ones get prior `MASKED` and
    are never chosen). `gumbel_scale` 0 searches without the Gumbel noise (evaluation).
    Returns mctx's `PolicyOutput`: `action` [B] and `action_weights` [B, A], the improved
    policy (the policy target).
    """
    import mctx

    root = mctx.RootFnOutput(prior_logits=masked_logits(prior_logits, mask), value=value,
                             embedding=embedding)
    return mctx.gumbel_muzero_policy(
        params, key, root, recurrent_fn, num_simulations, invalid_actions=~mask,
        max_num_considered_actions=max_num_considered_actions, gumbel_scale=gumbel_scale)


def outcome_targets(reward: jax.Array, discount: jax.Array, terminated: jax.Array,
                    truncated: jax.Array | None = None):
    """Value targets of the positions of a rollout from how their episodes ended.

    Args:
      reward: [T, ...] the mover's reward for the move made at t.
      discount: [T, ...] `step_discount` of that move (0 where it ended the episode, by
        termination or truncation).
      terminated: [T, ...] bool, the move at t ended the game (an outcome).
      truncated: [T, ...] bool or None, the episode was cut at t without an outcome.

    Returns:
      (targets, known), both [T, ...]: z_t = r_t + discount_t * z_{t+1} from the view of the
      player to move at t, and whether the game of position t reached its outcome within the
      rollout (unknown for a game still running at the end, or truncated; `known` masks it).
    """
    if truncated is None:
        truncated = jnp.zeros_like(terminated)

    def back(carry, x):
        z_next, known_next = carry
        r, d, term, trunc = x
        z = r + d * z_next
        known = term | (known_next & ~trunc)
        return (z, known), (z, known)

    init = (jnp.zeros_like(reward[0], jnp.float32), jnp.zeros_like(terminated[0], bool))
    _, (targets, known) = jax.lax.scan(
        back, init, (reward.astype(jnp.float32), discount, terminated, truncated), reverse=True)
    return targets, known
