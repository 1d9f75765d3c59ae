"""Frozen agent configs: validation, nested fields and overrides.

Every error names the field, the value and what is allowed. Configs may nest (a field
whose value is itself a config dataclass); nested fields are named with dots,
"network.hidden_sizes", in overrides, sweeps, checkpoints and on the command line
(`--network.hidden-sizes 32 32`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
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


def check_sizes(config, name: str) -> None:
    """A tuple of layer widths: one or more integers >= 1."""
    value = getattr(config, name)
    if not value or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0
                            for h in value):
        raise invalid(name, value, "expected one or more integers >= 1")


def check_replay(config, n_step: int = 1) -> None:
    """The budget and buffer fields of a replay agent (fields total_timesteps, num_envs,
    num_steps, learning_starts, buffer_size, batch_size; properties units_per_iteration and
    capacity = buffer_size // num_envs): learning starts inside the run, the buffer holds an
    iteration's steps, a batch, and more than an n-step window per environment."""
    if config.learning_starts < 0:
        raise invalid("learning_starts", config.learning_starts, "expected an integer >= 0")
    if config.total_timesteps < config.units_per_iteration:
        raise invalid("total_timesteps", config.total_timesteps,
                      f"must be at least one iteration, num_envs * num_steps = "
                      f"{config.units_per_iteration}")
    if config.learning_starts >= config.total_timesteps:
        raise invalid("learning_starts", config.learning_starts,
                      f"must be below total_timesteps = {config.total_timesteps}, "
                      f"or the run never learns")
    if config.capacity < config.num_steps:
        raise invalid("buffer_size", config.buffer_size,
                      f"must hold one iteration's steps: buffer_size // num_envs = "
                      f"{config.capacity} is below num_steps = {config.num_steps}")
    if config.buffer_size < config.batch_size:
        raise invalid("buffer_size", config.buffer_size,
                      f"must hold at least one batch, batch_size = {config.batch_size}")
    if config.capacity <= n_step:
        field = "n_step" if n_step > 1 or hasattr(config, "n_step") else "buffer_size"
        raise invalid(field, getattr(config, field),
                      f"must be below the buffer's steps per environment, buffer_size // "
                      f"num_envs = {config.capacity}" if field == "n_step" else
                      f"must hold more than {n_step} step(s) per environment (num_envs = "
                      f"{config.num_envs})")


def check_choice(config, name: str, choices) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise unknown_name_error(f"{name}", str(value), list(choices))


# --------------------------------------------------------------------------- types


def _is_config(value) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


@functools.lru_cache(maxsize=None)
def _field_types(config_cls) -> dict[str, Any]:
    return typing.get_type_hints(config_cls)


def _coerce(name: str, value: Any, kind: Any):
    """`value` as a field of type `kind`: an integral float is an int (1e5 -> 100000), an int
    is a float, a list is a tuple, a mapping is a nested config; otherwise a clear error."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0]) if len(inner) == 1 else value
    if kind is bool:
        if not isinstance(value, bool):
            raise invalid(name, value, "expected True or False")
        return value
    if kind is int:
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(name, value, "expected an integer")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid(name, value, "expected a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise invalid(name, value, "expected a string")
        return value
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
            raise invalid(name, value, "expected a tuple of values, e.g. (64, 64)")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(name, v, args[0]) for v in value)
        return tuple(value)
    if dataclasses.is_dataclass(kind):
        if isinstance(value, kind):
            return value
        if isinstance(value, Mapping):
            return with_overrides(kind(), value)
        raise invalid(name, value, f"expected a {kind.__name__} or a mapping of its fields")
    return value


def normalize_fields(config) -> None:
    """Brings every field of a frozen config to its annotated type, in place; call it first in
    `__post_init__`. Integral floats become ints (`total_timesteps=1e5`), ints floats, lists
    tuples, mappings nested configs; a value of another type raises, naming the field."""
    hints = _field_types(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        fixed = _coerce(f.name, value, hints.get(f.name, Any))
        if fixed is not value:
            object.__setattr__(config, f.name, fixed)


# --------------------------------------------------------------------------- nested names


def field_names(config_cls) -> list[str]:
    """The top-level field names of a config class."""
    return [f.name for f in dataclasses.fields(config_cls)]


def flatten(config, prefix: str = "") -> dict[str, Any]:
    """Dotted name -> value of every leaf field ("network.hidden_sizes"), in field order.
    Also takes the nested dict `dataclasses.asdict` gives."""
    items = (config.items() if isinstance(config, Mapping)
             else ((f.name, getattr(config, f.name)) for f in dataclasses.fields(config)))
    out = {}
    for name, value in items:
        if _is_config(value) or isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def with_overrides(config, overrides: Mapping[str, Any]):
    """`dataclasses.replace` for nested configs: names may be dotted ("network.hidden_sizes")
    or nested mappings; unknown names raise with their closest matches."""
    known = flatten(config)
    top: dict[str, Any] = {}
    nested: dict[str, dict] = {}
    for name, value in _dotted(config, overrides).items():
        head, dot, rest = name.partition(".")
        whole_field = not dot and head in field_names(type(config))  # e.g. a nested config
        if name not in known and not whole_field:
            raise unknown_name_error(f"config field of {type(config).__qualname__}", name, list(known))
        if dot:
            nested.setdefault(head, {})[rest] = value
        else:
            top[head] = value
    for head, values in nested.items():
        top[head] = with_overrides(top.get(head, getattr(config, head)), values)
    return dataclasses.replace(config, **top)


def _dotted(config, overrides: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Overrides with nested mappings for nested configs spelled out as dotted names."""
    out = {}
    for name, value in overrides.items():
        if not isinstance(name, str):
            raise invalid("config field", name, "expected a field name (a string)")
        inner = getattr(config, name, None) if "." not in name else None
        if isinstance(value, Mapping) and _is_config(inner):
            out.update(_dotted(inner, value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def config_from_dict(config_cls, values: Mapping[str, Any]):
    """Rebuilds a config from `dataclasses.asdict` output read back from JSON (nested dicts,
    lists for tuples); unknown names raise with their closest matches."""
    return with_overrides(config_cls(), values)


class OneStepConfig:
    """Config properties (the contract's) of an agent whose iteration is one step of one
    environment (or one round of a bandit): `total_timesteps` iterations, counted in `UNIT`."""

    UNIT = "env steps"

    @property
    def num_iterations(self) -> int:
        return self.total_timesteps

    @property
    def units_per_iteration(self) -> int:
        return 1

    @property
    def unit(self) -> str:
        return self.UNIT


class EnvStepsConfig:
    """Config properties (the contract's) of an agent whose iteration steps `num_envs`
    environments `num_steps` times: counted in env steps. Mix into the frozen Config class."""

    @property
    def units_per_iteration(self) -> int:
        """Environment steps one `update` takes: num_envs * num_steps."""
        return self.num_envs * self.num_steps

    @property
    def num_iterations(self) -> int:
        """Iterations of `update` in a run: total_timesteps // units_per_iteration."""
        return self.total_timesteps // self.units_per_iteration

    @property
    def unit(self) -> str:
        return "env steps"


def hparams_from_config(cls, config, overrides: Mapping[str, Any] | None = None,
                        int_fields: tuple[str, ...] = ()):
    """An `HParams` struct `cls` of scalar arrays from the config's fields of the same names,
    with `overrides` (e.g. one sweep setting) replacing some: int32 for `int_fields`,
    float32 for the rest."""
    import jax.numpy as jnp

    values = {f: getattr(config, f) for f in cls.__dataclass_fields__}
    values.update(overrides or {})
    return cls(**{f: jnp.asarray(v, jnp.int32 if f in int_fields else jnp.float32)
                  for f, v in values.items()})


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
