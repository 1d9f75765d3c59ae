"""Where a run executes: CPU devices, the 1-D batch mesh, several hosts, the compilation cache.

The [setting x seed] batch axis of `run` and `sweep` is laid out over a 1-D mesh of
devices named "batch" (`NamedSharding(mesh, P("batch"))`): each device trains its
share of the seeds, with no communication except gathering the per-iteration
metrics. On several hosts the mesh spans every process's devices; every process
runs the same program, and only process 0 writes results and logs.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "batch"
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "purejaxrl_lab" / "jax"


# --------------------------------------------------------------------------- devices


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_model() -> str:
    """The processor's model name ("AMD EPYC 7B13", ...), as Linux's /proc/cpuinfo gives it;
    elsewhere what `platform.processor()` says, else the architecture. Results record it:
    CPU speed figures depend on it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_description() -> str:
    """One line naming the machine for benchmark output: architecture, processor, cores,
    JAX devices and the jax version."""
    devices = jax.devices()
    return (f"{platform.machine()} {cpu_model()}, {cpu_cores()} cores, {len(devices)} x "
            f"{devices[0].device_kind}, jax {jax.__version__}")


def use_cpu_cores(quiet: bool = False) -> int | None:
    """Makes JAX's CPU backend expose one device per core, so that the runs of a batch train
    on every core at once: each device runs its share of the runs on its own thread, where
    one CPU device runs a program on about one core (a 2-core machine trains 8 seeds about
    twice as fast). The CLI calls it; in Python, call it first: right after importing
    `purejaxrl_lab`, before importing `envs`, `agents` or gymnax (which run JAX on import).

    It sets `jax_num_cpu_devices` and returns the count it set. It changes nothing (and
    returns None) when the count was chosen already (`JAX_NUM_CPU_DEVICES`,
    `jax.config.jax_num_cpu_devices`, or `--xla_force_host_platform_device_count` in
    XLA_FLAGS), on a single core, or when JAX has already run something (importing gymnax,
    `envs` or `agents` does: then it says so on stderr, unless `quiet`). GPU and TPU devices are
    unaffected; a run uses them, not the CPU devices.
    """
    if (jax.config.jax_num_cpu_devices != -1
            or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")):
        return None
    cores = cpu_cores()
    if cores < 2:
        return None
    try:
        jax.config.update("jax_num_cpu_devices", cores)
    except RuntimeError:  # JAX has run something: its backends exist
        if not quiet:
            print(f"purejaxrl_lab.use_cpu_cores(): JAX is already running with "
                  f"{len(jax.devices('cpu'))} CPU device(s); call it before anything runs on a "
                  f"device (before importing envs, agents or gymnax)", file=sys.stderr)
        return None
    return cores


_NOTICED = False


def notice_cpu_devices(batch: int) -> None:
    """Says once per process, on one line, when a batch of runs trains on fewer CPU devices
    than the machine has cores (JAX's default of one CPU device uses about one core)."""
    global _NOTICED
    if _NOTICED or jax.default_backend() != "cpu" or batch < 2:
        return
    cores, available = cpu_cores(), len(jax.devices())
    if available < min(cores, batch // MIN_RUNS_PER_DEVICE):
        _NOTICED = True
        print(f"purejaxrl_lab: {available} CPU device(s) on {cores} cores: these runs use about "
              f"{available} core(s); call purejaxrl_lab.use_cpu_cores() before JAX runs anything "
              f"(the CLI does) or set JAX_NUM_CPU_DEVICES={cores}", file=sys.stderr)


def to_host(tree):
    """A pytree of (possibly multi-process) global arrays as NumPy arrays on every process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, tree)


# Each device of a batch of two or more runs holds at least this many. A device holding one
# run computes it unbatched (`Layout.over_runs`), with kernels that round differently from
# batched ones; from two runs up, a run's numbers do not depend on how many share its device.
MIN_RUNS_PER_DEVICE = 2


def resolve_devices(devices: int | None, batch: int) -> list[jax.Device]:
    """The devices a run of `batch` runs uses: the first `devices`, or (None) all of them,
    or in a single process as many as hold `MIN_RUNS_PER_DEVICE` runs each (at least one)."""
    available = jax.devices()
    if devices is None:
        if jax.process_count() == 1:
            return available[: max(1, min(len(available), batch // MIN_RUNS_PER_DEVICE))]
        return available
    if isinstance(devices, bool) or not isinstance(devices, (int, np.integer)) or devices < 1:
        raise ValueError(f"devices={devices!r} is not allowed: expected an integer >= 1 "
                         f"(or None for all {len(available)})")
    if devices > len(available):
        raise ValueError(f"devices={devices} is not allowed: only {len(available)} "
                         f"{available[0].platform} device(s) are available")
    if jax.process_count() > 1 and devices != len(available):
        raise ValueError(f"devices={devices} is not allowed with {jax.process_count()} processes: "
                         f"a multi-host run uses all {len(available)} devices")
    return available[:devices]


class Layout:
    """The batch of B runs padded to a multiple of the device count, with at least
    `MIN_RUNS_PER_DEVICE` runs on each device when B > 1, and sharded over a 1-D mesh.

    Padding entries repeat the last run; their results are computed and dropped.
    """

    def __init__(self, batch: int, devices: Sequence[jax.Device]):
        self.batch = batch
        self.num_devices = len(devices)
        local = math.ceil(batch / self.num_devices)
        if batch >= MIN_RUNS_PER_DEVICE:
            local = max(local, MIN_RUNS_PER_DEVICE)
        self.padded = local * self.num_devices
        self.mesh = Mesh(np.asarray(devices), (AXIS,))
        self.sharded = NamedSharding(self.mesh, P(AXIS))
        self.replicated = NamedSharding(self.mesh, P())

    @property
    def padding(self) -> int:
        return self.padded - self.batch

    def per_device(self, fn, num_batched: int, replicated_args: int = 0):
        """`fn` run by each device on its own slice of the batch (`jax.shard_map`).

        The first `num_batched` arguments and every output are split on axis 0; the last
        `replicated_args` arguments are the same on every device. Each device runs the
        program written for its local batch, with no communication: results do not depend
        on how many devices share the batch (a sharded-then-partitioned program does round
        differently in the last bit).
        """
        specs = (P(AXIS),) * num_batched + (P(),) * replicated_args
        return jax.shard_map(fn, mesh=self.mesh, in_specs=specs, out_specs=P(AXIS), check_vma=False)

    def over_runs(self, fn, in_axes=0):
        """`fn` of one run, mapped over a device's runs with `jax.vmap`.

        A device holding a single run (a batch of one) calls `fn` unbatched instead, which
        XLA-CPU compiles and runs faster, and which gives the same numbers on
        any number of devices (see `MIN_RUNS_PER_DEVICE`).
        """
        if self.padded // self.num_devices != 1:
            return jax.vmap(fn, in_axes=in_axes)

        def one(*args):
            axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
            args = [a if ax is None else jax.tree.map(lambda x: x[0], a) for a, ax in zip(args, axes)]
            return jax.tree.map(lambda x: x[None], fn(*args))

        return one

    def pad(self, x: np.ndarray) -> np.ndarray:
        """[B, ...] host array -> [padded, ...] (repeats the last row)."""
        if not self.padding:
            return x
        return np.concatenate([x, np.repeat(x[-1:], self.padding, axis=0)])

    def put(self, x: np.ndarray) -> jax.Array:
        """A host array [B, ...], identical on every process, as a global array sharded on axis 0."""
        x = self.pad(np.asarray(x))
        return jax.make_array_from_callback(x.shape, self.sharded, lambda index: x[index])


# XLA-CPU backend (LLVM) optimisation level for the lab's programs. Level 1 compiles much
# faster than the default and runs as fast; level 0 runs several times slower
# (benchmarks/README.md).
CPU_OPTIMIZATION_LEVEL = 1
# Programs that run rarely (init, evaluation) compile faster at level 0. (Turning XLA-CPU's
# fusion emitters off too compiles faster still, but then a one-device init differs from a
# several-device one in the last bit for some networks.)
CPU_INIT_OPTIONS = {"xla_backend_optimization_level": 0}


def compiler_options(devices: Sequence[jax.Device], runs_once: bool = False) -> dict | None:
    """Per-program XLA options: on CPU, `CPU_OPTIMIZATION_LEVEL` (`CPU_INIT_OPTIONS` for a
    program that `runs_once`); elsewhere XLA's defaults."""
    if devices[0].platform != "cpu":
        return None
    if runs_once:
        return dict(CPU_INIT_OPTIONS)
    return {"xla_backend_optimization_level": CPU_OPTIMIZATION_LEVEL}


# --------------------------------------------------------------------------- several hosts


def _cluster_wants_distributed() -> bool:
    """A multi-process SLURM job or multi-host Cloud TPU slice, detected from its environment."""
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in os.environ:
        return True
    hosts = os.environ.get("TPU_PROCESS_ADDRESSES") or os.environ.get("TPU_WORKER_HOSTNAMES") or ""
    return "," in hosts


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, auto: bool = False) -> bool:
    """Calls `jax.distributed.initialize` when this is one process of several; returns whether it did.

    Explicit arguments win, then the variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
    JAX_PROCESS_ID; with none of them, a multi-process SLURM job or a multi-host Cloud TPU
    slice is detected by JAX itself (`auto=True` forces that detection). Must run before
    anything touches a device.
    """
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    explicit = (coordinator_address, num_processes, process_id)
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise ValueError(
                "coordinator_address, num_processes and process_id go together: got "
                f"coordinator_address={coordinator_address!r}, num_processes={num_processes!r}, "
                f"process_id={process_id!r}")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(f"process_id={process_id!r} is not allowed: expected 0 <= process_id "
                             f"< num_processes={num_processes}")
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
        return True
    if auto or _cluster_wants_distributed():
        jax.distributed.initialize()
        return True
    return False


def is_main_process() -> bool:
    return jax.process_index() == 0


# --------------------------------------------------------------------------- compilation cache


def enable_compilation_cache(directory: str | os.PathLike | None = DEFAULT_CACHE_DIR) -> Path | None:
    """Turns on JAX's persistent compilation cache in `directory` (None turns it off).

    Every program is cached, however quick to compile, so a second identical run loads its
    compiled programs instead of compiling them (it still traces and lowers them).

    Raises:
      ValueError: the directory cannot be created or written.
    """
    if directory is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    directory = Path(directory).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"cache_dir={str(directory)!r} is not allowed: cannot create it or write "
                         f"there ({e.strerror or e})") from None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


# --------------------------------------------------------------------------- compilation counts

_COUNTS = {"programs": 0, "cache_hits": 0}
_LISTENING = False


def _on_duration(name: str, duration: float, **kwargs) -> None:
    if name == "/jax/core/compile/backend_compile_duration":  # compiled, or loaded from the cache
        _COUNTS["programs"] += 1


def _on_event(name: str, **kwargs) -> None:
    if name == "/jax/compilation_cache/cache_hits":
        _COUNTS["cache_hits"] += 1


def compile_counts() -> dict[str, int]:
    """Running totals in this process (through `jax.monitoring`): "programs" built for a
    backend, "cache_hits" among them loaded from the persistent compilation cache, and
    "compilations", the rest, which XLA compiled."""
    global _LISTENING
    if not _LISTENING:
        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        jax.monitoring.register_event_listener(_on_event)
        _LISTENING = True
    return {**_COUNTS, "compilations": _COUNTS["programs"] - _COUNTS["cache_hits"]}
