"""Logging sinks behind one small interface: `log(step, scalars)` and `close()`.

    JsonlLogger(path)                      default; no account, no extra package
    TensorBoardLogger(logdir)              pip install "purejaxrl-lab[tensorboard]"
    WandbLogger(project, mode="offline")   pip install "purejaxrl-lab[wandb]"

`run` and `sweep` call `log` once per iteration, between chunks, on process 0 only,
with the mean over seeds of every metric (and, for a sweep, one group per setting:
"setting_3/episode_return"). `step` is the environment steps per seed so far.
"""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

SINKS = ("jsonl", "tensorboard", "wandb")
EXTRAS = {"tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb")}


class Logger(Protocol):
    def log(self, step: int, scalars: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


class JsonlLogger:
    """One JSON object per line: {"env_steps": step, name: value, ...}; NaN becomes null."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=1)

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        row = {"env_steps": int(step)}
        row.update({k: (float(v) if math.isfinite(v) else None) for k, v in scalars.items()})
        self._file.write(json.dumps(row) + "\n")

    def close(self) -> None:
        self._file.close()


class TensorBoardLogger:
    """Scalars through tensorboardX's `SummaryWriter` (`tensorboard --logdir DIR`)."""

    def __init__(self, logdir: str | Path):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(str(logdir))

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        for k, v in scalars.items():
            if math.isfinite(v):
                self._writer.add_scalar(k, v, int(step))

    def close(self) -> None:
        self._writer.close()


class WandbLogger:
    """Weights & Biases; `mode="offline"` (the default) needs no account: `wandb sync` later."""

    def __init__(self, project: str = "purejaxrl-lab", directory: str | Path | None = None,
                 config: Mapping[str, Any] | None = None, mode: str = "offline", name: str | None = None):
        import wandb

        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(project=project, dir=None if directory is None else str(directory),
                               config=dict(config or {}), mode=mode, name=name, reinit="create_new")

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        self._run.log({k: v for k, v in scalars.items() if math.isfinite(v)}, step=int(step))

    def close(self) -> None:
        self._run.finish()


def check_sinks(names: Sequence[str]) -> None:
    """Refuses unknown sinks and sinks whose package is not installed (before any compilation)."""
    from envs.utils import unknown_name_error

    for name in names:
        if name not in SINKS:
            raise unknown_name_error("log sink", name, list(SINKS))
        if name in EXTRAS:
            module, extra = EXTRAS[name]
            if importlib.util.find_spec(module) is None:
                raise ValueError(f"log sink {name} needs the {module} package: "
                                 f"pip install \"purejaxrl-lab[{extra}]\"")


def make(names: Sequence[str], directory: str | Path, config: Mapping[str, Any] | None = None,
         run_name: str | None = None) -> list[Logger]:
    """Sinks by name, writing under `directory` (log.jsonl, tensorboard/, wandb/)."""
    check_sinks(names)
    directory = Path(directory)
    out: list[Logger] = []
    for name in names:
        if name == "jsonl":
            out.append(JsonlLogger(directory / "log.jsonl"))
        elif name == "tensorboard":
            out.append(TensorBoardLogger(directory / "tensorboard"))
        elif name == "wandb":
            out.append(WandbLogger(directory=directory, config=config, name=run_name))
    return out


def log_chunk(loggers: Sequence[Logger], metrics: Mapping[str, np.ndarray], first_iteration: int,
              steps_per_iteration: int, settings: Sequence[Mapping] | None, num_seeds: int) -> None:
    """Sends each iteration of a chunk (metrics [batch, n]) to every sink: means over seeds."""
    if not loggers:
        return
    num_settings = 1 if settings is None else len(settings)
    n = next(iter(metrics.values())).shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: no episode ended
        means = {k: np.nanmean(v.reshape(num_settings, num_seeds, n), axis=1)
                 for k, v in metrics.items()}  # [setting, n]
    for t in range(n):
        scalars: dict[str, float] = {}
        for j in range(num_settings):
            prefix = "" if settings is None else f"setting_{j}/"
            scalars.update({prefix + k: float(v[j, t]) for k, v in means.items()})
        step = (first_iteration + t + 1) * steps_per_iteration
        for logger in loggers:
            logger.log(step, scalars)
