"""The pure functions of an agent (the whole contract: `agents.common.contract`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Agent(NamedTuple):
    """Three pure functions, and a fourth for a recurrent policy; none is jit-decorated.

    init:   (key, hparams=None) -> state. Everything a run needs, tunable hyperparameters
            included (`state.hparams`, arrays). `hparams` maps some of their names to
            values that replace the config's, so a sweep can vmap over them; the agent
            uses them wherever they matter from the start (e.g. a wrapper's discount).
    update: state -> (state, metrics). One iteration (collect + learn); metrics
            are a flat dict of scalars reduced in-graph.
    act:    (params, x, key, deterministic=False) -> action. The policy, from
            `state.params` alone (weights and any normalisation statistics); x is what
            the module's ACT_INPUT says: an observation or an environment state.
    init_carry: None for a stateless policy (the default). A recurrent policy's
            `init_carry(batch_shape) -> carry`: its memory before an episode's first step
            (a pytree, leaves [*batch_shape, ...]); its act is then
            `act(params, x, key, deterministic=False, carry=None) -> (action, carry)`,
            carry=None meaning `init_carry` of x's batch shape. The caller passes each
            step's returned carry to the next step, and `init_carry`'s where an episode
            ended (`reset_carry`).
    """

    init: Callable[..., Any]
    update: Callable[[Any], tuple[Any, dict[str, jax.Array]]]
    act: Callable[..., Any]
    init_carry: Callable[[tuple[int, ...]], Any] | None = None


def reset_carry(init_carry: Callable[[tuple[int, ...]], Any], carry, episode_start: jax.Array):
    """`carry` with `init_carry`'s value where `episode_start` [*batch_shape] is True: the
    memory a recurrent policy acts from where a new episode begins."""
    fresh = init_carry(episode_start.shape)

    def pick(new, old):
        mask = episode_start.reshape(episode_start.shape + (1,) * (old.ndim - episode_start.ndim))
        return jnp.where(mask, new, old)

    return jax.tree.map(pick, fresh, carry)


def train_loop(agent: Agent, num_iterations: int):
    """`train(key) -> (final state, metrics [num_iterations])`: `init`, then `num_iterations`
    updates in one `lax.scan` (what an agent module's `make_train` returns)."""

    def train(key: jax.Array):
        state = agent.init(key)
        return jax.lax.scan(lambda s, _: agent.update(s), state, None, num_iterations)

    return train
