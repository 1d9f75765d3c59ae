"""The three pure functions of an agent (the whole contract: `agents.common.contract`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax


class Agent(NamedTuple):
    """Three pure functions; none of them is jit-decorated.

    init:   (key, hparams=None) -> state. Everything a run needs, tunable hyperparameters
            included (`state.hparams`, arrays). `hparams` maps some of their names to
            values that replace the config's, so a sweep can vmap over them; the agent
            uses them wherever they matter from the start (e.g. a wrapper's discount).
    update: state -> (state, metrics). One iteration (collect + learn); metrics
            are a flat dict of scalars reduced in-graph.
    act:    (params, x, key, deterministic=False) -> action. The policy, from
            `state.params` alone (weights and any normalisation statistics); x is what
            the module's ACT_INPUT says: an observation or an environment state.
    """

    init: Callable[..., Any]
    update: Callable[[Any], tuple[Any, dict[str, jax.Array]]]
    act: Callable[..., jax.Array]


def train_loop(agent: Agent, num_iterations: int):
    """`train(key) -> (final state, metrics [num_iterations])`: `init`, then `num_iterations`
    updates in one `lax.scan` (what an agent module's `make_train` returns)."""

    def train(key: jax.Array):
        state = agent.init(key)
        return jax.lax.scan(lambda s, _: agent.update(s), state, None, num_iterations)

    return train
