"""Logging sinks behind one small interface: `log(step, scalars)` and `close()`.

    JsonlLogger(path, step_name)           default; no account, no extra package
    TensorBoardLogger(logdir)              pip install "purejaxrl-lab[tensorboard]"
    WandbLogger(project, mode="offline")   pip install "purejaxrl-lab[wandb]"

`run` and `sweep` call `log` once per iteration, between chunks, on process 0 only
(`log_chunk`), with the mean over seeds of every metric (and, for a sweep, one group per
setting: "setting_3/episode_return"); `log_evaluation` sends an evaluation's means the
same way ("eval_return"). `step` is the agent's units per seed so far (environment steps
for PPO, rounds for a bandit, tokens for a sequence agent): TensorBoard and wandb take it
as their step; JSONL writes it under the unit's name (`step_name`, default "env_steps").
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
    """One JSON object per line: {step_name: step, name: value, ...}; NaN becomes null."""

    def __init__(self, path: str | Path, step_name: str = "env_steps"):
        self.path = Path(path)
        self.step_name = step_name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=1)

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        row = {self.step_name: int(step)}
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
    """Weights & Biases; `mode="offline"` (the default) needs no account: `wandb sync` later.

    `close()` returns once the run's files (`run-*.wandb`, `files/`) are complete on disk.
    """

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
        _wait_for_wandb_service()


def _wait_for_wandb_service() -> None:
    """Returns once wandb's service has handled every request this process has sent it.

    `Run.finish()` waits for the run's exit record, then only *publishes* the request that
    closes the run's stream, without waiting for it (wandb/sdk/wandb_run.py `Run._finish` ->
    `ServiceConnection.inform_finish`). wandb-core keeps the transaction log (`run-*.wandb`)
    in a 32 KiB buffer until that request closes it (`Connection.handleInformFinish` ->
    `Stream.Close` -> `transactionlog.Writer.Close`), so just after `finish()` the file may
    hold only its 7-byte header. The service handles one connection's requests one at a time,
    in order, so the answer to a later request on the same connection comes after the stream
    is closed: we ask for the status of a sync that does not exist (answered at once, changes
    nothing). Other runs of the process go on, unlike with `wandb.teardown()`, which finishes
    them all. Returns at once without a service (mode="disabled") or on a wandb without
    these calls.
    """
    try:
        from wandb.sdk import wandb_setup

        setup = wandb_setup.singleton()
        service = setup.assert_service()
        sync_status = service.sync_status
    except (ImportError, AttributeError, AssertionError):
        return
    setup.asyncer.run(lambda: sync_status("")).wait_or(timeout=None)


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
         run_name: str | None = None, step_name: str = "env_steps") -> list[Logger]:
    """Sinks by name, writing under `directory` (log.jsonl, tensorboard/, wandb/).

    `step_name` names the agent's unit in log.jsonl ("env_steps", "rounds", "tokens").
    """
    check_sinks(names)
    directory = Path(directory)
    out: list[Logger] = []
    for name in names:
        if name == "jsonl":
            out.append(JsonlLogger(directory / "log.jsonl", step_name=step_name))
        elif name == "tensorboard":
            out.append(TensorBoardLogger(directory / "tensorboard"))
        elif name == "wandb":
            out.append(WandbLogger(directory=directory, config=config, name=run_name))
    return out


def _means_over_seeds(metrics: Mapping[str, np.ndarray], settings: Sequence[Mapping] | None,
                      num_seeds: int) -> dict[str, np.ndarray]:
    """The mean over seeds of each metric, per setting, under its sink name.

    Args:
      metrics: name -> array [batch, ...], batch = settings x seeds, setting-major.
      settings: the sweep's settings, or None for a plain run.
      num_seeds: seeds per setting.

    Returns:
      sink name -> array [...]: "name" for a run; "setting_{j}/name" for setting j of a
      sweep (settings in order, then metrics). NaN seeds are left out of the mean; a mean
      over NaN only is NaN.
    """
    num_settings = 1 if settings is None else len(settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: no episode ended
        means = {name: np.nanmean(np.reshape(v, (num_settings, num_seeds, *np.shape(v)[1:])), axis=1)
                 for name, v in metrics.items()}  # name -> [setting, ...]
    prefixes = [""] if settings is None else [f"setting_{j}/" for j in range(num_settings)]
    return {prefix + name: m[j] for j, prefix in enumerate(prefixes) for name, m in means.items()}


def log_chunk(loggers: Sequence[Logger], metrics: Mapping[str, np.ndarray], first_iteration: int,
              units_per_iteration: int, settings: Sequence[Mapping] | None, num_seeds: int) -> None:
    """Sends each iteration of a chunk to every sink: means over seeds (`_means_over_seeds`).

    Args:
      metrics: name -> array [batch, n] for the chunk's n iterations.
      first_iteration: iterations done before the chunk; iteration t of the chunk is logged
        at step (first_iteration + t + 1) * units_per_iteration.
    """
    if not loggers:
        return
    means = _means_over_seeds(metrics, settings, num_seeds)  # sink name -> [n]
    n = len(next(iter(means.values())))
    for t in range(n):
        step = (first_iteration + t + 1) * units_per_iteration
        scalars = {name: float(m[t]) for name, m in means.items()}
        for logger in loggers:
            logger.log(step, scalars)


def log_evaluation(loggers: Sequence[Logger], step: int, metrics: Mapping[str, np.ndarray],
                   settings: Sequence[Mapping] | None, num_seeds: int) -> None:
    """Sends one evaluation to every sink at `step`: means over seeds (`_means_over_seeds`).

    Args:
      metrics: name -> array [batch] ("eval_return", "eval_length"), batch = settings x seeds.
    """
    if not loggers:
        return
    means = _means_over_seeds(metrics, settings, num_seeds)  # sink name -> []
    scalars = {name: float(m) for name, m in means.items()}
    for logger in loggers:
        logger.log(step, scalars)
