"""`run`: train an agent over many seeds as one compiled program, in chunks.

    init   : jit(vmap(agent.init))                 once
    chunk  : jit(vmap(scan(agent.update, K)))     compiled once, called ceil(N / K) times

Between chunks the host updates the progress bar and collects the chunk's
per-iteration metrics; nothing crosses to the host inside the compiled program.
All chunks have the same length K, so the last, shorter chunk reuses the same
program: iterations past the end are skipped with a `lax.cond` whose predicate
is not batched (it stays a real branch under vmap).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import platform
import time
import warnings
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import agents
import envs
from agents.common import with_overrides
from purejaxrl_lab.results import Results

PACKAGES = ("jax", "jaxlib", "flax", "optax", "gymnax", "distrax", "chex", "numpy",
            "orbax-checkpoint", "purejaxrl-lab")


def resolve_agent(agent: str | ModuleType) -> tuple[str, ModuleType]:
    if isinstance(agent, str):
        return agent, agents.get(agent)
    if isinstance(agent, ModuleType) and hasattr(agent, "make") and hasattr(agent, "Config"):
        return agent.__name__.rsplit(".", 1)[-1], agent
    raise ValueError(f"agent={agent!r} is not allowed: expected a name from "
                     f"{agents.available()} or an agent module with Config and make")


def resolve_config(module: ModuleType, config: Any):
    if config is None:
        return module.Config()
    if isinstance(config, module.Config):
        return config
    if isinstance(config, Mapping):
        return with_overrides(module.Config(), config)
    raise ValueError(f"config={config!r} is not allowed: expected None, a "
                     f"{module.__name__}.Config or a mapping of field overrides")


def resolve_env(env: Any):
    """-> (env id or name, env, env_params)."""
    if isinstance(env, str):
        return (env, *envs.make(env))
    if isinstance(env, tuple) and len(env) == 2:
        return (env[0].name, *env)
    raise ValueError(f"env={env!r} is not allowed: expected an environment id "
                     f"(see envs.registered()) or an (env, env_params) pair")


def resolve_seeds(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, bool):
        raise ValueError(f"seeds={seeds!r} is not allowed: expected an integer >= 1 or a list of integers")
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ValueError(f"seeds={seeds!r} is not allowed: expected an integer >= 1")
        return list(range(int(seeds)))
    if isinstance(seeds, Sequence) and seeds and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in seeds
    ):
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds={list(seeds)!r} is not allowed: seeds must be distinct")
        return [int(s) for s in seeds]
    raise ValueError(f"seeds={seeds!r} is not allowed: expected an integer >= 1 or a "
                     f"non-empty list of distinct non-negative integers")


def environment_info() -> tuple[dict[str, str], dict[str, Any]]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    devices = jax.devices()
    device = {"platform": devices[0].platform, "kind": devices[0].device_kind,
              "count": len(devices), "host": platform.node()}
    return versions, device


def chunk_length(num_iterations: int, num_chunks: int) -> tuple[int, bool]:
    """(iterations per chunk, whether the last chunk is partial and needs skipping).

    Prefers a length that divides `num_iterations` with between half and twice the
    requested number of chunks (the compiled chunk is then a plain scan); otherwise
    uses ceil(num_iterations / num_chunks) and skips the surplus iterations of the
    last chunk with a `lax.cond`.
    """
    target = max(1, min(num_chunks, num_iterations))
    candidates = [c for c in range(max(1, target // 2), min(num_iterations, 2 * target) + 1)
                  if num_iterations % c == 0]
    if candidates:
        count = min(candidates, key=lambda c: abs(c - target))
        return num_iterations // count, False
    return math.ceil(num_iterations / target), True


def seed_keys(seeds: Sequence[int]) -> jax.Array:
    """Key i is `jax.random.key(seeds[i])`: seed i of a batched run is the single run with that key."""
    return jnp.stack([jax.random.key(s) for s in seeds])


@dataclasses.dataclass(frozen=True)
class Plan:
    """A validated run, built without compiling anything (see `prepare`)."""

    name: str
    config: Any
    env_id: str
    seeds: list[int]
    agent: Any  # the Agent built by module.make
    num_chunks: int


def prepare(agent: str | ModuleType, config: Any = None, env: Any = "CartPole-v1",
            seeds: int | Sequence[int] = 1, *, num_chunks: int = 20) -> Plan:
    """Resolves and checks every input of `run`; raises ValueError, compiles nothing."""
    name, module = resolve_agent(agent)
    config = resolve_config(module, config)
    env_id, env_obj, env_params = resolve_env(env)
    seed_list = resolve_seeds(seeds)
    if isinstance(num_chunks, bool) or not isinstance(num_chunks, int) or num_chunks < 1:
        raise ValueError(f"num_chunks={num_chunks!r} is not allowed: expected an integer >= 1")
    the_agent = module.make(config, env_obj, env_params)  # validates config against env
    return Plan(name, config, env_id, seed_list, the_agent, num_chunks)


def run(
    agent: str | ModuleType,
    config: Any = None,
    env: Any = "CartPole-v1",
    seeds: int | Sequence[int] = 1,
    *,
    num_chunks: int = 20,
    progress: bool = True,
) -> Results:
    """Trains `agent` on `env` for every seed, in one compiled program.

    Args:
      agent: a registered name ("ppo") or an agent module (`agents.ppo`).
      config: None (defaults), the agent's Config, or a mapping of field overrides.
      env: an environment id or an `(env, env_params)` pair.
      seeds: N (seeds 0..N-1) or a list of distinct integer seeds.
      num_chunks: how many times the host reports progress during the run.
      progress: show a progress bar.

    Returns:
      `Results` with metrics [seed, iteration]; warns if a loss went non-finite.

    Raises:
      ValueError: bad input, before anything is compiled.
    """
    return execute(prepare(agent, config, env, seeds, num_chunks=num_chunks), progress=progress)


def execute(plan: Plan, progress: bool = True) -> Results:
    """Compiles and runs a prepared plan."""
    name, config, env_id, seed_list, the_agent = (
        plan.name, plan.config, plan.env_id, plan.seeds, plan.agent)
    num_iterations = config.num_iterations
    chunk_len, needs_skip = chunk_length(num_iterations, plan.num_chunks)
    keys = seed_keys(seed_list)

    def run_chunk(state, num_valid):
        if not needs_skip:  # every chunk is full: a plain scan
            return jax.lax.scan(lambda s, _: the_agent.update(s), state, None, chunk_len)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                             jax.eval_shape(the_agent.update, state)[1])

        def body(state, i):
            return jax.lax.cond(i < num_valid, the_agent.update, lambda s: (s, zeros), state)

        return jax.lax.scan(body, state, jnp.arange(chunk_len))

    t0 = time.perf_counter()
    init_fn = jax.jit(jax.vmap(the_agent.init)).lower(keys).compile()
    states_shape = jax.eval_shape(jax.vmap(the_agent.init), keys)
    chunk_fn = (
        jax.jit(jax.vmap(run_chunk, in_axes=(0, None)), donate_argnums=0)
        .lower(states_shape, jnp.int32(chunk_len))
        .compile()
    )
    compile_time = time.perf_counter() - t0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_iterations, unit="it", desc=f"{name} {env_id} x{len(seed_list)} seeds",
                   dynamic_ncols=True)
    t0 = time.perf_counter()
    states = init_fn(keys)
    collected: list[dict[str, np.ndarray]] = []
    done = 0
    pending = None
    while done < num_iterations or pending is not None:
        launched = None
        if done < num_iterations:
            n = min(chunk_len, num_iterations - done)
            states, metrics = chunk_fn(states, jnp.int32(n))  # asynchronous on GPU/TPU
            launched, done = (metrics, n), done + n
        if pending is not None:  # read the previous chunk while this one runs
            metrics, n = pending
            host = {k: np.asarray(v)[:, :n] for k, v in metrics.items()}
            collected.append(host)
            if bar is not None:
                elapsed = time.perf_counter() - t0
                finished = sum(c["episodes"].shape[1] for c in collected)
                ret = host["episode_return"][:, -max(1, n // 4):]
                bar.update(n)
                bar.set_postfix({
                    "env_steps": f"{finished * config.steps_per_iteration:,}",
                    "steps/s": f"{finished * config.steps_per_iteration * len(seed_list) / elapsed:,.0f}",
                    "return": f"{np.nanmean(ret):.1f}" if np.isfinite(ret).any() else "n/a",
                })
        pending = launched
    jax.block_until_ready(states)
    run_time = time.perf_counter() - t0
    if bar is not None:
        bar.close()

    metrics = {k: np.concatenate([c[k] for c in collected], axis=1) for k in collected[0]}
    versions, device = environment_info()
    results = Results(
        agent=name, env=env_id, config=dataclasses.asdict(config), seeds=seed_list,
        metrics=metrics, steps_per_iteration=config.steps_per_iteration,
        compile_time=compile_time, run_time=run_time, versions=versions, device=device,
        final_state=states,
    )
    bad = results.non_finite()
    if bad:
        detail = "; ".join(f"{k} (seeds {v})" for k, v in bad.items())
        warnings.warn(f"non-finite values in metrics: {detail}", RuntimeWarning, stacklevel=2)
    return results
