"""`Results`: what a run produced, saved and loaded as plain files (JSON lines, JSON, NumPy)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from purejaxrl_lab import stats

# Metrics that are NaN by design when no episode ended in an iteration.
NAN_ALLOWED = ("episode_return", "episode_length")
FINAL_FRACTION = 0.1


@dataclasses.dataclass
class Results:
    """A run's metrics and everything needed to reproduce and report it.

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
      device: platform, device kind and device count the run used.
    """

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
    final_state: Any = dataclasses.field(default=None, repr=False, compare=False)
    """The trained agent states, batched over seeds (kept in memory only, not saved)."""

    @property
    def num_iterations(self) -> int:
        return next(iter(self.metrics.values())).shape[1]

    @property
    def env_steps(self) -> np.ndarray:
        """Cumulative environment steps per seed after each iteration [iteration]."""
        return self.steps_per_iteration * np.arange(1, self.num_iterations + 1)

    @property
    def steps_per_second(self) -> float:
        """Environment steps per second over all seeds, excluding compilation."""
        total = self.steps_per_iteration * self.num_iterations * len(self.seeds)
        return total / self.run_time if self.run_time > 0 else float("nan")

    @property
    def final_return(self) -> np.ndarray:
        """Per seed [seed]: the mean return of all episodes that ended in the last 10% of
        iterations (at least one iteration), each episode weighted equally. NaN for a
        seed where no episode ended in that window."""
        window = max(1, int(round(self.num_iterations * FINAL_FRACTION)))
        ret = self.metrics["episode_return"][:, -window:]
        count = self.metrics["episodes"][:, -window:].astype(np.float64)
        total = np.where(count > 0, np.nan_to_num(ret) * count, 0.0).sum(axis=1)
        n = count.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, total / n, np.nan)

    def non_finite(self) -> dict[str, list[int]]:
        """Metric name -> seeds with a NaN or infinite value (NaN-by-design metrics excluded)."""
        out = {}
        for name, values in self.metrics.items():
            if name in NAN_ALLOWED:
                continue
            bad = ~np.isfinite(values).all(axis=1)
            if bad.any():
                out[name] = [self.seeds[i] for i in np.flatnonzero(bad)]
        return out

    # ------------------------------------------------------------------ reporting

    def summary(self) -> dict[str, Any]:
        final = self.final_return
        finite = final[np.isfinite(final)]
        low, high = (stats.bootstrap_ci(finite, stats.mean) if finite.size else (np.nan, np.nan))
        return {
            "agent": self.agent,
            "env": self.env,
            "num_seeds": len(self.seeds),
            "num_iterations": self.num_iterations,
            "env_steps_per_seed": int(self.env_steps[-1]),
            "compile_time_s": round(self.compile_time, 3),
            "run_time_s": round(self.run_time, 3),
            "steps_per_second": round(self.steps_per_second, 1),
            "final_return": {
                "definition": "mean return of episodes ending in the last 10% of iterations",
                "per_seed": [None if not np.isfinite(v) else float(v) for v in final],
                "mean": float(finite.mean()) if finite.size else None,
                "mean_ci95": [float(low), float(high)] if finite.size else None,
                "iqm": float(stats.iqm(finite)) if finite.size else None,
                "min": float(finite.min()) if finite.size else None,
                "max": float(finite.max()) if finite.size else None,
            },
            "non_finite_metrics": self.non_finite(),
        }

    def table(self) -> str:
        """A plain-text summary table."""
        s = self.summary()
        f = s["final_return"]

        def num(v, fmt="{:.1f}"):
            return "n/a" if v is None else fmt.format(v)

        ci = "n/a" if f["mean_ci95"] is None else "[{:.1f}, {:.1f}]".format(*f["mean_ci95"])
        rows = [
            ("agent / env", f"{self.agent} / {self.env}"),
            ("seeds", str(s["num_seeds"])),
            ("env steps per seed", f"{s['env_steps_per_seed']:,}"),
            ("compile time", f"{self.compile_time:.2f} s"),
            ("run time", f"{self.run_time:.2f} s"),
            ("env steps / s", f"{self.steps_per_second:,.0f}"),
            ("final return mean", f"{num(f['mean'])}  95% CI {ci}"),
            ("final return IQM", num(f["iqm"])),
            ("final return min / max", f"{num(f['min'])} / {num(f['max'])}"),
            ("device", f"{self.device.get('platform')} x{self.device.get('count')}"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    # ------------------------------------------------------------------ files

    def save(self, directory: str | os.PathLike) -> Path:
        """Writes summary.json, metrics.jsonl (one line per seed and iteration) and
        metrics.npz into `directory`, which must not exist or be empty.

        Files are written to a temporary sibling directory first and moved into place
        only when complete, so an interrupted save never leaves partial results, and
        existing results are never overwritten.
        """
        directory = Path(directory)
        if directory.exists() and any(directory.iterdir()):
            raise FileExistsError(f"out={str(directory)!r} already holds files; choose a new directory")
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            summary = {**self.summary(), "config": self.config, "seeds": self.seeds,
                       "steps_per_iteration": self.steps_per_iteration,
                       "versions": self.versions, "device": self.device}
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=_json) + "\n")
            np.savez(tmp / "metrics.npz", **self.metrics)
            names = sorted(self.metrics)
            with open(tmp / "metrics.jsonl", "w") as f:
                steps = self.env_steps
                for i, seed in enumerate(self.seeds):
                    for t in range(self.num_iterations):
                        row = {"seed": seed, "iteration": t, "env_steps": int(steps[t])}
                        row.update({n: _scalar(self.metrics[n][i, t]) for n in names})
                        f.write(json.dumps(row) + "\n")
            if directory.exists():
                directory.rmdir()
            os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Results:
        directory = Path(directory)
        summary_path = directory / "summary.json"
        if not summary_path.is_file():
            raise FileNotFoundError(f"{str(directory)!r} holds no summary.json: not a results directory")
        s = json.loads(summary_path.read_text())
        with np.load(directory / "metrics.npz") as data:
            metrics = {k: data[k] for k in data.files}
        return cls(agent=s["agent"], env=s["env"], config=s["config"], seeds=s["seeds"],
                   metrics=metrics, steps_per_iteration=s["steps_per_iteration"],
                   compile_time=s["compile_time_s"], run_time=s["run_time_s"],
                   versions=s["versions"], device=s["device"])

    def plot(self, path: str | os.PathLike, statistic: str = "iqm", metric: str = "episode_return"):
        """Writes a PNG learning curve: `statistic` ("iqm" or "mean") across seeds with a
        95% bootstrap band, against environment steps.

        Iterations in which a seed finished no episode carry that seed's previous
        value forward (and are left out before its first finished episode).
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if statistic not in stats.STATISTICS:
            raise ValueError(f"statistic={statistic!r} is not allowed: expected one of {sorted(stats.STATISTICS)}")
        values = _forward_fill(self.metrics[metric])  # [seed, iteration]
        steps = self.env_steps
        stride = max(1, self.num_iterations // 200)  # at most ~200 points per curve
        values, steps = values[:, ::stride], steps[::stride]
        keep = np.isfinite(values).all(axis=0)
        values, steps = values[:, keep], steps[keep]
        fn = stats.STATISTICS[statistic]
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
        if values.size:
            center = fn(values, axis=0)
            low, high = stats.bootstrap_ci(values.T, fn, num_resamples=1000)
            ax.plot(steps, center, label=f"{self.agent} ({statistic}, {len(self.seeds)} seeds)")
            ax.fill_between(steps, low, high, alpha=0.25, label="95% bootstrap CI")
            ax.legend(loc="lower right")
        ax.set_xlabel("environment steps (per seed)")
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_title(self.env)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return Path(path)


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
