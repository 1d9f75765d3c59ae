"""`Results` (a run) and `SweepResults` (a sweep): what a run produced, saved and loaded as
plain files (JSON lines, JSON, NumPy), with honest summaries, rankings and plots."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from purejaxrl_lab import stats

# Metrics that are NaN by design when no episode ended in an iteration.
NAN_ALLOWED = ("episode_return", "episode_length")
FINAL_FRACTION = 0.1
FINAL_RETURN_DEFINITION = "mean return of episodes ending in the last 10% of iterations"


def final_returns(episode_return: np.ndarray, episodes: np.ndarray) -> np.ndarray:
    """[..., iteration] -> [...]: the mean return of all episodes that ended in the last 10%
    of iterations (at least one), each episode weighted equally; NaN where none ended."""
    num_iterations = episode_return.shape[-1]
    window = max(1, int(round(num_iterations * FINAL_FRACTION)))
    ret = episode_return[..., -window:]
    count = episodes[..., -window:].astype(np.float64)
    total = np.where(count > 0, np.nan_to_num(ret) * count, 0.0).sum(axis=-1)
    n = count.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / n, np.nan)


def _interval(values: np.ndarray) -> dict[str, Any]:
    """IQM, mean, median, min, max and the 95% stratified-bootstrap interval of the IQM and mean."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return {"iqm": None, "iqm_ci95": None, "mean": None, "mean_ci95": None, "median": None,
                "min": None, "max": None, "num_finite": 0}
    return {
        "iqm": float(stats.iqm(finite)),
        "iqm_ci95": list(stats.stratified_bootstrap_ci(finite, stats.iqm)),
        "mean": float(finite.mean()),
        "mean_ci95": list(stats.stratified_bootstrap_ci(finite, stats.mean)),
        "median": float(np.median(finite)),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "num_finite": int(finite.size),
    }


@dataclasses.dataclass(kw_only=True)
class _Run:
    """Fields a run and a sweep share."""

    agent: str
    env: str
    config: dict[str, Any]
    seeds: list[int]
    metrics: dict[str, np.ndarray]
    steps_per_iteration: int
    compile_time: float
    run_time: float
    versions: dict[str, str]
    device: dict[str, Any]
    env_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    resumed_from: int | None = None
    """Iterations already done in the checkpoint this run resumed from (None: not resumed)."""
    compilations: int = 0
    """XLA compilations while building the run's programs (0 when all came from the cache)."""
    cache_hits: int = 0
    """Programs loaded from JAX's persistent compilation cache instead of compiled."""
    programs_cached: bool = False
    """Whether the run's lowered programs came from the program cache (`purejaxrl_lab.programs`)
    instead of being traced."""
    final_state: Any = dataclasses.field(default=None, repr=False, compare=False)
    """The trained agent states, batched over runs (in memory only, not saved)."""

    KIND = "run"

    @property
    def num_iterations(self) -> int:
        return next(iter(self.metrics.values())).shape[-1]

    @property
    def num_runs(self) -> int:
        return int(np.prod(next(iter(self.metrics.values())).shape[:-1]))

    @property
    def env_steps(self) -> np.ndarray:
        """Cumulative environment steps per run after each iteration [iteration]."""
        return self.steps_per_iteration * np.arange(1, self.num_iterations + 1)

    @property
    def steps_per_second(self) -> float:
        """Environment steps per second over all runs, excluding compilation (counting only
        the iterations this call ran when it resumed)."""
        ran = self.num_iterations - (self.resumed_from or 0)
        total = self.steps_per_iteration * ran * self.num_runs
        return total / self.run_time if self.run_time > 0 else float("nan")

    @property
    def final_return(self) -> np.ndarray:
        """Per run ([seed], or [setting, seed] for a sweep): the mean return of all episodes
        that ended in the last 10% of iterations (at least one iteration), each episode
        weighted equally. NaN for a run where no episode ended in that window."""
        return final_returns(self.metrics["episode_return"], self.metrics["episodes"])

    def _common_summary(self) -> dict[str, Any]:
        return {
            "kind": self.KIND, "agent": self.agent, "env": self.env,
            "num_seeds": len(self.seeds), "num_iterations": self.num_iterations,
            "env_steps_per_seed": int(self.env_steps[-1]),
            "compile_time_s": round(self.compile_time, 3), "run_time_s": round(self.run_time, 3),
            "steps_per_second": round(self.steps_per_second, 1),
            "resumed_from": self.resumed_from,
            "compilations": self.compilations, "compilation_cache_hits": self.cache_hits,
            "programs_cached": self.programs_cached,
        }

    def _record(self) -> dict[str, Any]:
        """What summary.json holds besides the summary: enough to reproduce the run."""
        return {"config": self.config, "seeds": self.seeds, "env_params": self.env_params,
                "steps_per_iteration": self.steps_per_iteration, "versions": self.versions,
                "device": self.device}

    def _rows(self) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, directory: str | os.PathLike) -> Path:
        """Writes metrics.npz, metrics.jsonl (one line per run and iteration) and summary.json
        into `directory` (created if needed; it may already hold the run's checkpoints/ and
        logs, never another run's results).

        Each file is written under a temporary name and renamed into place when complete,
        summary.json last: an interrupted save leaves no summary.json, so nothing reads
        partial results, and existing results are never overwritten.
        """
        directory = Path(directory)
        if (directory / "summary.json").exists():
            raise FileExistsError(f"out={str(directory)!r} already holds results (summary.json); "
                                  f"choose a new directory")
        directory.mkdir(parents=True, exist_ok=True)

        def write(name: str, fill) -> None:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
            try:
                with os.fdopen(fd, "wb") as f:
                    fill(f)
                os.replace(tmp, directory / name)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

        write("metrics.npz", lambda f: np.savez(f, **self.metrics))

        def jsonl(f):
            for row in self._rows():
                f.write((json.dumps(row) + "\n").encode())

        write("metrics.jsonl", jsonl)
        summary = {**self.summary(), **self._record()}
        write("summary.json", lambda f: f.write((json.dumps(summary, indent=2, default=_json) + "\n").encode()))
        return directory

    def non_finite(self) -> dict[str, list]:
        """Metric name -> runs with a NaN or infinite value (NaN-by-design metrics excluded):
        seeds for a run, [setting index, seed] pairs for a sweep."""
        out = {}
        for name, values in self.metrics.items():
            if name in NAN_ALLOWED:
                continue
            bad = ~np.isfinite(values).all(axis=-1)
            if bad.any():
                out[name] = [self._run_label(idx) for idx in zip(*np.nonzero(bad))]
        return out

    def _run_label(self, idx):
        raise NotImplementedError


@dataclasses.dataclass(kw_only=True)
class Results(_Run):
    """A run's metrics [seed, iteration] and everything needed to reproduce and report it.

    Attributes:
      agent: agent name, e.g. "ppo".
      env: environment id.
      config: the agent config as a dict.
      seeds: the integer seeds; row i of every metric is seed `seeds[i]`.
      metrics: name -> array [seed, iteration] of per-iteration scalars.
      steps_per_iteration: environment steps one iteration collects (per seed).
      compile_time: seconds spent compiling (init and update programs).
      run_time: seconds spent running the compiled programs, progress reporting included.
      versions: package versions (python, jax, jaxlib, flax, optax, gymnax, ...).
      device: platform, device kind, device count, devices used, processes, padding, the
        host's CPU cores and processor model.
      env_params: the environment parameters the run used.
    """

    KIND = "run"

    def _run_label(self, idx):
        return self.seeds[idx[0]]

    def summary(self) -> dict[str, Any]:
        return {**self._common_summary(), "final_return": {
            "definition": FINAL_RETURN_DEFINITION,
            "per_seed": [None if not np.isfinite(v) else float(v) for v in self.final_return],
            **_interval(self.final_return),
        }, "non_finite_metrics": self.non_finite()}

    def table(self) -> str:
        """A plain-text summary table."""
        f = self.summary()["final_return"]
        rows = [
            ("agent / env", f"{self.agent} / {self.env}"),
            ("seeds", str(len(self.seeds))),
            ("env steps per seed", f"{int(self.env_steps[-1]):,}"),
            ("compile time", f"{self.compile_time:.2f} s ({_programs(self)})"),
            ("run time", f"{self.run_time:.2f} s"),
            ("env steps / s", f"{self.steps_per_second:,.0f}"),
            ("final return mean", f"{_num(f['mean'])}  95% CI {_ci(f['mean_ci95'])}"),
            ("final return IQM", f"{_num(f['iqm'])}  95% CI {_ci(f['iqm_ci95'])}"),
            ("final return min / max", f"{_num(f['min'])} / {_num(f['max'])}"),
            ("device", _device(self.device)),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def _rows(self):
        names = sorted(self.metrics)
        steps = self.env_steps
        for i, seed in enumerate(self.seeds):
            for t in range(self.num_iterations):
                row = {"seed": seed, "iteration": t, "env_steps": int(steps[t])}
                row.update({n: _scalar(self.metrics[n][i, t]) for n in names})
                yield row

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Results | SweepResults:
        """Reads a results directory written by `save` (a run's or a sweep's)."""
        directory = Path(directory)
        summary_path = directory / "summary.json"
        if not summary_path.is_file():
            raise FileNotFoundError(f"{str(directory)!r} holds no summary.json: not a results directory")
        s = json.loads(summary_path.read_text())
        with np.load(directory / "metrics.npz") as data:
            metrics = {k: data[k] for k in data.files}
        common = dict(agent=s["agent"], env=s["env"], config=s["config"], seeds=s["seeds"],
                      metrics=metrics, steps_per_iteration=s["steps_per_iteration"],
                      compile_time=s["compile_time_s"], run_time=s["run_time_s"],
                      versions=s["versions"], device=s["device"], env_params=s.get("env_params", {}),
                      resumed_from=s.get("resumed_from"), compilations=s.get("compilations", 0),
                      cache_hits=s.get("compilation_cache_hits", 0),
                      programs_cached=s.get("programs_cached", False))
        if s.get("kind") == SweepResults.KIND:
            return SweepResults(settings=s["settings"], **common)
        return Results(**common)

    def plot(self, path: str | os.PathLike, statistic: str = "iqm", metric: str = "episode_return"):
        """Writes a PNG learning curve: `statistic` ("iqm" or "mean") across seeds with a
        95% bootstrap band, against environment steps.

        Iterations in which a seed finished no episode carry that seed's previous
        value forward (and are left out before its first finished episode).
        """
        from purejaxrl_lab import plots

        return plots.curves([(f"{self.agent} ({len(self.seeds)} seeds)", self.env_steps,
                              self.metrics[metric])], path, statistic=statistic, metric=metric,
                            title=self.env)


@dataclasses.dataclass(kw_only=True)
class SweepResults(_Run):
    """A sweep's metrics [setting, seed, iteration]: every setting ran with every seed.

    Attributes (besides those of `Results`):
      settings: the settings in order; `metrics[k][j, i]` is setting j with seed `seeds[i]`.
    """

    settings: list[dict[str, Any]]
    KIND = "sweep"

    def _run_label(self, idx):
        return [int(idx[0]), self.seeds[idx[1]]]

    def result(self, j: int) -> Results:
        """Setting j as a plain `Results` (metrics [seed, iteration])."""
        if not isinstance(j, (int, np.integer)) or not 0 <= j < len(self.settings):
            raise ValueError(f"setting index {j!r} is not allowed: expected 0..{len(self.settings) - 1}")
        n = len(self.seeds)
        state = None
        if self.final_state is not None:
            import jax

            state = jax.tree.map(lambda x: x[j * n:(j + 1) * n], self.final_state)
        from purejaxrl_lab.grid import split

        hparams, env_values = split(self.settings[j])
        env_params, config = {**self.env_params, **env_values}, {**self.config, **hparams}
        return Results(agent=self.agent, env=self.env, config=config, seeds=self.seeds,
                       metrics={k: v[j] for k, v in self.metrics.items()},
                       steps_per_iteration=self.steps_per_iteration,
                       compile_time=self.compile_time, run_time=self.run_time,
                       versions=self.versions, device=self.device, env_params=env_params,
                       resumed_from=self.resumed_from, compilations=self.compilations,
                       cache_hits=self.cache_hits, programs_cached=self.programs_cached,
                       final_state=state)

    def ranking(self) -> list[dict[str, Any]]:
        """Settings ordered by the IQM of their seeds' final returns (best first), each with
        the 95% stratified-bootstrap interval of that IQM, the mean, min and max.
        A setting with no finished episode in the final window ranks last."""
        rows = []
        for j, setting in enumerate(self.settings):
            rows.append({"index": j, "setting": setting, **_interval(self.final_return[j])})
        rows.sort(key=lambda r: (r["iqm"] is None, -(r["iqm"] or 0.0), r["index"]))
        for rank, r in enumerate(rows, 1):
            r["rank"] = rank
        return rows

    def best_index(self) -> int:
        """Index of the setting with the highest IQM final return."""
        return self.ranking()[0]["index"]

    def best(self) -> dict[str, Any]:
        """The setting with the highest IQM final return."""
        return dict(self.settings[self.best_index()])

    def summary(self) -> dict[str, Any]:
        return {**self._common_summary(), "num_settings": len(self.settings),
                "final_return_definition": FINAL_RETURN_DEFINITION,
                "ranking": self.ranking(), "best": self.best(),
                "final_return_per_run": [[None if not np.isfinite(v) else float(v) for v in row]
                                         for row in self.final_return],
                "non_finite_metrics": self.non_finite()}

    def _record(self) -> dict[str, Any]:
        return {**super()._record(), "settings": self.settings}

    def table(self) -> str:
        """The ranking, one line per setting, then the run's figures."""
        from purejaxrl_lab.grid import label

        head = ["rank", "setting", "IQM final return", "95% CI", "mean", "min"]
        body = [[str(r["rank"]), label(r["setting"]), _num(r["iqm"]), _ci(r["iqm_ci95"]),
                 _num(r["mean"]), _num(r["min"])] for r in self.ranking()]
        widths = [max(len(row[c]) for row in [head, *body]) for c in range(len(head))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [head, *body]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines += ["", f"{self.agent} / {self.env}: {len(self.settings)} settings x {len(self.seeds)} "
                      f"seeds, {int(self.env_steps[-1]):,} env steps each, one compiled program",
                  f"compile {self.compile_time:.2f} s ({_programs(self)}), run {self.run_time:.2f} s, "
                  f"{self.steps_per_second:,.0f} env steps/s, device {_device(self.device)}"]
        return "\n".join(lines)

    def _rows(self):
        names = sorted(self.metrics)
        steps = self.env_steps
        for j in range(len(self.settings)):
            for i, seed in enumerate(self.seeds):
                for t in range(self.num_iterations):
                    row = {"setting": j, "seed": seed, "iteration": t, "env_steps": int(steps[t])}
                    row.update({n: _scalar(self.metrics[n][j, i, t]) for n in names})
                    yield row

    def plot(self, path: str | os.PathLike, statistic: str = "iqm", metric: str = "episode_return"):
        """Writes a PNG with one learning curve per setting (`statistic` across seeds, 95%
        bootstrap band)."""
        from purejaxrl_lab import plots
        from purejaxrl_lab.grid import label

        curves = [(label(s), self.env_steps, self.metrics[metric][j]) for j, s in enumerate(self.settings)]
        return plots.curves(curves, path, statistic=statistic, metric=metric,
                            title=f"{self.agent} on {self.env}, {len(self.seeds)} seeds per setting")


def _num(v, fmt="{:.1f}"):
    return "n/a" if v is None else fmt.format(v)


def _ci(v):
    return "n/a" if v is None else "[{:.1f}, {:.1f}]".format(*v)


def _programs(r) -> str:
    out = f"{r.compilations} XLA compilation{'s' if r.compilations != 1 else ''}"
    out += f", {r.cache_hits} from cache" if r.cache_hits else ""
    return out + (", no tracing (program cache)" if r.programs_cached else "")


def _device(d: dict[str, Any]) -> str:
    used = d.get("used", d.get("count"))
    out = f"{d.get('platform')} x{used}"
    if d.get("processes", 1) > 1:
        out += f" over {d['processes']} processes"
    if d.get("padding"):
        out += f" (batch padded by {d['padding']})"
    return out


def _forward_fill(x: np.ndarray) -> np.ndarray:
    """Replaces each NaN along the last axis by the latest earlier non-NaN value (leading NaNs stay)."""
    x = np.asarray(x, dtype=np.float64)
    idx = np.where(np.isnan(x), 0, np.arange(x.shape[-1]))
    np.maximum.accumulate(idx, axis=-1, out=idx)
    return np.take_along_axis(x, idx, axis=-1)


def _scalar(v):
    v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def _json(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


load = Results.load
