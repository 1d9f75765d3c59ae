"""Sweep settings: a cartesian grid or an explicit list, checked before anything compiles.

A setting maps names to values. A name is either a tunable hyperparameter of the
agent (a field of its `state.hparams`, e.g. "learning_rate") or an environment
parameter written "env.<field>" (e.g. "env.length" for CartPole's pole length).
Both are arrays inside the compiled program, so every setting runs in the same
program. Every other config field is fixed when the program is built (num_envs,
num_steps, hidden_sizes, total_timesteps, anneal_lr, ...): it cannot be swept this way
and is refused by name.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agents.common.config import flatten, with_overrides
from envs.utils import unknown_name_error

ENV_PREFIX = "env."


def split(setting: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hyperparameters, environment parameters without the "env." prefix) of a setting."""
    hparams = {k: v for k, v in setting.items() if not k.startswith(ENV_PREFIX)}
    env = {k[len(ENV_PREFIX):]: v for k, v in setting.items() if k.startswith(ENV_PREFIX)}
    return hparams, env


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _values(name: str, values: Any) -> list:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise ValueError(f"grid[{name!r}]={values!r} is not allowed: expected a list of values")
    values = list(values.tolist() if isinstance(values, np.ndarray) else values)
    if not values:
        raise ValueError(f"grid[{name!r}]=[] is not allowed: expected at least one value")
    return values


def expand(grid: Mapping[str, Sequence] | None = None,
           settings: Sequence[Mapping[str, Any]] | Mapping[str, Sequence] | None = None) -> list[dict]:
    """The settings of a sweep, in order.

    Args:
      grid: name -> values; the cartesian product, the last name varying fastest.
      settings: an explicit list of settings (all with the same names), or
        name -> values of equal lengths (zipped).
    """
    if (grid is None) == (settings is None):
        raise ValueError("a sweep takes exactly one of grid= (a cartesian grid) or settings= "
                         "(an explicit list of settings)")
    if grid is not None:
        if not isinstance(grid, Mapping) or not grid:
            raise ValueError(f"grid={grid!r} is not allowed: expected a non-empty mapping "
                             f"name -> list of values")
        names = list(grid)
        columns = [_values(n, grid[n]) for n in names]
        out = [dict(zip(names, combo)) for combo in itertools.product(*columns)]
    elif isinstance(settings, Mapping):
        if not settings:
            raise ValueError("settings={} is not allowed: expected at least one name -> values")
        columns = {n: _values(n, v) for n, v in settings.items()}
        lengths = {n: len(v) for n, v in columns.items()}
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{n} has {k}" for n, k in lengths.items())
            raise ValueError(f"settings: the value lists must have equal lengths ({detail})")
        out = [dict(zip(columns, combo)) for combo in zip(*columns.values())]
    else:
        if isinstance(settings, (str, bytes)) or not isinstance(settings, Sequence) or not settings:
            raise ValueError(f"settings={settings!r} is not allowed: expected a non-empty list of "
                             f"mappings name -> value")
        out = []
        for j, s in enumerate(settings):
            if not isinstance(s, Mapping) or not s:
                raise ValueError(f"settings[{j}]={s!r} is not allowed: expected a non-empty mapping "
                                 f"name -> value")
            if set(s) != set(settings[0]):
                raise ValueError(f"settings[{j}] has names {sorted(s)} but settings[0] has "
                                 f"{sorted(settings[0])}: every setting must set the same names")
            out.append(dict(s))
    seen = {}
    for j, s in enumerate(out):
        key = tuple(sorted((k, repr(v)) for k, v in s.items()))
        if key in seen:
            raise ValueError(f"setting {s} appears twice (settings {seen[key]} and {j})")
        seen[key] = j
    return out


def check(settings: list[dict], agent_name: str, config: Any, tunable: Mapping[str, np.dtype],
          shape_fields: frozenset[str], env_params: Any) -> dict[str, np.dtype]:
    """Checks every name and value; returns name -> dtype of its array in the program.

    Args:
      tunable: the agent's tunable hyperparameters (fields of `state.hparams`) and their dtypes.
      shape_fields: the config fields the agent says fix array shapes.

    Raises:
      ValueError: an unknown name (closest matches listed), a config field that is
        not tunable, a value the config or the environment does not allow.
    """
    env_fields = {f.name: f for f in dataclasses.fields(env_params)} if dataclasses.is_dataclass(
        env_params) else {}
    config_names = list(flatten(config))
    dtypes: dict[str, np.dtype] = {}
    for name in settings[0]:
        if name.startswith(ENV_PREFIX):
            field = name[len(ENV_PREFIX):]
            if field not in env_fields:
                raise unknown_name_error("environment parameter", name,
                                         [ENV_PREFIX + f for f in env_fields])
            default = getattr(env_params, field)
            integer = isinstance(default, (int, np.integer)) and not isinstance(default, bool)
            dtypes[name] = _checked(name, [s[name] for s in settings], integer)
            continue
        if name not in config_names:
            raise unknown_name_error(f"config field of {type(config).__qualname__} (or env.<param>)",
                                     name, config_names)
        if name not in tunable:
            why = ("it fixes array shapes" if name in shape_fields
                   else "it is fixed when the program is built")
            raise ValueError(
                f"{name} cannot be swept in one compiled program: {why}, so it is not a tunable "
                f"hyperparameter of {agent_name}. Tunable: {', '.join(tunable) or 'none'}, and "
                f"env.<param>. Run one sweep per value of {name} instead")
        _checked(name, [s[name] for s in settings], np.issubdtype(tunable[name], np.integer))
        dtypes[name] = np.dtype(tunable[name])
    for s in settings:  # the agent's own range checks, setting by setting
        with_overrides(config, {n: _python(v) for n, v in split(s)[0].items()})
    return dtypes


def _checked(name: str, values: list, integer: bool) -> np.dtype:
    """The dtype of a swept name's array, after checking every value is a finite number
    (an integral one when `integer`)."""
    for v in values:
        if not _is_number(v) or not math.isfinite(float(v)) or (integer and float(v) != int(v)):
            kind = "an integer" if integer else "a finite number"
            raise ValueError(f"{name}={v!r} is not allowed: expected {kind}")
    return np.dtype(np.int32 if integer else np.float32)


def _python(v):
    return v.item() if isinstance(v, (np.integer, np.floating)) else v


def label(setting: Mapping[str, Any]) -> str:
    """`learning_rate=0.001 env.length=0.5`."""
    return " ".join(f"{k}={_python(v):g}" if _is_number(v) else f"{k}={v}" for k, v in setting.items())


def parse_number(text: str) -> int | float:
    """"3" -> 3, "1e-3" -> 0.001; a ValueError for anything else."""
    text = text.strip()
    return int(text) if text.lstrip("+-").isdigit() else float(text)


def parse_items(items: Sequence[str], flag: str, form: str, example: str) -> dict[str, str]:
    """Command-line `NAME=VALUE` items -> {name: value text}, names with "-" read as "_";
    one-line errors naming `flag` for a malformed item or a name given twice."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().lstrip("-").replace("-", "_")
        if not sep or not name or not value.strip():
            raise ValueError(f"{flag} item {item!r} is not allowed: expected {form} (e.g. {example})")
        if name in out:
            raise ValueError(f"{flag} names {name} twice")
        out[name] = value.strip()
    return out


def parse_cli(items: Sequence[str]) -> dict[str, list]:
    """`["learning_rate=1e-3,3e-4", "ent_coef=0,0.01"]` -> {"learning_rate": [...], ...}."""
    grid: dict[str, list] = {}
    for name, values in parse_items(items, "--grid", "NAME=V1,V2,...",
                                    "learning_rate=1e-3,3e-4").items():
        grid[name] = []
        for v in values.split(","):
            try:
                grid[name].append(parse_number(v))
            except ValueError:
                raise ValueError(f"--grid {name}: {v.strip()!r} is not a number") from None
    return grid
