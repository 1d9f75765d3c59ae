"""The program cache: a second identical run skips tracing and lowering, not only XLA's work.

JAX's persistent compilation cache (`runtime.enable_compilation_cache`) keeps XLA's
compiled programs, but its key is the lowered program, so each run still traces its
Python and lowers it to StableHLO: ~1.2 s of the ~1.5 s a cached PPO CartPole run
spends before its first step on a 2-core CPU. When the compilation cache is on, the
lab also keeps each run's lowered programs (`jax.export`), next to XLA's entries and
under a key of everything that decides them, and loads them instead of tracing.
A loaded program is the same StableHLO, so it computes the same numbers (tested).

Only runs whose code the key can see are cached: the agent is one this package ships
(`agents.get`) and the environment was named by an id whose code ships with gymnax or
`envs`. A user's agent module or environment object can hold state no key sees, so such
runs are always traced.

The key holds the run (agent, environment id and parameters, config, swept names and
dtypes, batch, devices, chunk length), the content of this distribution's packages, the
size and modification time of every loaded module of the packages the agent is traced
through (`DEPENDENCIES` and jax*: upgrading or editing jax, flax, gymnax, ... misses), the
Python, jax and jaxlib versions, JAX's configuration values and the JAX_*/XLA_*
environment variables. The entries are pickles:
load them only from a directory you trust, as with XLA's cache itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import pickle
import platform
import sys
import warnings
from pathlib import Path
from typing import Any

import jax
import jaxlib
from jax import export

FORMAT = 1
SUFFIX = ".program"  # JAX's cache only manages files ending in "-cache"
_PACKAGES = ("purejaxrl_lab", "envs", "agents")
# Top-level packages whose code runs while a built-in agent is traced (and "jax*": jaxlib,
# jax_plugins, the CUDA plugins).
DEPENDENCIES = frozenset({"flax", "optax", "gymnax", "distrax", "chex", "tensorflow_probability",
                          "numpy", "ml_dtypes", "scipy", "opt_einsum", "libtpu"})
_directory: Path | None = None


def set_directory(directory: str | os.PathLike | None) -> None:
    """Where programs are kept (None: nowhere); `runtime.enable_compilation_cache` sets it."""
    global _directory
    _directory = None if directory is None else Path(directory)


@dataclasses.dataclass
class Programs:
    """A run's two lowered programs on flat lists of state leaves, and the state's structure.

    `init(key_data, settings) -> leaves`; `chunk(leaves, settings, num_valid) -> (leaves,
    metrics)`.
    """

    init: export.Exported
    chunk: export.Exported
    state_tree: Any  # jax.tree_util.PyTreeDef
    from_cache: bool = False

    def abstract_states(self, sharding=None, batch: int | None = None):
        """The batched state as `ShapeDtypeStruct`s (leading axis `batch` if given)."""
        leaves = [jax.ShapeDtypeStruct(a.shape if batch is None else (batch, *a.shape[1:]), a.dtype,
                                       sharding=sharding) for a in self.init.out_avals]
        return jax.tree.unflatten(self.state_tree, leaves)


def export_program(jitted, *args) -> export.Exported:
    """`jax.export` of a jitted function. Custom-call targets are not checked against JAX's
    list of stable ones: a cached program is only ever loaded by the same jax and jaxlib."""
    return export.export(jitted, disabled_checks=[export.DisabledSafetyCheck.custom_call("ALL")])(*args)


# --------------------------------------------------------------------------- key


def cacheable(plan) -> bool:
    """Whether every piece of code in `plan`'s programs is seen by the key (module docstring)."""
    import agents
    import envs

    try:
        builtin_agent = agents.get(plan.name) is plan.module
    except ValueError:
        return False
    return builtin_agent and plan.env_from_id and envs.is_builtin(plan.env_id)


@functools.lru_cache(maxsize=1)
def _package_digest() -> str:
    """sha256 of the source of this distribution's packages (read once per process)."""
    digest = hashlib.sha256()
    for package in _PACKAGES:
        root = Path(sys.modules[package].__file__).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root.parent)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _dependency_files() -> list[tuple[str, int, int]]:
    """(file, size, mtime) of every loaded module of the packages a built-in agent's programs
    are traced through (jax and its plugins, flax, optax, gymnax, distrax, ...)."""
    out = set()
    for name, module in list(sys.modules.items()):
        top = name.split(".")[0]
        if top not in DEPENDENCIES and not top.startswith("jax"):
            continue
        path = getattr(module, "__file__", None)
        if not path:
            continue
        try:
            stat = os.stat(path)
        except OSError:
            continue
        out.add((path, stat.st_size, stat.st_mtime_ns))
    return sorted(out)


def key(plan, layout, chunk_len: int, needs_skip: bool) -> str | None:
    """The cache key of `plan`'s programs on `layout`; None when it cannot be cached or the
    cache is off."""
    if _directory is None or not cacheable(plan):
        return None
    from purejaxrl_lab import checkpoint as ckpt

    devices = layout.mesh.devices.ravel()
    parts = {
        "format": FORMAT, "python": platform.python_version(), "jax": jax.__version__,
        "jaxlib": jaxlib.__version__, "packages": _package_digest(), "dependencies": _dependency_files(),
        "jax_config": sorted((k, repr(v)) for k, v in jax.config.values.items()),
        "environ": sorted((k, v) for k, v in os.environ.items() if k.startswith(("JAX_", "XLA_"))),
        "devices": [devices[0].platform, devices[0].device_kind, devices[0].client.platform_version,
                    len(devices), jax.process_count(), [d.id for d in devices]],
        "agent": plan.name, "env": plan.env_id, "env_params": ckpt.env_params_dict(plan.env_params),
        "config": ckpt.json_ready(dataclasses.asdict(plan.config)),
        "swept": sorted((k, str(v)) for k, v in plan.dtypes.items()),
        "batch": [layout.batch, layout.padded], "chunk": [chunk_len, needs_skip],
    }
    blob = json.dumps(parts, sort_keys=True, default=repr).encode()
    return f"purejaxrl_lab-{plan.name}-{hashlib.sha256(blob).hexdigest()}"


# --------------------------------------------------------------------------- store


def load(name: str | None) -> Programs | None:
    """The programs stored under `name`, or None (not there, or unreadable)."""
    if name is None or _directory is None:
        return None
    try:
        stored = pickle.loads((_directory / (name + SUFFIX)).read_bytes())
        return Programs(export.deserialize(stored["init"]), export.deserialize(stored["chunk"]),
                        stored["state_tree"], from_cache=True)
    except Exception:  # noqa: BLE001 - missing or damaged: a miss, written again after tracing
        return None


def save(name: str | None, programs: Programs) -> None:
    """Stores `programs` under `name` atomically (a write to a temporary file, then a rename).

    A program that cannot be stored (a full disk, a state no pickle can hold) is reported in
    a warning; the run goes on.
    """
    if name is None or _directory is None:
        return
    path = _directory / (name + SUFFIX)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        blob = pickle.dumps({"init": programs.init.serialize(), "chunk": programs.chunk.serialize(),
                             "state_tree": programs.state_tree})
        _directory.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    except Exception as e:  # noqa: BLE001
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        warnings.warn(f"program cache: could not store {path} ({type(e).__name__}: {e}); the next "
                      f"identical run traces its programs again", RuntimeWarning, stacklevel=2)
