"""purejaxrl_lab: run agents over many seeds and settings as one compiled program, sharded over
devices and hosts, checkpointed, and reported honestly.

Names are imported on first use, so that a multi-host script can call
`purejaxrl_lab.runtime.initialize_distributed(...)` before anything (gymnax included)
touches a device.
"""

import importlib

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
