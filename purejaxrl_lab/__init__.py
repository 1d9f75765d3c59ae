"""purejaxrl_lab: run agents over many seeds and settings as one compiled program, sharded over
devices and hosts, checkpointed, evaluated, and reported honestly.

Importing it changes nothing in your process. On a CPU-only machine, call
`purejaxrl_lab.use_cpu_cores()` first thing (the CLI does) so that JAX has one CPU device per
core and a run's seeds train on every core.

Names are imported on first use, so that a multi-host script can call
`purejaxrl_lab.runtime.initialize_distributed(...)` before anything touches a device.
"""

import importlib

_NAMES = {
    "run": "purejaxrl_lab.runner", "sweep": "purejaxrl_lab.runner",
    "execute": "purejaxrl_lab.runner", "prepare": "purejaxrl_lab.plan",
    "Results": "purejaxrl_lab.results", "SweepResults": "purejaxrl_lab.results",
    "load": "purejaxrl_lab.results",
    "Policy": "purejaxrl_lab.checkpoint", "load_policy": "purejaxrl_lab.checkpoint",
    "evaluate": "purejaxrl_lab.evaluation", "Evaluation": "purejaxrl_lab.evaluation",
    "use_cpu_cores": "purejaxrl_lab.runtime",
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
