"""purejaxrl_lab: run agents over many seeds and settings as one compiled program, sharded over
devices and hosts, checkpointed, and reported honestly.

Names are imported on first use, so that a multi-host script can call
`purejaxrl_lab.runtime.initialize_distributed(...)` before anything (gymnax included)
touches a device.

Importing it gives JAX's CPU backend one device per core (`runtime.use_cpu_cores`), so that
the seeds of a run train on every core; it has no effect once JAX has run anything, so
import `purejaxrl_lab` before `envs`, `agents` or gymnax. `JAX_NUM_CPU_DEVICES=1` opts out.
"""

import importlib

from purejaxrl_lab.runtime import use_cpu_cores as _use_cpu_cores

_use_cpu_cores()

_NAMES = {
    "run": "purejaxrl_lab.runner", "sweep": "purejaxrl_lab.runner",
    "prepare": "purejaxrl_lab.runner", "execute": "purejaxrl_lab.runner",
    "Results": "purejaxrl_lab.results", "SweepResults": "purejaxrl_lab.results",
    "load": "purejaxrl_lab.results",
    "Policy": "purejaxrl_lab.checkpoint", "load_policy": "purejaxrl_lab.checkpoint",
}
_MODULES = ("loggers", "plots", "runtime", "stats")

__all__ = sorted([*_NAMES, *_MODULES])


def __getattr__(name):
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"purejaxrl_lab.{name}")
    raise AttributeError(f"module 'purejaxrl_lab' has no attribute {name!r}")


def __dir__():
    return __all__
