"""`run` and `sweep`: train an agent over many seeds (and settings) as one compiled program.

    init   : jit(vmap(init))                          once (skipped when resuming)
    chunk  : jit(vmap(scan(update, m * K)))           compiled once, called for 1 to m chunks

The run is cut into chunks of K iterations (about `num_chunks` of them): the unit of
logging and checkpointing. The vmapped axis is the batch of runs, [setting x seed]
flattened (run b is setting b // num_seeds with seed b % num_seeds), sharded over a
1-D device mesh (see `runtime`). Between calls the host updates the progress bar,
writes logs and checkpoints; nothing crosses to the host inside the compiled program.

One call runs up to m consecutive chunks (`chunks_per_call`): when chunks are quick,
the host sizes calls to last about `CALL_SECONDS`, because on CPU short calls run
slower per iteration than long ones (XLA-CPU's threads settle; 16 calls of 0.2 s cost
~5-10% against one call). The call's length is then a runtime argument (a loop of
`num_valid` iterations filling a metrics buffer of m chunks), so one program serves
every call and the numbers do not depend on how the chunks were grouped.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib.metadata
import math
import platform
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import agents
import envs
from agents.common import with_overrides
from purejaxrl_lab import checkpoint as ckpt
from purejaxrl_lab import grid as grid_lib
from purejaxrl_lab import programs as programs_lib
from purejaxrl_lab import runtime
from purejaxrl_lab.loggers import Logger, log_chunk
from purejaxrl_lab.results import Results, SweepResults

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
              "count": len(devices), "host": platform.node(), "cpu_cores": runtime.cpu_cores(),
              "cpu_model": runtime.cpu_model()}
    return versions, device


def chunk_length(num_iterations: int, num_chunks: int) -> tuple[int, bool]:
    """(iterations per chunk, whether the last chunk is partial).

    Prefers a length that divides `num_iterations` with between half and twice the
    requested number of chunks; otherwise uses ceil(num_iterations / num_chunks), and the
    last call runs fewer iterations. A program that runs whole chunks of one length, one
    chunk per call, is a plain scan; otherwise (a partial chunk, or several chunks per
    call) it is a loop over the call's number of iterations (`execute`).
    """
    target = max(1, min(num_chunks, num_iterations))
    candidates = [c for c in range(max(1, target // 2), min(num_iterations, 2 * target) + 1)
                  if num_iterations % c == 0]
    if candidates:
        count = min(candidates, key=lambda c: abs(c - target))
        return num_iterations // count, False
    return math.ceil(num_iterations / target), True


# A call runs whole chunks until it has lasted about this long (measured on the calls before).
CALL_SECONDS = 1.0
# At most this many chunks per call; the program's metrics buffer holds this many chunks.
MAX_CHUNKS_PER_CALL = 4
# ... and at most this many [run, iteration] entries per metric (64 MiB of float32 per metric).
MAX_CALL_METRIC_ENTRIES = 2**24


def chunks_per_call(num_iterations: int, chunk_len: int, batch: int) -> int:
    """m, the most chunks one call runs: `MAX_CHUNKS_PER_CALL`, or fewer when the run has
    fewer chunks or when m chunks of metrics for the whole batch would pass
    `MAX_CALL_METRIC_ENTRIES` per metric."""
    return max(1, min(MAX_CHUNKS_PER_CALL, math.ceil(num_iterations / chunk_len),
                      MAX_CALL_METRIC_ENTRIES // (batch * chunk_len)))


def next_call_chunks(limit: int, seconds_per_chunk: float | None) -> int:
    """How many chunks (1 to `limit`) the next call runs: as many as fill `CALL_SECONDS`
    at the measured rate, one while there is no measurement yet."""
    if seconds_per_chunk is None:
        return 1
    return max(1, min(limit, int(CALL_SECONDS / max(seconds_per_chunk, 1e-9))))


def seed_key_data(seeds: Sequence[int]) -> np.ndarray:
    """Key data [num_seeds, ...] of `jax.random.key(seed)`: seed i of a batched run is the
    single run with that key."""
    return np.stack([np.asarray(jax.random.key_data(jax.random.key(s))) for s in seeds])




def tunable_fields(abstract_state) -> list[str]:
    """The agent's tunable hyperparameters: the fields of its `state.hparams`."""
    hparams = getattr(abstract_state, "hparams", None)
    if hparams is None:
        return []
    if dataclasses.is_dataclass(hparams):
        return [f.name for f in dataclasses.fields(hparams)]
    return list(getattr(hparams, "_fields", []))


def shape_fields(config, tunable: Sequence[str]) -> set[str]:
    """Config fields that fix shapes: integer sizes and tuples of them (DESIGN: they stay
    Python ints), other than the tunable ones."""
    out = set()
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        sized = (isinstance(v, int) and not isinstance(v, bool)) or (
            isinstance(v, tuple) and all(isinstance(x, int) for x in v))
        if sized and f.name not in tunable:
            out.add(f.name)
    return out


@dataclasses.dataclass(frozen=True)
class Plan:
    """A validated run or sweep, built without compiling anything (see `prepare`)."""

    name: str
    module: ModuleType
    config: Any
    env_id: str
    env: Any
    env_params: Any
    seeds: list[int]
    settings: list[dict] | None  # None for a plain run
    dtypes: dict[str, np.dtype]  # swept name -> dtype of its array in the program
    num_chunks: int
    devices: list
    agent: Any  # the Agent `module.make` built for the base config
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 5
    resume_step: int | None = None  # the checkpoint to continue from
    env_from_id: bool = False  # built by envs.make from `env_id` (not an object of the caller's)

    @property
    def num_settings(self) -> int:
        return 1 if self.settings is None else len(self.settings)

    @property
    def batch(self) -> int:
        """Runs trained together: settings x seeds."""
        return self.num_settings * len(self.seeds)

    def meta(self) -> dict[str, Any]:
        """What identifies this run in its checkpoints."""
        return {
            "format": ckpt.FORMAT, "agent": self.name, "env": self.env_id,
            "config": ckpt.json_ready(dataclasses.asdict(self.config)),
            "env_params": ckpt.env_params_dict(self.env_params),
            "seeds": list(self.seeds), "settings": ckpt.json_ready(self.settings),
        }

    def make_agent(self, setting: Mapping[str, Any]):
        """The agent for one run; env.* values of `setting` (arrays inside a trace) replace
        the environment parameters."""
        env_values = grid_lib.split(setting)[1]
        if not env_values:
            return self.agent
        return self.module.make(self.config, self.env, self.env_params.replace(**env_values))

    def init_one(self, key_data: jax.Array, setting: Mapping[str, jax.Array]):
        hparams = grid_lib.split(setting)[0]
        agent = self.make_agent(setting)
        key = jax.random.wrap_key_data(key_data)
        return agent.init(key, hparams) if hparams else agent.init(key)

    def update_one(self, state, setting: Mapping[str, jax.Array]):
        return self.make_agent(setting).update(state)

    def inputs(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Host arrays [batch, ...]: each run's key data and setting values."""
        n = len(self.seeds)
        key_data = np.tile(seed_key_data(self.seeds), (self.num_settings, 1))
        settings = {name: np.repeat(np.array([s[name] for s in self.settings], dtype), n)
                    for name, dtype in self.dtypes.items()}
        return key_data, settings


def _check_env_sweep(plan: Plan) -> None:
    """Traces (does not compile) one update with the env.* values as arrays: an environment
    that needs one of them as a Python value (a shape, a branch) is refused by name."""
    names = [n for n in plan.dtypes if n.startswith(grid_lib.ENV_PREFIX)]
    if not names:
        return
    key_data, settings = plan.inputs()
    spec = lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype)  # noqa: E731
    try:
        state = jax.eval_shape(plan.init_one, spec(key_data), {k: spec(v) for k, v in settings.items()})
        jax.eval_shape(plan.update_one, state, {k: spec(v) for k, v in settings.items()})
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
            jax.errors.TracerIntegerConversionError, TypeError) as e:
        raise ValueError(
            f"{', '.join(names)} cannot be swept in one compiled program: {plan.env_id} uses "
            f"it as a Python value (a shape or a branch), not an array "
            f"({type(e).__name__}). Run one sweep per value instead") from None


def _check_checkpointing(checkpoint_dir, checkpoint_every, resume,
                         expected_meta: dict, shapes: set[str]) -> dict:
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every={checkpoint_every!r} is not allowed: expected an "
                         f"integer >= 1 (chunks between checkpoints)")
    out = {"checkpoint_every": checkpoint_every}
    if resume is not None:
        directory = ckpt.directory_of(resume)
        if not Path(resume).is_dir():
            raise ValueError(f"resume={str(resume)!r} is not allowed: no such directory")
        if checkpoint_dir is not None and Path(checkpoint_dir).absolute() != directory.absolute():
            raise ValueError(f"checkpoint_dir={str(checkpoint_dir)!r} is not allowed with "
                             f"resume={str(resume)!r}: a resumed run keeps checkpointing where it was")
        store = ckpt.Checkpoints(directory)
        try:
            step = store.latest()
            if step is None:
                raise ValueError(f"resume={str(resume)!r} is not allowed: it holds no complete "
                                 f"checkpoint")
            ckpt.check_resume(store.meta(step), expected_meta, shapes, Path(resume))
        finally:
            store.close()
        out.update(checkpoint_dir=directory.absolute(), resume_step=step)
    elif checkpoint_dir is not None:
        directory = Path(checkpoint_dir).absolute()
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"checkpoint_dir={str(checkpoint_dir)!r} is not allowed: it is a file")
        if directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir()):
            raise ValueError(f"checkpoint_dir={str(checkpoint_dir)!r} already holds checkpoints; "
                             f"pass resume={str(checkpoint_dir)!r} to continue that run, or choose a "
                             f"new directory")
        out.update(checkpoint_dir=directory)
    return out


def prepare(agent: str | ModuleType, config: Any = None, env: Any = "CartPole-v1",
            seeds: int | Sequence[int] = 1, *, grid: Mapping | None = None,
            settings: Sequence | Mapping | None = None, sweep: bool = False, num_chunks: int = 20,
            devices: int | None = None, checkpoint_dir: str | Path | None = None,
            checkpoint_every: int = 5, resume: str | Path | None = None) -> Plan:
    """Resolves and checks every input of `run` / `sweep`; raises ValueError, compiles nothing."""
    name, module = resolve_agent(agent)
    config = resolve_config(module, config)
    env_id, env_obj, env_params = resolve_env(env)
    seed_list = resolve_seeds(seeds)
    if isinstance(num_chunks, bool) or not isinstance(num_chunks, int) or num_chunks < 1:
        raise ValueError(f"num_chunks={num_chunks!r} is not allowed: expected an integer >= 1")
    the_agent = module.make(config, env_obj, env_params)  # validates config against env
    tunable = tunable_fields(jax.eval_shape(the_agent.init, jax.random.key(0)))  # traces only
    shapes = shape_fields(config, tunable)
    swept, dtypes = None, {}
    if sweep or grid is not None or settings is not None:
        swept = grid_lib.expand(grid, settings)
        dtypes = grid_lib.check(swept, name, config, tunable, shapes, env_params)
    batch = len(seed_list) * (1 if swept is None else len(swept))
    plan = Plan(name, module, config, env_id, env_obj, env_params, seed_list, swept, dtypes,
                num_chunks, runtime.resolve_devices(devices, batch), the_agent)
    _check_env_sweep(plan)
    extra = _check_checkpointing(checkpoint_dir, checkpoint_every, resume, plan.meta(), shapes)
    return dataclasses.replace(plan, env_from_id=isinstance(env, str), **extra)


def execute(plan: Plan, progress: bool = True, loggers: Sequence[Logger] = ()) -> Results | SweepResults:
    """Compiles and runs a prepared plan (a run, or a sweep when `plan.settings` is set)."""
    config = plan.config
    num_iterations = config.num_iterations
    chunk_len, needs_skip = chunk_length(num_iterations, plan.num_chunks)
    per_call = chunks_per_call(num_iterations, chunk_len, plan.batch)
    call_len = per_call * chunk_len  # the compiled scan; a call runs its first num_valid
    needs_skip = needs_skip or per_call > 1
    layout = runtime.Layout(plan.batch, plan.devices)
    main = runtime.is_main_process()
    key_data, setting_values = plan.inputs()
    keys_in = layout.put(key_data)
    settings_in = {k: layout.put(v) for k, v in setting_values.items()}

    def run_chunk(state, setting, num_valid):
        if not needs_skip:  # every call is one full chunk: a plain scan
            return jax.lax.scan(lambda s, _: plan.update_one(s, setting), state, None, call_len)
        # A loop of num_valid iterations writing into a [call_len] buffer (a scan with a
        # `lax.cond` skipping the surplus ran ~10% slower). jit caches the update's trace: the
        # metrics' shapes cost no second trace.
        step = jax.jit(plan.update_one)
        shapes = jax.eval_shape(step, state, setting)[1]
        buffer = jax.tree.map(lambda m: jnp.zeros((call_len, *m.shape), m.dtype), shapes)

        def body(i, carry):
            state, buffer = carry
            state, metrics = step(state, setting)
            return state, jax.tree.map(lambda b, m: jax.lax.dynamic_update_index_in_dim(b, m, i, 0),
                                       buffer, metrics)

        return jax.lax.fori_loop(0, num_valid, body, (state, buffer))

    counts_before = runtime.compile_counts()
    t0 = time.perf_counter()
    program_key = programs_lib.key(plan, layout, call_len, needs_skip)
    exported = programs_lib.load(program_key)
    if exported is None and program_key is not None:
        exported = _export(plan, layout, run_chunk, keys_in, settings_in, call_len)
        programs_lib.save(program_key, exported)
    init_fn, chunk_fn, abstract_states = _compile(plan, layout, run_chunk, keys_in, settings_in,
                                                  call_len, exported)
    compile_time = time.perf_counter() - t0
    counts = runtime.compile_counts()
    compilations = counts["compilations"] - counts_before["compilations"]
    cache_hits = counts["cache_hits"] - counts_before["cache_hits"]

    store = ckpt.Checkpoints(plan.checkpoint_dir) if plan.checkpoint_dir is not None else None
    collected: list[dict[str, np.ndarray]] = []
    done = 0
    t0 = time.perf_counter()
    if plan.resume_step is not None:
        states, history = _restore(plan, store, layout, abstract_states)
        collected.append(history)
        done = plan.resume_step
    else:
        states = init_fn(keys_in, settings_in)

    bar = None
    if progress and main:
        from tqdm.auto import tqdm

        what = f"x{len(plan.seeds)} seeds" + (f" x{plan.num_settings} settings" if plan.settings else "")
        bar = tqdm(total=num_iterations, initial=done, unit="it", dynamic_ncols=True,
                   desc=f"{plan.name} {plan.env_id} {what}")
    started_at = done
    seconds_per_chunk = None  # measured over the calls read so far

    def take(pending):
        """Brings a finished call's metrics to the host; reports them."""
        nonlocal seconds_per_chunk
        metrics, first, n = pending
        host = {k: np.asarray(v)[: plan.batch, :n] for k, v in metrics.items()}
        seconds_per_chunk = (time.perf_counter() - t0) * chunk_len / (first + n - started_at)
        collected.append(host)
        if main:
            log_chunk(loggers, host, first, config.steps_per_iteration, plan.settings, len(plan.seeds))
        if bar is not None:
            finished = first + n - started_at  # iterations run by this call
            elapsed = time.perf_counter() - t0
            ret = host["episode_return"][:, -max(1, n // 4):]
            bar.update(n)
            bar.set_postfix({
                "env_steps": f"{(first + n) * config.steps_per_iteration:,}",
                "steps/s": f"{finished * config.steps_per_iteration * plan.batch / elapsed:,.0f}",
                "return": f"{np.nanmean(ret):.1f}" if np.isfinite(ret).any() else "n/a",
            })

    pending = None
    chunks = done // chunk_len  # chunks dispatched (a checkpoint is at a chunk boundary)
    try:
        while done < num_iterations:
            limit = min(per_call, math.ceil((num_iterations - done) / chunk_len))
            if store is not None:  # a call ends where a checkpoint is due
                limit = min(limit, plan.checkpoint_every - chunks % plan.checkpoint_every)
            count = next_call_chunks(limit, seconds_per_chunk)
            n = min(count * chunk_len, num_iterations - done)
            states, metrics = chunk_fn(states, settings_in, np.int32(n))  # asynchronous dispatch
            chunks += count
            if pending is not None:  # read the previous call's metrics while this one runs
                take(pending)
            pending = (metrics, done, n)
            done += n
            if store is not None and (chunks % plan.checkpoint_every == 0 or done == num_iterations):
                take(pending)
                pending = None
                history = {k: np.concatenate([c[k] for c in collected], axis=1) for k in collected[0]}
                store.save(done, states, history, {**plan.meta(), "done": done,
                                                   "padded": layout.padded, "chunk_length": chunk_len})
        if pending is not None:
            take(pending)
        jax.block_until_ready(states)
    finally:
        if bar is not None:
            bar.close()
        if store is not None:
            store.close()
    run_time = time.perf_counter() - t0

    metrics = {k: np.concatenate([c[k] for c in collected], axis=1) for k in collected[0]}
    if layout.padding:
        states = jax.tree.map(lambda x: x[: plan.batch], states)
    versions, device = environment_info()
    device.update(used=layout.num_devices, processes=jax.process_count(), padding=layout.padding)
    common = dict(
        agent=plan.name, env=plan.env_id, config=dataclasses.asdict(config), seeds=plan.seeds,
        steps_per_iteration=config.steps_per_iteration, compile_time=compile_time,
        run_time=run_time, versions=versions, device=device, final_state=states,
        env_params=ckpt.env_params_dict(plan.env_params), resumed_from=plan.resume_step,
        compilations=compilations, cache_hits=cache_hits,
        programs_cached=exported is not None and exported.from_cache,
    )
    if plan.settings is None:
        results = Results(metrics=metrics, **common)
    else:
        shaped = {k: v.reshape(plan.num_settings, len(plan.seeds), -1) for k, v in metrics.items()}
        results = SweepResults(settings=plan.settings, metrics=shaped, **common)
    bad = results.non_finite()
    if bad:
        detail = "; ".join(f"{k} ({v})" for k, v in bad.items())
        warnings.warn(f"non-finite values in metrics: {detail}", RuntimeWarning, stacklevel=3)
    return results


def _programs(layout: runtime.Layout, init, chunk, donate: bool = False):
    """init(key_data, settings) and chunk(states, settings, num_valid) jitted with the batch's
    shardings (`donate`: chunk reuses the buffers of the states it is given)."""
    sharded, replicated = layout.sharded, layout.replicated
    return (jax.jit(init, in_shardings=(sharded, sharded), out_shardings=sharded),
            jax.jit(chunk, in_shardings=(sharded, sharded, replicated), out_shardings=(sharded, replicated),
                    donate_argnums=0 if donate else ()))


def _traced(plan: Plan, layout: runtime.Layout, run_chunk):
    """The run's two programs over the whole batch, each device on its share of the runs."""
    return (layout.per_device(layout.over_runs(plan.init_one), 2),
            layout.per_device(layout.over_runs(run_chunk, (0, 0, None)), 2, replicated_args=1))


def _export(plan: Plan, layout: runtime.Layout, run_chunk, keys_in, settings_in,
            chunk_len: int) -> programs_lib.Programs:
    """Traces and lowers the run's two programs (`jax.export`) on flat lists of state leaves,
    for the program cache."""
    init, chunk = _programs(layout, *_traced(plan, layout, run_chunk))
    structure = {}

    def init_flat(key_data, setting):
        leaves, structure["state"] = jax.tree.flatten(init(key_data, setting))
        return leaves

    def chunk_flat(leaves, setting, num_valid):
        states, metrics = chunk(jax.tree.unflatten(structure["state"], leaves), setting, num_valid)
        return jax.tree.leaves(states), metrics

    exported_init = programs_lib.export_program(jax.jit(init_flat), keys_in, settings_in)
    leaf_specs = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=layout.sharded)
                  for a in exported_init.out_avals]
    exported_chunk = programs_lib.export_program(jax.jit(chunk_flat), leaf_specs, settings_in,
                                                 np.int32(chunk_len))
    return programs_lib.Programs(exported_init, exported_chunk, structure["state"])


def _compile(plan: Plan, layout: runtime.Layout, run_chunk, keys_in, settings_in, chunk_len: int,
             exported: programs_lib.Programs | None):
    """-> (init, chunk, abstract batched state): the compiled programs, from `exported` when
    given (the same StableHLO as tracing `plan` gives), else traced from `plan`. `init` is
    None when the run resumes."""
    if exported is None:
        init, chunk = _programs(layout, *_traced(plan, layout, run_chunk), donate=True)
        abstract_states = jax.eval_shape(init, keys_in, settings_in)
    else:
        tree = exported.state_tree

        def init_call(key_data, setting):
            return jax.tree.unflatten(tree, exported.init.call(key_data, setting))

        def chunk_call(states, setting, num_valid):
            leaves, metrics = exported.chunk.call(jax.tree.leaves(states), setting, num_valid)
            return jax.tree.unflatten(tree, leaves), metrics

        init, chunk = _programs(layout, init_call, chunk_call, donate=True)
        abstract_states = exported.abstract_states(layout.sharded)
    # XLA compiles init in a thread while Python traces and lowers the chunk program.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        init_fn = (None if plan.resume_step is not None else pool.submit(
            init.lower(keys_in, settings_in).compile,
            compiler_options=runtime.compiler_options(plan.devices, runs_once=True)))
        chunk_fn = (chunk.lower(abstract_states, settings_in, np.int32(chunk_len))
                    .compile(compiler_options=runtime.compiler_options(plan.devices)))
        init_fn = init_fn and init_fn.result()
    return init_fn, chunk_fn, abstract_states


def _restore(plan: Plan, store: ckpt.Checkpoints, layout: runtime.Layout, abstract_states):
    """The checkpointed state, re-laid out for this run's devices, and the metrics so far."""
    meta = store.meta(plan.resume_step)
    saved = meta["padded"]
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct((saved, *a.shape[1:]), a.dtype),
                            abstract_states)
    stored, history = store.restore(plan.resume_step, abstract)
    placed = jax.tree.map(lambda x: layout.put(np.asarray(x)[: plan.batch]), stored)
    states = ckpt.from_storable(placed, abstract)
    history = {k: v[: plan.batch] for k, v in history.items()}
    return states, history


def run(
    agent: str | ModuleType,
    config: Any = None,
    env: Any = "CartPole-v1",
    seeds: int | Sequence[int] = 1,
    *,
    num_chunks: int = 20,
    progress: bool = True,
    devices: int | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 5,
    resume: str | Path | None = None,
    loggers: Sequence[Logger] = (),
) -> Results:
    """Trains `agent` on `env` for every seed, in one compiled program.

    Args:
      agent: a registered name ("ppo") or an agent module (`agents.ppo`).
      config: None (defaults), the agent's Config, or a mapping of field overrides.
      env: an environment id or an `(env, env_params)` pair.
      seeds: N (seeds 0..N-1) or a list of distinct integer seeds.
      num_chunks: about how many chunks the run is cut into, the unit of logging and
        checkpointing. One call of the compiled program runs 1 to 4 chunks (about a second's
        worth, ending where a checkpoint is due); the progress bar updates after each call.
      progress: show a progress bar.
      devices: how many devices to shard the seeds over (default: all, on every host; in
        one process, as many as hold two runs each). A batch that does not fill two runs
        on each device is padded with repeats of its last run, computed and dropped. Each
        device runs the same vmapped program on its share (`jax.shard_map`), so a batch of
        two or more runs gives bit-identical results on any layout: 1 device, 4 devices, or
        2 processes x 2 devices. A single run is computed unbatched (faster), and agrees with
        the same seed in a batch to float32 rounding.
      checkpoint_dir: write a checkpoint there every `checkpoint_every` chunks and at the end.
      resume: a checkpoint directory (or a results directory holding `checkpoints/`) to
        continue from its newest complete checkpoint; the result is bit-identical to a
        run that was never stopped. Inputs must match the checkpointed run.
      loggers: sinks receiving per-iteration means across seeds (see `loggers`).

    Returns:
      `Results` with metrics [seed, iteration]; warns if a loss went non-finite.

    Raises:
      ValueError: bad input, before anything is compiled.
    """
    plan = prepare(agent, config, env, seeds, num_chunks=num_chunks, devices=devices,
                   checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume)
    return execute(plan, progress=progress, loggers=loggers)


def sweep(
    agent: str | ModuleType,
    config: Any = None,
    env: Any = "CartPole-v1",
    *,
    grid: Mapping[str, Sequence] | None = None,
    settings: Sequence[Mapping] | Mapping[str, Sequence] | None = None,
    seeds: int | Sequence[int] = 1,
    num_chunks: int = 20,
    progress: bool = True,
    devices: int | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 5,
    resume: str | Path | None = None,
    loggers: Sequence[Logger] = (),
) -> SweepResults:
    """Trains every setting x every seed as ONE compiled program (vmap over both).

    Args:
      grid: name -> values, run as their cartesian product; or
      settings: an explicit list of settings (or name -> equal-length value lists).
        Names are tunable hyperparameters of the agent (fields of its `state.hparams`,
        e.g. "learning_rate", "ent_coef") or environment parameters as "env.<field>"
        (e.g. "env.length"). Fields that fix shapes are refused by name.
      seeds: the seeds every setting runs with; setting j with seed i is the plain `run`
        with that setting and seed (bit-identical when each device holds as many runs in
        both; otherwise XLA's shape-specific kernels round differently in the last bits).
      Other arguments as in `run`.

    Returns:
      `SweepResults` with metrics [setting, seed, iteration], a ranking and `best()`.
    """
    plan = prepare(agent, config, env, seeds, grid=grid, settings=settings, sweep=True,
                   num_chunks=num_chunks, devices=devices, checkpoint_dir=checkpoint_dir,
                   checkpoint_every=checkpoint_every, resume=resume)
    return execute(plan, progress=progress, loggers=loggers)
