"""A 4-setting x 16-seed PPO CartPole sweep as one program, against 64 separate runs.

    python benchmarks/sweep.py                 # default config, 5e5 steps per run
    python benchmarks/sweep.py --steps 100000  # shorter

Prints wall time, compile time and XLA compilations counted through jax.monitoring (the
run's own programs, and all compilations including tiny helper programs such as seed keys)
for:
  sweep     purejaxrl_lab.sweep: 4 settings x 16 seeds, one program;
  separate  64 calls of purejaxrl_lab.run, one per setting and seed (each a fresh
            config, so each compiles its own programs, as 64 scripts would).
The compilation cache is off for both, so both pay for every compilation they do.
"""

import argparse
import dataclasses
import time

import purejaxrl_lab as lab

lab.use_cpu_cores()  # one JAX CPU device per core, as the CLI does

import jax  # noqa: E402
import numpy as np  # noqa: E402

from agents import ppo  # noqa: E402
from purejaxrl_lab import runtime  # noqa: E402

GRID = {"learning_rate": [2.5e-4, 1e-3], "ent_coef": [0.0, 0.01]}
SEEDS = 16


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=500_000)
    parser.add_argument("--separate", type=int, default=64, help="how many of the 64 separate runs to "
                        "time (the rest extrapolated linearly, and said so)")
    args = parser.parse_args()
    runtime.enable_compilation_cache(None)
    config = ppo.Config(total_timesteps=args.steps)
    print(f"machine: {runtime.machine_description()}; PPO CartPole-v1, {args.steps:,} steps per run")

    before = runtime.compile_counts()["compilations"]
    t0 = time.perf_counter()
    s = lab.sweep("ppo", config, "CartPole-v1", grid=GRID, seeds=SEEDS, progress=False, eval_every=0)
    sweep_wall = time.perf_counter() - t0
    sweep_compiles = runtime.compile_counts()["compilations"] - before

    settings = [dict(zip(GRID, v)) for v in np.array(np.meshgrid(*GRID.values(), indexing="ij")).reshape(len(GRID), -1).T]
    jobs = [(st, seed) for st in settings for seed in range(SEEDS)]
    timed = jobs[: args.separate]
    before = runtime.compile_counts()["compilations"]
    compile_s, final, own = 0.0, [], 0
    t0 = time.perf_counter()
    for st, seed in timed:
        # A fresh config object per run, as separate scripts would have: nothing is shared.
        cfg = dataclasses.replace(config, **{k: float(v) for k, v in st.items()})
        jax.clear_caches()
        r = lab.run("ppo", cfg, "CartPole-v1", seeds=[seed], progress=False, eval_every=0)
        compile_s += r.compile_time
        own += r.compilations
        final.append(float(r.final_return[0]))
    separate_wall = time.perf_counter() - t0
    separate_compiles = runtime.compile_counts()["compilations"] - before
    scale = len(jobs) / len(timed)
    note = "" if scale == 1 else f" (timed {len(timed)} runs, x{scale:.0f} extrapolated)"

    print("| | wall s | compile s | programs compiled | all XLA compilations | env steps/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    total_steps = len(jobs) * config.num_iterations * config.batch_size
    print(f"| sweep: 4 settings x {SEEDS} seeds, one program | {sweep_wall:.1f} | {s.compile_time:.1f} | "
          f"{s.compilations} | {sweep_compiles} | {total_steps / sweep_wall:,.0f} |")
    print(f"| 64 separate runs{note} | {separate_wall * scale:.1f} | {compile_s * scale:.1f} | "
          f"{own * scale:.0f} | {separate_compiles * scale:.0f} | {total_steps / (separate_wall * scale):,.0f} |")
    print(f"speed-up: {separate_wall * scale / sweep_wall:.1f}x wall time")
    print(s.table())


if __name__ == "__main__":
    main()
