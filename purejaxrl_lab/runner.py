"""`run` and `sweep`: train an agent over many seeds (and settings) as one compiled program.

    init     : shard_map(vmap(init))                     once (skipped when resuming)
    call     : shard_map(vmap(loop of update))           compiled once, runs 1 to m chunks a call
    evaluate : shard_map(vmap(episodes of greedy act))   between calls, when due

The vmapped axis is the batch of runs, [setting x seed] flattened (run b is setting
b // num_seeds with seed b % num_seeds), sharded over a 1-D device mesh (`runtime`). The
run is cut into chunks and calls (`calls`). Between calls the host reads the metrics,
updates the progress display, evaluates, writes logs and checkpoints; nothing crosses to
the host inside the compiled programs.

`run` = `execute(prepare(...))`: `prepare` (`plan`) checks everything and compiles nothing.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import numpy as np

from purejaxrl_lab import calls, claims, runtime
from purejaxrl_lab import checkpoint as ckpt
from purejaxrl_lab import programs as programs_lib
from purejaxrl_lab.loggers import Logger, log_chunk, log_evaluation
from purejaxrl_lab.plan import Plan, prepare
from purejaxrl_lab.evaluation import EVAL_PREFIX
from purejaxrl_lab.results import Results, SweepResults, describe_divergence, first_non_finite

PACKAGES = ("jax", "jaxlib", "flax", "optax", "gymnax", "distrax", "chex", "numpy",
            "orbax-checkpoint", "purejaxrl-lab")


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


@dataclasses.dataclass
class _Call:
    """A dispatched call of the chunk program whose metrics are not read yet."""

    metrics: Any  # device arrays [padded batch, call_len]
    iterations_before: int  # iterations done before it
    iterations: int  # iterations it runs


class _History:
    """The metrics read so far: per-iteration [batch, iterations] and evaluations [batch, e]."""

    def __init__(self):
        self.chunks: list[dict[str, np.ndarray]] = []
        self.evals: list[dict[str, np.ndarray]] = []
        self.eval_iterations: list[int] = []

    def restore(self, saved: dict[str, np.ndarray], eval_iterations: list[int]) -> None:
        self.chunks.append({k: v for k, v in saved.items() if not k.startswith(EVAL_PREFIX)})
        if eval_iterations:
            self.evals.append({k: v for k, v in saved.items() if k.startswith(EVAL_PREFIX)})
        self.eval_iterations = list(eval_iterations)

    def metrics(self) -> dict[str, np.ndarray]:
        out = {k: np.concatenate([c[k] for c in self.chunks], axis=1) for k in self.chunks[0]}
        if self.evals:
            out.update({k: np.concatenate([e[k] for e in self.evals], axis=1) for k in self.evals[0]})
        return out


def execute(plan: Plan, progress: bool = True, loggers: Sequence[Logger] = ()) -> Results | SweepResults:
    """Compiles and runs a prepared plan (a run, or a sweep when `plan.settings` is set)."""
    config = plan.config
    num_iterations = config.num_iterations
    chunk_len, partial_last = calls.chunk_length(num_iterations, plan.num_chunks)
    max_chunks = calls.chunks_per_call(num_iterations, chunk_len, plan.batch)
    layout = runtime.Layout(plan.batch, plan.devices)
    main = runtime.is_main_process()
    key_data, setting_values = plan.inputs()
    keys_in = layout.put(key_data)
    settings_in = {k: layout.put(v) for k, v in setting_values.items()}
    if main:
        runtime.notice_cpu_devices(plan.batch)

    claim = (None if plan.checkpoint_dir is None
             else claims.claim_on_main(plan.checkpoint_dir, "checkpoint_dir"))
    try:
        programs = programs_lib.build(plan, layout, max_chunks * chunk_len,
                                      partial_last or max_chunks > 1, keys_in, settings_in)
        return _train(plan, layout, programs, keys_in, settings_in, chunk_len, max_chunks,
                      progress and main, loggers if main else ())
    finally:
        if claim is not None:
            claim.release()


def _train(plan: Plan, layout, programs: programs_lib.Programs, keys_in, settings_in, chunk_len: int,
           max_chunks: int, progress: bool, loggers) -> Results | SweepResults:
    config = plan.config
    num_iterations = config.num_iterations
    store = ckpt.Checkpoints(plan.checkpoint_dir) if plan.checkpoint_dir is not None else None
    history = _History()
    t0 = time.perf_counter()
    if plan.resume_step is not None:
        states, saved, eval_iterations = _restore(plan, store, layout, programs.abstract_states)
        history.restore(saved, eval_iterations)
        iterations_done = plan.resume_step
    else:
        states = programs.init(keys_in, settings_in)
        iterations_done = 0
    bar = None
    if progress:
        from purejaxrl_lab.progress import Progress

        runs = f"x{len(plan.seeds)} seeds" + (f" x{plan.num_settings} settings" if plan.settings else "")
        bar = Progress(num_iterations, iterations_done, f"{plan.name} {plan.env_id} {runs}")
    first_iteration = iterations_done
    seconds_per_chunk = None  # measured over the calls read so far
    score = plan.module.SCORE
    nan_by_design = set(plan.module.NAN_METRICS)
    diverged = np.zeros(plan.batch, bool)  # named already (before a resume too)
    if plan.resume_step is not None:
        diverged[:] = [it is not None for it, _ in first_non_finite(
            {k: v for k, v in history.metrics().items()
             if k not in nan_by_design and not k.startswith(EVAL_PREFIX)})]
    stopping = False

    def watch(host: dict[str, np.ndarray], iterations_before: int) -> None:
        """Says which runs' metrics went non-finite, from which iteration (once per run); with
        `stop_on_nan`, the run stops after the call in flight."""
        nonlocal stopping
        found = []
        watched = {k: v for k, v in host.items() if k not in nan_by_design}
        for r, (it, names) in enumerate(first_non_finite(watched)):
            if it is not None and not diverged[r]:
                diverged[r] = True
                n = len(plan.seeds)
                run = ({"setting": r // n, "seed": plan.seeds[r % n]} if plan.settings is not None
                       else {"seed": plan.seeds[r]})
                found.append({**run, "iteration": iterations_before + it, "metrics": names})
        if found:
            stopping = stopping or plan.stop_on_nan
            warnings.warn(f"non-finite values in metrics: {describe_divergence(found)}"
                          + ("; stopping after the chunk in flight (stop_on_nan)" if plan.stop_on_nan else ""),
                          RuntimeWarning, stacklevel=2)

    def read(call: _Call) -> None:
        """Brings a finished call's metrics to the host; logs them; updates the progress."""
        nonlocal seconds_per_chunk
        host = {k: np.asarray(v)[: plan.batch, :call.iterations] for k, v in call.metrics.items()}
        history.chunks.append(host)
        watch(host, call.iterations_before)
        elapsed = time.perf_counter() - t0
        ran = call.iterations_before + call.iterations - first_iteration
        seconds_per_chunk = elapsed * chunk_len / ran
        log_chunk(loggers, host, call.iterations_before, config.units_per_iteration, plan.settings,
                  len(plan.seeds))
        if bar is not None:
            recent = host[score.metric][:, -max(1, call.iterations // 4):]
            bar.update(call.iterations, **{
                config.unit.replace(" ", "_"):
                    f"{(call.iterations_before + call.iterations) * config.units_per_iteration:,}",
                "per_s": f"{ran * config.units_per_iteration * plan.batch / elapsed:,.0f}",
                score.name.replace(" ", "_"): f"{np.nanmean(recent):.4g}" if np.isfinite(recent).any() else "n/a",
            })

    def evaluate(states, iterations: int) -> None:
        out = programs.evaluate(states.params, keys_in, settings_in, np.int32(iterations))
        host = {k: np.asarray(v)[: plan.batch, None] for k, v in out.items()}
        history.evals.append(host)
        history.eval_iterations.append(iterations)
        log_evaluation(loggers, iterations * config.units_per_iteration,
                       {k: v[:, 0] for k, v in host.items()}, plan.settings, len(plan.seeds))

    in_flight = None
    chunks_done = iterations_done // chunk_len  # a checkpoint is at a chunk boundary
    saved_at = plan.resume_step

    def save_checkpoint() -> None:
        nonlocal saved_at
        store.save(iterations_done, states, history.metrics(), {
            **plan.meta(), "done": iterations_done, "padded": layout.padded,
            "chunk_length": chunk_len, "eval_iterations": history.eval_iterations})
        saved_at = iterations_done

    try:
        while iterations_done < num_iterations and not stopping:
            limit = min(max_chunks, plan.total_chunks - chunks_done,
                        calls.chunks_until_due(chunks_done, plan.eval_every),
                        calls.chunks_until_due(chunks_done, plan.checkpoint_every if store else 0))
            # stop_on_nan: one chunk per call, so that a run stops one chunk after the divergence
            count = 1 if plan.stop_on_nan else calls.next_call_chunks(limit, seconds_per_chunk)
            iterations = min(count * chunk_len, num_iterations - iterations_done)
            states, metrics = programs.call(states, settings_in, np.int32(iterations))  # asynchronous
            chunks_done += count
            if in_flight is not None:  # read the previous call's metrics while this one runs
                read(in_flight)
            in_flight = _Call(metrics, iterations_done, iterations)
            iterations_done += iterations
            finished = iterations_done == num_iterations
            evaluation_due = calls.due(chunks_done, plan.eval_every, finished)
            checkpoint_due = store is not None and calls.due(chunks_done, plan.checkpoint_every, finished)
            if evaluation_due or checkpoint_due:  # logs stay in order: the call's metrics first
                read(in_flight)
                in_flight = None
            if evaluation_due:
                evaluate(states, iterations_done)
            if checkpoint_due:
                save_checkpoint()
        if in_flight is not None:
            read(in_flight)
        jax.block_until_ready(states)
        if stopping and store is not None and saved_at != iterations_done:
            save_checkpoint()  # everything so far, for a look at the state that diverged
    finally:
        if bar is not None:
            bar.close()
        if store is not None:
            store.close()
    run_time = time.perf_counter() - t0
    stopped = None
    if stopping and iterations_done < num_iterations:
        stopped = {"iteration": iterations_done, "of": num_iterations,
                   "reason": "non-finite metrics (stop_on_nan)"}
    return _results(plan, layout, programs, states, history, run_time, stopped)


def _results(plan: Plan, layout, programs: programs_lib.Programs, states, history: _History,
             run_time: float, stopped: dict | None = None) -> Results | SweepResults:
    config = plan.config
    metrics = history.metrics()
    if layout.padding:
        states = jax.tree.map(lambda x: x[: plan.batch], states)
    versions, device = environment_info()
    device.update(used=layout.num_devices, processes=jax.process_count(), padding=layout.padding)
    common = dict(
        agent=plan.name, env=plan.env_id, config=dataclasses.asdict(config), seeds=plan.seeds,
        score=plan.module.SCORE, unit=config.unit, units_per_iteration=config.units_per_iteration,
        compile_time=programs.compile_time, run_time=run_time, versions=versions, device=device,
        env_params=ckpt.env_params_dict(plan.env_params), nan_metrics=tuple(plan.module.NAN_METRICS),
        eval_iterations=history.eval_iterations, resumed_from=plan.resume_step,
        compilations=programs.compilations, cache_hits=programs.cache_hits,
        state_bytes=programs_lib.state_bytes(programs.abstract_states, layout.padded),
        runs_in_program=plan.batch, agent_module=plan.module.__name__,
        act_input=plan.module.ACT_INPUT, params=runtime.to_host(states.params),
        final_state=states, act=plan.agent.act, init_carry=plan.agent.init_carry, stopped=stopped,
    )
    if plan.settings is None:
        results = Results(metrics=metrics, **common)
    else:
        shaped = {k: v.reshape(plan.num_settings, len(plan.seeds), -1) for k, v in metrics.items()}
        results = SweepResults(settings=plan.settings, metrics=shaped, **common)
    return results


def _restore(plan: Plan, store: ckpt.Checkpoints, layout: runtime.Layout, abstract_states):
    """The checkpointed state, re-laid out for this run's devices, the metrics so far and the
    iterations of the evaluations so far."""
    meta = store.meta(plan.resume_step)
    saved = meta["padded"]
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct((saved, *a.shape[1:]), a.dtype),
                            abstract_states)
    stored, history = store.restore(plan.resume_step, abstract)
    placed = jax.tree.map(lambda x: layout.put(np.asarray(x)[: plan.batch]), stored)
    states = ckpt.from_storable(placed, abstract)
    history = {k: v[: plan.batch] for k, v in history.items()}
    return states, history, meta.get("eval_iterations", [])


def run(
    agent: str | ModuleType,
    config: Any = None,
    env: Any = "CartPole-v1",
    seeds: int | Sequence[int] = 1,
    *,
    num_chunks: int = 20,
    eval_every: int | None = None,
    eval_episodes: int = 10,
    progress: bool = True,
    devices: int | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 5,
    resume: str | Path | None = None,
    loggers: Sequence[Logger] = (),
    stop_on_nan: bool = False,
) -> Results:
    """Trains `agent` on `env` for every seed, in one compiled program.

    Args:
      agent: a registered name ("ppo"), an importable module path, or an agent module.
      config: None (defaults), the agent's Config, a mapping of field overrides (dotted
        names for nested fields), or the name of one of the agent's presets.
      env: an environment id or an `(env, env_params)` pair.
      seeds: N (seeds 0..N-1) or a list of distinct integer seeds.
      num_chunks: about how many chunks the run is cut into, the unit of logging, evaluation
        and checkpointing. One call of the compiled program runs 1 to 4 chunks (about a
        second's worth, ending where an evaluation or checkpoint is due); the progress
        display updates after each call.
      eval_every: evaluate the greedy policy of every run after every this many chunks and
        after the last (`Results.metrics["eval_return"]`, [seed, evaluation]); None: about
        10 evaluations per run; 0: none. Evaluation draws keys of its own, so it changes
        no training number.
      eval_episodes: fresh episodes per evaluation, run side by side.
      progress: show progress (a bar in a terminal, one line in a notebook).
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
      stop_on_nan: stop the whole run at most one chunk after a metric of any seed is
        NaN or infinite (calls then run one chunk each) (the agent's NaN-by-design metrics excepted), with a checkpoint
        of where it stopped; the results hold the iterations done and say so (`stopped`).

    Returns:
      `Results` with metrics [seed, iteration]. While it runs, a RuntimeWarning names every
      seed whose metrics go non-finite and from which iteration (`Results.divergence()`).

    Raises:
      ValueError: bad input, before anything is compiled.
    """
    plan = prepare(agent, config, env, seeds, num_chunks=num_chunks, devices=devices,
                   checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume,
                   eval_every=eval_every, eval_episodes=eval_episodes, stop_on_nan=stop_on_nan)
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
    eval_every: int | None = None,
    eval_episodes: int = 10,
    progress: bool = True,
    devices: int | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 5,
    resume: str | Path | None = None,
    loggers: Sequence[Logger] = (),
    stop_on_nan: bool = False,
) -> SweepResults:
    """Trains every setting x every seed as ONE compiled program (vmap over both).

    Arguments not listed here are as in `run`.

    Args:
      grid: name -> values, run as their cartesian product; or
      settings: an explicit list of settings (or name -> equal-length value lists).
        Names are tunable hyperparameters of the agent (fields of its `state.hparams`,
        float or int, e.g. "learning_rate") or environment parameters as `env.<field>`
        (e.g. "env.length"). Fields fixed when the program is built are refused by name.
      seeds: the seeds every setting runs with; setting j with seed i is the plain `run`
        with that setting and seed (bit-identical when each device holds as many runs in
        both; otherwise XLA's shape-specific kernels round differently in the last bits).

    Returns:
      `SweepResults` with metrics [setting, seed, iteration], a ranking and `best()`.
    """
    plan = prepare(agent, config, env, seeds, grid=grid, settings=settings, sweep=True,
                   num_chunks=num_chunks, devices=devices, checkpoint_dir=checkpoint_dir,
                   checkpoint_every=checkpoint_every, resume=resume, eval_every=eval_every,
                   eval_episodes=eval_episodes, stop_on_nan=stop_on_nan)
    return execute(plan, progress=progress, loggers=loggers)
