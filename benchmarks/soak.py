"""Soak: PPO on CartPole-v1 for 1e8 env steps per seed in many chunks, with evaluations,
checkpoints and the JSONL log on, measuring the host's resident memory at every chunk. The
memory must stay flat: nothing may accumulate per chunk (metrics are a few floats per
iteration, so they grow by kilobytes).

    python benchmarks/soak.py                       # 1e8 env steps per seed, 2 seeds, 200 chunks
    python benchmarks/soak.py --steps 1e7 --figure benchmarks/figures/soak_memory.png

Prints a table: resident memory after the first chunk, after 10% of the run, at the end and
its maximum; the growth from 10% to the end, in MiB and per 1e7 env steps (a least-squares
slope over the last 90%).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

import purejaxrl_lab as lab

lab.use_cpu_cores()

from agents import ppo  # noqa: E402
from purejaxrl_lab import loggers, runtime  # noqa: E402


def resident_mib() -> float:
    """The process's resident set size (VmRSS), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class MemoryProbe:
    """A logger that samples resident memory whenever a chunk's metrics arrive."""

    def __init__(self):
        self.samples: list[tuple[int, float, float]] = []  # (env steps, MiB, seconds)
        self._last_step = None
        self._t0 = time.perf_counter()

    def log(self, step, scalars):
        if step != self._last_step:
            self._last_step = step
            self.samples.append((int(step), resident_mib(), time.perf_counter() - self._t0))

    def close(self):
        pass


def main(steps: float, seeds: int, chunks: int, figure: str | None) -> None:
    config = dataclasses.replace(ppo.Config(), num_envs=256, num_steps=128, total_timesteps=int(steps))
    probe = MemoryProbe()
    with tempfile.TemporaryDirectory() as out:
        jsonl = loggers.JsonlLogger(Path(out) / "log.jsonl")
        before = resident_mib()
        r = lab.run("ppo", config, "CartPole-v1", seeds=seeds, num_chunks=chunks, progress=False,
                    checkpoint_dir=Path(out) / "checkpoints", checkpoint_every=max(1, chunks // 10),
                    loggers=[probe, jsonl])
        jsonl.close()
        r.save(Path(out) / "results")
    # One sample per iteration, taken when its chunk's metrics reach the host.
    units = np.array([s[0] for s in probe.samples])
    mib = np.array([s[1] for s in probe.samples])
    n = len(mib)
    start = n // 10
    slope = np.polyfit(units[start:], mib[start:], 1)[0] * 1e7 if n - start > 2 else float("nan")
    print(f"machine: {runtime.machine_description()}")
    print(f"PPO CartPole-v1, {seeds} seeds x {int(steps):.3g} env steps, {chunks} chunks, "
          f"{config.num_envs} envs x {config.num_steps} steps per iteration, evaluation, "
          f"checkpoints and JSONL log on; run {r.run_time:.0f} s, {r.throughput:,.0f} env steps/s, "
          f"final return {np.nanmean(r.final_return):.1f}")
    print("| before run | first chunk | at 10% | end | max | growth 10% -> end | slope per 1e7 steps |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {before:.0f} MiB | {mib[0]:.0f} MiB | {mib[start]:.0f} MiB | {mib[-1]:.0f} MiB | "
          f"{mib.max():.0f} MiB | {mib[-1] - mib[start]:+.1f} MiB | {slope:+.2f} MiB |")
    if figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot(units, mib)
        ax.set_xlabel("env steps per seed")
        ax.set_ylabel("resident memory (MiB)")
        ax.set_ylim(0, mib.max() * 1.15)
        ax.set_title(f"PPO CartPole-v1, {seeds} seeds, {int(steps):.0e} steps: host memory per chunk")
        fig.tight_layout()
        fig.savefig(figure, dpi=120)
        print(f"figure: {figure}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=float, default=1e8, help="env steps per seed")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--figure", default=None, help="write the memory curve as a PNG here")
    a = parser.parse_args()
    main(a.steps, a.seeds, a.chunks, a.figure)
