"""Validation for frozen agent configs: every error names the field, the value and what is allowed."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from envs.utils import unknown_name_error

# Field metadata marking an option that only applies to one kind of action space:
#   some_field: float = dataclasses.field(default=..., metadata=ONLY_CONTINUOUS)
ONLY_CONTINUOUS = {"action_space": "continuous"}
ONLY_DISCRETE = {"action_space": "discrete"}


def invalid(field: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{field}={value!r} is not allowed: {allowed}")


def check_positive_int(config, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise invalid(name, value, "expected an integer >= 1")


def check_real(config, name: str, low: float = -math.inf, high: float = math.inf,
               low_open: bool = False) -> None:
    """Checks low <= value <= high (low < value when low_open) and finiteness."""
    value = getattr(config, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        left = "(" if low_open else "["
        raise invalid(name, value, f"expected a finite number in {left}{low}, {high}]")


def check_choice(config, name: str, choices) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise unknown_name_error(f"{name}", str(value), list(choices))


def field_names(config_cls) -> list[str]:
    return [f.name for f in dataclasses.fields(config_cls)]


def with_overrides(config, overrides: Mapping[str, Any]):
    """`dataclasses.replace` that names unknown fields with their closest matches."""
    names = field_names(type(config))
    for name in overrides:
        if name not in names:
            raise unknown_name_error(f"config field of {type(config).__qualname__}", name, names)
    return dataclasses.replace(config, **overrides)


def check_action_space(config, discrete: bool, env_name: str) -> None:
    """Refuses options that only apply to the other kind of action space.

    A field tagged ONLY_CONTINUOUS (ONLY_DISCRETE) may not differ from its
    default when the environment's actions are discrete (continuous).
    """
    kind = "discrete" if discrete else "continuous"
    for f in dataclasses.fields(config):
        only = f.metadata.get("action_space")
        if only is None or only == kind:
            continue
        value = getattr(config, f.name)
        if value != f.default:
            raise invalid(
                f.name, value,
                f"this option applies to {only} action spaces only, and {env_name} has "
                f"{kind} actions (leave it at {f.default!r})",
            )


def config_from_dict(config_cls, values: Mapping[str, Any]):
    """Rebuilds a config from `dataclasses.asdict` output read back from JSON (lists -> tuples
    where the default is a tuple); unknown names raise with their closest matches."""
    default = config_cls()
    fixed = {}
    for name, value in values.items():
        if isinstance(getattr(default, name, None), tuple) and isinstance(value, list):
            value = tuple(value)
        fixed[name] = value
    return with_overrides(default, fixed)
