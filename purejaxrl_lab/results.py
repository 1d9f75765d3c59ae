"""`Results` (a run) and `SweepResults` (a sweep): what a run produced, saved and loaded as
plain files (JSON lines, JSON, NumPy), with honest summaries, rankings and plots.

Everything agent-specific comes from what the agent declared (`agents.common.contract`):
the score (its metric and direction), the unit of the x-axis and of throughput, and which
metrics may be NaN by design.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from agents.common.contract import Score
from purejaxrl_lab import stats
from purejaxrl_lab.evaluation import EVAL_PREFIX

FINAL_FRACTION = 0.1
FORMAT = 2  # of summary.json


def final_scores(values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """[..., iteration] -> [...]: the score over the last 10% of iterations (at least one).

    With `weights` (e.g. the number of episodes each iteration's value averages), each
    iteration counts by its weight, so every event counts the same; without, the mean of
    the finite values. NaN where there is nothing to average.
    """
    window = max(1, int(round(values.shape[-1] * FINAL_FRACTION)))
    tail = np.asarray(values[..., -window:], dtype=np.float64)
    if weights is None:
        count = np.isfinite(tail).astype(np.float64)
    else:
        count = np.where(np.isfinite(tail), np.asarray(weights[..., -window:], np.float64), 0.0)
    total = (np.nan_to_num(tail) * count).sum(axis=-1)
    n = count.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / n, np.nan)


def area_under_curve(values: np.ndarray) -> np.ndarray:
    """[..., iteration] -> [...]: the mean over iterations of the curve, each NaN iteration
    carrying the last finite value forward (NaN before the first is left out)."""
    from purejaxrl_lab.plots import forward_fill

    filled = forward_fill(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a curve that is NaN throughout
        return np.nanmean(filled, axis=-1)


def score_definition(score: Score) -> str:
    weighted = f", each iteration weighted by its {score.weight}" if score.weight else ""
    return (f"mean {score.metric} over the last {FINAL_FRACTION:.0%} of iterations{weighted}; "
            + ("higher is better" if score.higher_is_better else "lower is better"))


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


def _listed(values: np.ndarray):
    """Array -> nested lists with None for non-finite values."""
    if np.ndim(values) == 0:
        return None if not np.isfinite(values) else float(values)
    return [_listed(v) for v in values]


@dataclasses.dataclass(kw_only=True)
class _Run:
    """Fields a run and a sweep share (see `Results` for their meaning)."""

    agent: str
    env: str
    config: dict[str, Any]
    seeds: list[int]
    metrics: dict[str, np.ndarray]
    score: Score
    unit: str
    units_per_iteration: int
    compile_time: float
    run_time: float
    versions: dict[str, str]
    device: dict[str, Any]
    env_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    nan_metrics: tuple[str, ...] = ()
    eval_iterations: list[int] = dataclasses.field(default_factory=list)
    resumed_from: int | None = None
    compilations: int = 0
    cache_hits: int = 0
    state_bytes: int | None = None
    runs_in_program: int | None = None
    agent_module: str | None = None
    act_input: str = "observation"
    params: Any = dataclasses.field(default=None, repr=False, compare=False)
    final_state: Any = dataclasses.field(default=None, repr=False, compare=False)
    act: Callable | None = dataclasses.field(default=None, repr=False, compare=False)
    init_carry: Callable | None = dataclasses.field(default=None, repr=False, compare=False)
    directory: Path | None = dataclasses.field(default=None, compare=False)
    stopped: dict[str, Any] | None = None  # {"iteration", "of", "reason"}: a run stopped early

    KIND = "run"

    # ------------------------------------------------------------------ shapes and units

    @property
    def num_iterations(self) -> int:
        return self.metrics[self.score.metric].shape[-1]

    @property
    def num_runs(self) -> int:
        return int(np.prod(self.metrics[self.score.metric].shape[:-1]))

    @property
    def units(self) -> np.ndarray:
        """Cumulative units (e.g. env steps) per seed after each iteration [iteration]."""
        return self.units_per_iteration * np.arange(1, self.num_iterations + 1)

    @property
    def eval_units(self) -> np.ndarray:
        """Units per seed done when each evaluation ran [evaluation]."""
        return self.units_per_iteration * np.asarray(self.eval_iterations, dtype=np.int64)

    @property
    def throughput(self) -> float:
        """Units per second over all runs trained together (a sweep's every setting, also
        for one setting's view), excluding compilation, counting only the iterations this
        call ran when it resumed."""
        ran = self.num_iterations - (self.resumed_from or 0)
        runs = self.runs_in_program or self.num_runs
        total = self.units_per_iteration * ran * runs
        return total / self.run_time if self.run_time > 0 else float("nan")

    # ------------------------------------------------------------------ scores

    @property
    def final_score(self) -> np.ndarray:
        """Per run ([seed], or [setting, seed] for a sweep): the declared score over the last
        10% of iterations (`score_definition`); NaN where it is undefined."""
        weights = self.metrics.get(self.score.weight) if self.score.weight else None
        return final_scores(self.metrics[self.score.metric], weights)

    @property
    def final_return(self) -> np.ndarray:
        """`final_score` under the name PPO users know, for agents scored by episode return."""
        if self.score.metric != "episode_return":
            raise AttributeError(f"final_return is the final score of agents scored by episode "
                                 f"return; {self.agent} is scored by {self.score.metric}: use "
                                 f"final_score")
        return self.final_score

    @property
    def auc(self) -> np.ndarray:
        """Per run: the area under the score curve (`area_under_curve`), a measure of how fast
        the run learned."""
        return area_under_curve(self.metrics[self.score.metric])

    def non_finite(self) -> dict[str, list]:
        """Metric name -> runs with a NaN or infinite value (the agent's NaN-by-design metrics
        excluded): seeds for a run, [setting index, seed] pairs for a sweep."""
        out = {}
        for name, values in self.metrics.items():
            if name in self.nan_metrics or not values.size:
                continue
            bad = ~np.isfinite(values).all(axis=-1)
            if bad.any():
                out[name] = [self._run_label(idx) for idx in zip(*np.nonzero(bad))]
        return out

    def divergence(self) -> list[dict[str, Any]]:
        """The runs whose metrics went non-finite (the agent's NaN-by-design metrics excluded),
        each with the first iteration where one did and the metrics that did there:
        [{"seed": 3, "iteration": 120, "metrics": ["loss"]}, ...] (a sweep's also name
        their "setting" index), in the order of the runs."""
        values = {n: v for n, v in self.metrics.items()
                  if n not in self.nan_metrics and not n.startswith(EVAL_PREFIX) and v.size}
        return [{**labels, "iteration": it, "metrics": names}
                for (index, labels), (it, names) in zip(self._run_indices(), first_non_finite(
                    {n: v.reshape(-1, v.shape[-1]) for n, v in values.items()}))
                if it is not None]

    def _run_label(self, idx):
        raise NotImplementedError

    # ------------------------------------------------------------------ summary and files

    def _common_summary(self) -> dict[str, Any]:
        return {
            "kind": self.KIND, "format": FORMAT, "agent": self.agent, "env": self.env,
            "unit": self.unit, "num_seeds": len(self.seeds), "num_iterations": self.num_iterations,
            "units_per_seed": int(self.units[-1]),
            "compile_time_s": round(self.compile_time, 3), "run_time_s": round(self.run_time, 3),
            "throughput": round(self.throughput, 1), "runs_in_program": self.runs_in_program,
            "state_bytes_per_run": self.state_bytes, "resumed_from": self.resumed_from,
            "compilations": self.compilations, "compilation_cache_hits": self.cache_hits,
            "score": {**dataclasses.asdict(self.score), "definition": score_definition(self.score)},
            "non_finite_metrics": self.non_finite(), "divergence": self.divergence(),
            "stopped": self.stopped,
        }

    def _record(self) -> dict[str, Any]:
        """What summary.json holds besides the summary: enough to reproduce the run."""
        return {"config": self.config, "seeds": self.seeds, "env_params": self.env_params,
                "units_per_iteration": self.units_per_iteration, "nan_metrics": list(self.nan_metrics),
                "eval_iterations": list(self.eval_iterations), "agent_module": self.agent_module,
                "act_input": self.act_input, "versions": self.versions, "device": self.device,
                "stopped": self.stopped}

    def summary(self) -> dict[str, Any]:
        raise NotImplementedError

    def _run_indices(self) -> Iterator[tuple[tuple, dict[str, Any]]]:
        """(index into the metrics' leading axes, its labels) for every run."""
        raise NotImplementedError

    def _rows(self) -> Iterator[dict[str, Any]]:
        """One row per run and iteration, with the evaluation made after that iteration."""
        units, unit_key = self.units, self.unit.replace(" ", "_")
        evals = {n: v for n, v in self.metrics.items() if n.startswith(EVAL_PREFIX)}
        others = {n: v for n, v in self.metrics.items() if n not in evals}
        evaluated_after = {it - 1: e for e, it in enumerate(self.eval_iterations)}
        for index, labels in self._run_indices():
            run_metrics = {n: v[index] for n, v in others.items()}
            run_evals = {n: v[index] for n, v in evals.items()}
            for t in range(self.num_iterations):
                row = {**labels, "iteration": t, unit_key: int(units[t])}
                row.update({n: _scalar(v[t]) for n, v in run_metrics.items()})
                if t in evaluated_after:
                    row.update({n: _scalar(v[evaluated_after[t]]) for n, v in run_evals.items()})
                yield row

    def save(self, directory: str | os.PathLike) -> Path:
        """Writes metrics.npz, metrics.jsonl (one line per run and iteration), params.npz (the
        final `state.params` of every run) and summary.json into `directory` (created if
        needed; it may already hold the run's checkpoints/ and logs, never another run's
        results).

        Every file is first written in full under a temporary name in `directory` and flushed
        to disk; only then are they renamed into place, summary.json last. A save that fails
        (a full disk) removes its temporary files and changes nothing there; one killed
        leaves no summary.json, so nothing reads partial results, and the next save removes
        its temporary files. Existing results are never overwritten. Files get the
        permissions of the user's umask.
        """
        directory = Path(directory)
        if (directory / "summary.json").exists():
            raise FileExistsError(f"out={str(directory)!r} already holds results (summary.json); "
                                  f"choose a new directory")
        directory.mkdir(parents=True, exist_ok=True)
        summary = {**self.summary(), **self._record()}
        contents = {
            "metrics.npz": lambda f: np.savez(f, **self.metrics),
            "metrics.jsonl": lambda f: f.writelines((json.dumps(row) + "\n").encode()
                                                    for row in self._rows()),
            "params.npz": (None if self.params is None else
                           lambda f: np.savez(f, **params_to_arrays(self.params))),
            "summary.json": lambda f: f.write(
                (json.dumps(summary, indent=2, default=_json) + "\n").encode()),
        }
        _write_all(directory, {name: fill for name, fill in contents.items() if fill is not None})
        self.directory = directory
        return directory

    def policy(self, seed: int, setting: int | None = None):
        """The trained policy of `seed` (and of sweep setting index `setting`): a
        `purejaxrl_lab.Policy`, `policy(x)` greedy, `policy(x, key)` sampling."""
        from purejaxrl_lab import checkpoint

        if self.act is None or self.params is None:
            if self.directory is None:
                raise ValueError("these results hold no policy: load them from a results "
                                 "directory (lab.load) or use lab.load_policy(directory, seed)")
            return checkpoint.load_policy(self.directory, seed=seed, setting=setting)
        index = self._policy_index(seed, setting)
        import jax

        from agents.common.config import config_from_dict
        from purejaxrl_lab.plan import module_of

        params = jax.tree.map(lambda x: np.asarray(x)[index], self.params)
        chosen = self._setting(setting)
        config = config_from_dict(module_of(self.agent, self.agent_module).Config, self.config)
        return checkpoint.Policy(params=params, act=self.act, seed=seed, setting=chosen,
                                 agent=self.agent, env=self.env, act_input=self.act_input,
                                 env_params=dict(self.env_params), init_carry=self.init_carry,
                                 config=config)

    def _policy_index(self, seed: int, setting: int | None) -> int:
        if seed not in self.seeds:
            raise ValueError(f"seed={seed!r} is not allowed: the run's seeds are {self.seeds}")
        return self.seeds.index(seed)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Results | SweepResults:
        """Reads a results directory written by `save` (a run's or a sweep's)."""
        directory = Path(directory)
        summary_path = directory / "summary.json"
        if not summary_path.is_file():
            raise FileNotFoundError(f"{str(directory)!r} holds no summary.json: not a results directory")
        s = json.loads(summary_path.read_text())
        if s.get("format") != FORMAT:
            raise ValueError(f"{str(directory)!r} holds results in format {s.get('format')!r}; this "
                             f"version reads format {FORMAT}")
        with np.load(directory / "metrics.npz") as data:
            metrics = {k: data[k] for k in data.files}
        score = Score(**{k: v for k, v in s["score"].items() if k != "definition"})
        common = dict(agent=s["agent"], env=s["env"], config=s["config"], seeds=s["seeds"],
                      metrics=metrics, score=score, unit=s["unit"],
                      units_per_iteration=s["units_per_iteration"],
                      compile_time=s["compile_time_s"], run_time=s["run_time_s"],
                      versions=s["versions"], device=s["device"], env_params=s["env_params"],
                      nan_metrics=tuple(s["nan_metrics"]), eval_iterations=s["eval_iterations"],
                      resumed_from=s["resumed_from"], compilations=s["compilations"],
                      cache_hits=s["compilation_cache_hits"], state_bytes=s["state_bytes_per_run"],
                      runs_in_program=s["runs_in_program"], agent_module=s["agent_module"],
                      act_input=s["act_input"], directory=directory, stopped=s.get("stopped"))
        if s["kind"] == SweepResults.KIND:
            return SweepResults(settings=s["settings"], **common)
        return Results(setting=s.get("setting"), **common)

    def _plot(self, path, statistic, metric, smoothing):
        from purejaxrl_lab import plots

        return plots.learning_curve(self, path, statistic=statistic, metric=metric, smoothing=smoothing)


@dataclasses.dataclass(kw_only=True)
class Results(_Run):
    """A run's metrics [seed, iteration] and everything needed to reproduce and report it.

    Attributes:
      agent: agent name, e.g. "ppo" (a module path for an unregistered agent).
      env: environment id.
      config: the agent config as a (nested) dict.
      seeds: the integer seeds; row i of every metric is seed `seeds[i]`.
      metrics: name -> array [seed, iteration] of per-iteration scalars, and the evaluation
        metrics ("eval_return", "eval_length") [seed, evaluation].
      score: what the agent is judged by (`agents.common.Score`); `final_score` is it.
      unit, units_per_iteration: what one iteration consumes ("env steps") and how many.
      compile_time: seconds spent compiling the run's programs.
      run_time: seconds spent running them, progress reporting and evaluation included.
      versions: package versions (python, jax, jaxlib, flax, optax, gymnax, ...).
      device: platform, device kind, device count, devices used, processes, padding, the
        host's CPU cores and processor model.
      env_params: the environment parameters the run used.
      nan_metrics: the metrics the agent allows to be NaN.
      eval_iterations: iterations done at each evaluation of the deterministic policy.
      state_bytes: bytes of one run's state (parameters, optimiser, environments, buffers).
      runs_in_program: runs trained together (more than the seeds for a sweep's setting).
      params: the final `state.params` of every run (host arrays [run, ...]: for a sweep,
        run j * num_seeds + i is setting j with seed i).
      final_state: the final agent states, batched over runs (in memory only).
      setting: for one setting of a sweep (`SweepResults.result`), that setting.
    """

    setting: dict[str, Any] | None = None
    KIND = "run"

    def _run_label(self, idx):
        return self.seeds[idx[0]]

    def summary(self) -> dict[str, Any]:
        out = {**self._common_summary(), "setting": self.setting,
               "final_score": {"per_seed": _listed(self.final_score), **_interval(self.final_score)}}
        if "eval_return" in self.metrics and self.eval_iterations:
            last = self.metrics["eval_return"][:, -1]
            out["final_evaluation"] = {"metric": "eval_return", "iterations": self.eval_iterations[-1],
                                       "per_seed": _listed(last), **_interval(last)}
        return out

    def table(self) -> str:
        """A plain-text summary table."""
        s = self.summary()
        f, name = s["final_score"], self.score.name
        direction = "" if self.score.higher_is_better else " (lower is better)"
        rows = [("agent / env", f"{self.agent} / {self.env}")]
        if self.setting is not None:
            from purejaxrl_lab.grid import label

            rows.append(("setting", label(self.setting)))
        rows += [
            ("seeds", str(len(self.seeds))),
            (f"{self.unit} per seed", f"{int(self.units[-1]):,}"),
            ("compile time", f"{self.compile_time:.2f} s ({_programs(self)})"),
            ("run time", f"{self.run_time:.2f} s"),
            (f"{self.unit} / s", f"{self.throughput:,.0f}" + (
                f" (all {self.runs_in_program} runs of the program)"
                if self.runs_in_program and self.runs_in_program != self.num_runs else "")),
            (f"final {name} mean{direction}", f"{_num(f['mean'])}  95% CI {_ci(f['mean_ci95'])}"),
            (f"final {name} IQM", f"{_num(f['iqm'])}  95% CI {_ci(f['iqm_ci95'])}"),
            (f"final {name} min / max", f"{_num(f['min'])} / {_num(f['max'])}"),
        ]
        if "final_evaluation" in s:
            e = s["final_evaluation"]
            rows.append(("evaluation return mean", f"{_num(e['mean'])}  95% CI {_ci(e['mean_ci95'])}"
                         f"  (greedy policy after {e['iterations']} iterations)"))
        rows += _divergence_rows(self)
        if self.state_bytes is not None:
            rows.append(("state per seed", _bytes(self.state_bytes)))
        rows.append(("device", _device(self.device)))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def _run_indices(self):
        for i, seed in enumerate(self.seeds):
            yield (i,), {"seed": seed}

    def _setting(self, setting):
        return dict(self.setting or {})

    def plot(self, path: str | os.PathLike, statistic: str = "iqm", metric: str | None = None,
             smoothing: int = 1) -> Path:
        """Writes a PNG learning curve of `metric` (default: the score): `statistic` ("iqm",
        "mean" or "median") across seeds with a 95% bootstrap band, against the agent's
        unit; `smoothing` > 1 averages each seed over that many points first.

        Iterations in which a seed's metric is NaN carry its previous value forward.
        """
        return self._plot(path, statistic, metric, smoothing)


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

    def _check_index(self, j) -> int:
        if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or not 0 <= j < len(self.settings):
            raise ValueError(f"setting={j!r} is not allowed: expected an index 0..{len(self.settings) - 1}")
        return int(j)

    def result(self, j: int) -> Results:
        """Setting j as a plain `Results` (metrics [seed, iteration]), naming its setting."""
        import jax

        from purejaxrl_lab.grid import split

        j = self._check_index(j)
        n = len(self.seeds)
        select = (lambda tree: None if tree is None else
                  jax.tree.map(lambda x: x[j * n:(j + 1) * n], tree))
        hparams, env_values = split(self.settings[j])
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(_Run)}
        fields.update(metrics={k: v[j] for k, v in self.metrics.items()},
                      config={**self.config, **hparams}, env_params={**self.env_params, **env_values},
                      params=select(self.params), final_state=select(self.final_state),
                      runs_in_program=self.runs_in_program or self.num_runs, directory=None)
        return Results(setting=dict(self.settings[j]), **fields)

    def _policy_index(self, seed, setting):
        if setting is None:
            if len(self.settings) > 1:
                raise ValueError(f"setting=None is not allowed: this sweep has {len(self.settings)} "
                                 f"settings; pass an index 0..{len(self.settings) - 1}")
            setting = 0
        return self._check_index(setting) * len(self.seeds) + super()._policy_index(seed, None)

    def _setting(self, setting):
        return dict(self.settings[setting or 0])

    def ranking(self, rank_by: str = "final") -> list[dict[str, Any]]:
        """Settings best first, each with the IQM of its seeds' final scores and its 95%
        stratified-bootstrap interval, the mean, min and max, and the IQM of their areas
        under the curve (`auc_iqm`).

        rank_by: "final" ranks by the final score's IQM, breaking ties by the area under the
          curve (the faster learner first); "auc" ranks by the area under the curve, breaking
          ties by the final score. Lower is better for a score declared so. A setting with
          no finite score ranks last.
        """
        if rank_by not in ("final", "auc"):
            raise ValueError(f"rank_by={rank_by!r} is not allowed: expected 'final' or 'auc'")
        sign = 1.0 if self.score.higher_is_better else -1.0
        final, auc = self.final_score, self.auc
        rows = []
        for j, setting in enumerate(self.settings):
            finite = auc[j][np.isfinite(auc[j])]
            auc_iqm = float(stats.iqm(finite)) if finite.size else None
            rows.append({"index": j, "setting": setting, **_interval(final[j]), "auc_iqm": auc_iqm})

        def key(r):
            primary, secondary = ("iqm", "auc_iqm") if rank_by == "final" else ("auc_iqm", "iqm")
            return (r[primary] is None, -sign * (r[primary] or 0.0),
                    r[secondary] is None, -sign * (r[secondary] or 0.0), r["index"])

        rows.sort(key=key)
        for rank, r in enumerate(rows, 1):
            r["rank"] = rank
        return rows

    def best_index(self, rank_by: str = "final") -> int:
        """Index of the best setting (`ranking`)."""
        return self.ranking(rank_by)[0]["index"]

    def best(self, rank_by: str = "final") -> dict[str, Any]:
        """The best setting (`ranking`): by final score, ties broken by area under the curve."""
        return dict(self.settings[self.best_index(rank_by)])

    def summary(self) -> dict[str, Any]:
        return {**self._common_summary(), "num_settings": len(self.settings),
                "ranking": self.ranking(), "best": self.best(),
                "final_score_per_run": _listed(self.final_score)}

    def _record(self) -> dict[str, Any]:
        return {**super()._record(), "settings": self.settings}

    def table(self) -> str:
        """The ranking, one line per setting, then the run's figures."""
        from purejaxrl_lab.grid import label

        name = self.score.name
        head = ["rank", "setting", f"IQM final {name}", "95% CI", "mean", "worst seed"]
        worst = "max" if not self.score.higher_is_better else "min"
        body = [[str(r["rank"]), label(r["setting"]), _num(r["iqm"]), _ci(r["iqm_ci95"]),
                 _num(r["mean"]), _num(r[worst])] for r in self.ranking()]
        widths = [max(len(row[c]) for row in [head, *body]) for c in range(len(head))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [head, *body]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        direction = "higher" if self.score.higher_is_better else "lower"
        lines += ["", f"{self.agent} / {self.env}: {len(self.settings)} settings x {len(self.seeds)} "
                      f"seeds, {int(self.units[-1]):,} {self.unit} each, one compiled program; "
                      f"{direction} {name} is better, ties broken by the area under the curve",
                  f"compile {self.compile_time:.2f} s ({_programs(self)}), run {self.run_time:.2f} s, "
                  f"{self.throughput:,.0f} {self.unit}/s, "
                  + (f"state {_bytes(self.state_bytes)} per run, " if self.state_bytes else "")
                  + f"device {_device(self.device)}"]
        lines += [f"{k}: {v}" for k, v in _divergence_rows(self)]
        return "\n".join(lines)

    def _run_indices(self):
        for j in range(len(self.settings)):
            for i, seed in enumerate(self.seeds):
                yield (j, i), {"setting": j, "seed": seed}

    def plot(self, path: str | os.PathLike, statistic: str = "iqm", metric: str | None = None,
             smoothing: int = 1) -> Path:
        """Writes a PNG with one learning curve per setting (`statistic` across seeds, 95%
        bootstrap band); arguments as `Results.plot`."""
        return self._plot(path, statistic, metric, smoothing)


# --------------------------------------------------------------------------- divergence


def first_non_finite(metrics: dict[str, np.ndarray]) -> list[tuple[int | None, list[str]]]:
    """For each run (row of the [run, iteration] arrays): the first iteration where any of
    `metrics` is NaN or infinite, and the metrics that are there; (None, []) for a run whose
    values are all finite."""
    if not metrics:
        return []
    bad = {n: ~np.isfinite(v) for n, v in metrics.items()}
    out = []
    for r in range(next(iter(bad.values())).shape[0]):
        firsts = {n: int(np.argmax(b[r])) for n, b in bad.items() if b[r].any()}
        if not firsts:
            out.append((None, []))
            continue
        it = min(firsts.values())
        out.append((it, sorted(n for n, f in firsts.items() if f == it)))
    return out


def describe_divergence(entries: list[dict[str, Any]]) -> str:
    """One line naming each diverged run and where: "seed 3 from iteration 120 (loss); ..."."""
    parts = []
    for e in entries:
        run = (f"setting {e['setting']} seed {e['seed']}" if "setting" in e else f"seed {e['seed']}")
        parts.append(f"{run} from iteration {e['iteration']} ({', '.join(e['metrics'])})")
    return "; ".join(parts)


def _divergence_rows(r: _Run) -> list[tuple[str, str]]:
    rows = []
    entries = r.divergence()
    if entries:
        shown = describe_divergence(entries[:8]) + (f"; and {len(entries) - 8} more" if len(entries) > 8 else "")
        rows.append((f"non-finite ({len(entries)} of {r.num_runs} runs)", shown))
    if r.stopped:
        rows.append(("stopped", f"after {r.stopped['iteration']} of {r.stopped['of']} iterations: "
                                f"{r.stopped['reason']}"))
    return rows


# --------------------------------------------------------------------------- params files


def params_to_arrays(params) -> dict[str, np.ndarray]:
    """A params pytree -> {path: host array}, the form params.npz stores."""
    import jax

    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def params_from_arrays(arrays: dict[str, np.ndarray], abstract_params):
    """Inverse of `params_to_arrays`, given the params' structure (e.g. from `eval_shape`)."""
    import jax

    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(abstract_params)]
    missing = [p for p in paths if p not in arrays]
    if missing:
        raise ValueError(f"params.npz does not match the agent's parameters: missing {missing[:3]}")
    return jax.tree.unflatten(jax.tree.structure(abstract_params), [arrays[p] for p in paths])


# --------------------------------------------------------------------------- formatting


def _write_all(directory: Path, contents: dict[str, Callable]) -> None:
    """Writes files `contents` (name -> fill(binary file)) into `directory` all or none.

    Each is filled under a temporary name (".NAME.*.tmp"), flushed to disk and given the
    umask's permissions; once all are written they are renamed into place in order and the
    directory is flushed. A write that fails removes the temporary files and raises, naming
    the file; temporary files an earlier, killed save left are removed first.
    """
    for name in contents:
        for stale in directory.glob(f".{name}.*"):
            stale.unlink(missing_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    written: dict[str, str] = {}
    try:
        for name, fill in contents.items():
            fd, written[name] = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
            with os.fdopen(fd, "wb") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(written[name], 0o666 & ~umask)
    except BaseException as e:
        for tmp in written.values():
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(e.errno, f"results could not be saved to {str(directory)!r}: writing "
                          f"{name} failed ({e.strerror or e}); nothing there was changed") from e
        raise
    for name, tmp in written.items():
        os.replace(tmp, directory / name)
    _sync_directory(directory)


def _sync_directory(directory: Path) -> None:
    """Flushes `directory`'s entries (the renames) to disk, where the system allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _num(v, digits: int = 4) -> str:
    """`digits` significant digits, without an exponent for ordinary magnitudes: 499.3, 0.95,
    0.9, -165.7, 12346, 0.0001234."""
    if v is None or not math.isfinite(v):
        return "n/a"
    if v == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(v)))
    if magnitude >= 6 or magnitude < -4:
        return f"{v:.{digits - 1}e}"
    text = f"{v:.{max(0, digits - 1 - magnitude)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _ci(v):
    return "n/a" if v is None else f"[{_num(v[0])}, {_num(v[1])}]"


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{_num(n / size, 3)} {unit}"
    return f"{n} B"


def _programs(r) -> str:
    out = f"{r.compilations} XLA compilation{'s' if r.compilations != 1 else ''}"
    return out + (f", {r.cache_hits} from cache" if r.cache_hits else "")


def _device(d: dict[str, Any]) -> str:
    used = d.get("used", d.get("count"))
    out = f"{d.get('platform')} x{used}"
    if d.get("processes", 1) > 1:
        out += f" over {d['processes']} processes"
    if d.get("padding"):
        out += f" (batch padded by {d['padding']})"
    return out


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
