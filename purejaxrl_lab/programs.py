"""The compiled programs of a run, over the whole batch of runs, each device on its share:

    init     (key_data, settings) -> states                     once (not when resuming)
    call     (states, settings, num_valid) -> (states, metrics)  each call: num_valid iterations
    evaluate (params, key_data, settings, iterations) -> metrics between calls, when due

Each is a `jax.shard_map` over the 1-D device mesh of a vmap over the device's runs
(`runtime.Layout`). `init` and `evaluate` run rarely: on CPU they compile at XLA's lowest
optimisation level, in a thread while Python traces and lowers `call`. The metrics `update`
returns are checked against the agent's declarations before anything runs.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from agents.common.contract import ContractError
from purejaxrl_lab import evaluation, runtime
from purejaxrl_lab.plan import Plan


@dataclasses.dataclass
class Programs:
    init: Any  # compiled, or None when the run resumes
    call: Any
    evaluate: Any  # compiled, or None without evaluation
    abstract_states: Any  # the batched state as ShapeDtypeStructs
    compile_time: float
    compilations: int
    cache_hits: int


def run_call_fn(plan: Plan, call_len: int, variable_length: bool):
    """One run's call: `call_len` iterations as a plain scan, or (`variable_length`) a loop
    of `num_valid` iterations writing into a [call_len] metrics buffer, so that one program
    serves calls of any length (a scan with a `lax.cond` skipping the surplus runs slower)."""

    def run_call(state, setting, num_valid):
        if not variable_length:
            return jax.lax.scan(lambda s, _: plan.update_one(s, setting), state, None, call_len)
        step = jax.jit(plan.update_one)  # jit caches the trace: the metrics' shapes cost no second one
        shapes = jax.eval_shape(step, state, setting)[1]
        buffer = jax.tree.map(lambda m: jnp.zeros((call_len, *m.shape), m.dtype), shapes)

        def body(i, carry):
            state, buffer = carry
            state, metrics = step(state, setting)
            return state, jax.tree.map(lambda b, m: jax.lax.dynamic_update_index_in_dim(b, m, i, 0),
                                       buffer, metrics)

        return jax.lax.fori_loop(0, num_valid, body, (state, buffer))

    return run_call


def evaluate_fn(plan: Plan):
    """One run's evaluation: `eval_episodes` episodes of the greedy policy on fresh
    environments, with keys of their own (`evaluation.eval_key`)."""

    def evaluate(params, key_data, setting, iterations_done):
        key = evaluation.eval_key(jax.random.wrap_key_data(key_data), iterations_done)
        agent = plan.make_agent(setting)
        env_params = evaluation.evaluation_params(plan.env, plan.env_params_for(setting))
        out = evaluation.run_episodes(key, agent.act, params, plan.env, env_params, plan.eval_episodes,
                                      plan.module.ACT_INPUT, init_carry=agent.init_carry)
        return {evaluation.EVAL_RETURN: out.returns.mean(), evaluation.EVAL_LENGTH: out.lengths.mean()}

    return evaluate


def build(plan: Plan, layout: runtime.Layout, call_len: int, variable_length: bool,
          keys_in, settings_in) -> Programs:
    """Traces, lowers and compiles the run's programs (`init` and `evaluate` in a thread)."""
    counts_before = runtime.compile_counts()
    t0 = time.perf_counter()
    sharded, replicated = layout.sharded, layout.replicated
    init = jax.jit(layout.per_device(layout.over_runs(plan.init_one), 2),
                   in_shardings=(sharded, sharded), out_shardings=sharded)
    call = jax.jit(layout.per_device(layout.over_runs(run_call_fn(plan, call_len, variable_length),
                                                      (0, 0, None)), 2, replicated_args=1),
                    in_shardings=(sharded, sharded, replicated), out_shardings=(sharded, replicated),
                    donate_argnums=0)
    abstract_states = jax.eval_shape(init, keys_in, settings_in)
    quick = runtime.compiler_options(plan.devices, runs_once=True)
    rare = []  # lowered here; XLA compiles them in a thread while the chunk is traced
    if plan.resume_step is None:
        rare.append(init.lower(keys_in, settings_in))
    if plan.eval_every:
        evaluate = jax.jit(layout.per_device(layout.over_runs(evaluate_fn(plan), (0, 0, 0, None)), 3,
                                             replicated_args=1),
                           in_shardings=(sharded, sharded, sharded, replicated), out_shardings=replicated)
        rare.append(evaluate.lower(abstract_states.params, keys_in, settings_in, np.int32(0)))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        compiled = pool.map(lambda lowered: lowered.compile(compiler_options=quick), rare)
        lowered = call.lower(abstract_states, settings_in, np.int32(call_len))
        check_metrics(plan, sorted(lowered.out_info[1]))
        call_program = lowered.compile(compiler_options=runtime.compiler_options(plan.devices))
        compiled = list(compiled)
    init_fn = compiled.pop(0) if plan.resume_step is None else None
    eval_program = compiled.pop(0) if plan.eval_every else None
    counts = runtime.compile_counts()
    return Programs(init_fn, call_program, eval_program, abstract_states,
                    time.perf_counter() - t0, counts["compilations"] - counts_before["compilations"],
                    counts["cache_hits"] - counts_before["cache_hits"])


def check_metrics(plan: Plan, names: list[str]) -> None:
    """The metrics `update` returns hold SCORE's metric (and weight), none named like an evaluation."""
    score = plan.module.SCORE
    missing = [n for n in (score.metric, score.weight) if n is not None and n not in names]
    if missing:
        raise ContractError(f"agent {plan.name}: SCORE names {', '.join(missing)}, which update does "
                            f"not return (its metrics: {', '.join(names)})")
    clash = [n for n in names if n.startswith(evaluation.EVAL_PREFIX)]
    if clash:
        raise ContractError(f"agent {plan.name}: metric names starting with "
                            f"{evaluation.EVAL_PREFIX!r} are kept for evaluations: {', '.join(clash)}")


def state_bytes(abstract_states, padded: int) -> int:
    """Bytes of one run's state (keys counted as their key data)."""
    def nbytes(a):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a = jax.eval_shape(jax.random.key_data, a)
        return int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize

    return sum(nbytes(a) for a in jax.tree.leaves(abstract_states)) // padded
