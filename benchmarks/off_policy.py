"""Value-based and off-policy agents: speed, returns and state memory, printed as tables.

    python benchmarks/off_policy.py speed dqn --preset reference --seeds 1 8 \\
        --reference "/tmp/fbx/venv/bin/python /tmp/ref/dqn_ref.py"
    python benchmarks/off_policy.py returns dqn --seeds 16          # eval return at 5e5 steps
    python benchmarks/off_policy.py returns pqn --seeds 16
    python benchmarks/off_policy.py returns sac --env Pendulum-v1 --seeds 8
    python benchmarks/off_policy.py speed sac --env Pendulum-v1 --seeds 8 \\
        --reference "/tmp/sb3/venv/bin/python /tmp/sb3/sac_pendulum.py --threads 1"
    python benchmarks/off_policy.py memory

`speed` times a `lab.run` with evaluation off (compile time apart from run time, the
throughput the lab reports); the reference single-file scripts time `jit(vmap(train))`
themselves, compile time apart, run time of a second call. `--reference` runs a reference command with
`--seeds N` (or `--runs N` for the Stable-Baselines3 script) and reads its figures; the
reference scripts are scratch copies outside the repository (benchmarks/README.md says how
to make them). `returns` trains through the lab and reports the final deterministic
evaluation (10 episodes per seed). `memory` prints the state bytes per seed of each default
configuration. One JAX CPU device per core (`purejaxrl_lab.use_cpu_cores()`).
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import time

import numpy as np

import purejaxrl_lab as lab

lab.use_cpu_cores(quiet=True)  # one JAX CPU device per core, as the CLI does

import jax  # noqa: E402

import agents  # noqa: E402
import envs  # noqa: E402
from purejaxrl_lab.plan import state_nbytes  # noqa: E402

DEFAULT_ENV = {"dqn": "CartPole-v1", "pqn": "CartPole-v1", "sac": "Pendulum-v1"}


def ours(agent: str, preset: str | None, env_id: str, seeds: int) -> dict:
    """One `lab.run` (the CLI's path: seeds split over one JAX CPU device per core), with
    evaluation off as the reference has none."""
    r = lab.run(agent, preset, env_id, seeds=seeds, eval_every=0, progress=False)
    return {"compile_s": r.compile_time, "run_s": r.run_time, "steps_per_s": r.throughput}


def reference(command: str, seeds: int) -> dict:
    """Runs a reference script and reads its figures from what it prints."""
    flag = "--runs" if "sac_pendulum" in command else "--seeds"
    out = subprocess.run([*shlex.split(command), flag, str(seeds)], capture_output=True,
                         text=True, check=True).stdout
    if flag == "--runs":  # Stable-Baselines3: runs one after another
        total = re.search(r"total: (\d+) steps in ([\d.]+) s", out)
        steps, seconds = int(total.group(1)), float(total.group(2))
        return {"compile_s": 0.0, "run_s": seconds, "steps_per_s": steps / seconds}
    compile_s = float(re.search(r"compile_s=([\d.]+)", out).group(1))
    run_s = float(re.search(r"run_s\(2nd call\)=([\d.]+)", out).group(1))
    steps = float(re.search(r"timesteps/seed=([\d.e+]+)", out).group(1))
    return {"compile_s": compile_s, "run_s": run_s, "steps_per_s": seeds * steps / run_s}


def speed(args) -> None:
    env_id = args.env or DEFAULT_ENV[args.agent]
    print(f"{args.agent} on {env_id}, preset {args.preset or 'default'}, "
          f"{lab.runtime.cpu_model()} ({lab.runtime.cpu_cores()} cores), jax {jax.__version__}")
    print(f"{'seeds':>5} | {'ours steps/s':>12} | {'compile s':>9} | {'reference steps/s':>17} | "
          f"{'compile s':>9} | {'ratio':>5}")
    for n in args.seeds:
        mine = ours(args.agent, args.preset, env_id, n)
        theirs = reference(args.reference, n) if args.reference else None
        ratio = f"{mine['steps_per_s'] / theirs['steps_per_s']:.2f}" if theirs else "-"
        ref = (f"{theirs['steps_per_s']:>17,.0f} | {theirs['compile_s']:>9.1f}" if theirs
               else f"{'-':>17} | {'-':>9}")
        print(f"{n:>5} | {mine['steps_per_s']:>12,.0f} | {mine['compile_s']:>9.1f} | {ref} | {ratio:>5}")


def returns(args) -> None:
    env_id = args.env or DEFAULT_ENV[args.agent]
    seeds = args.seeds[0]
    start = time.perf_counter()
    r = lab.run(args.agent, args.preset, env_id, seeds=seeds, progress=False)
    wall = time.perf_counter() - start
    final = np.asarray(r.metrics["eval_return"])[:, -1]
    units = np.asarray(r.eval_units)
    reach = [units[np.argmax(row >= args.reach)] if np.any(row >= args.reach) else None
             for row in np.asarray(r.metrics["eval_return"])]
    print(f"{args.agent} on {env_id}, preset {args.preset or 'default'}, {seeds} seeds, "
          f"{r.units[-1]:,} {r.unit}: wall {wall:.0f} s (compile {r.compile_time:.0f} s)")
    print(f"final deterministic eval return: mean {final.mean():.1f}, min {final.min():.1f}, "
          f"IQM {lab.stats.iqm(final):.1f}; per seed {np.round(final, 1).tolist()}")
    got = [u for u in reach if u is not None]
    if got:
        per_step = (r.run_time / r.units[-1])
        print(f"first evaluation >= {args.reach}: {len(got)}/{seeds} seeds, median at "
              f"{int(np.median(got)):,} {r.unit} (~{np.median(got) * per_step:.0f} s of run time)")


def memory(args) -> None:
    print(f"{'agent':<5} | {'env':<12} | {'state bytes per seed':>20} | replay share")
    for agent in ("ppo", "dqn", "pqn", "sac"):
        env_id = DEFAULT_ENV.get(agent, "CartPole-v1")
        module = agents.get(agent)
        built = module.make(module.Config(), *envs.make(env_id))
        abstract = jax.eval_shape(built.init, jax.random.key(0))
        total = state_nbytes(abstract)
        replay = state_nbytes(abstract.replay) if hasattr(abstract, "replay") else 0
        print(f"{agent:<5} | {env_id:<12} | {total:>20,} | {replay / total:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("speed", "returns", "memory"))
    parser.add_argument("agent", nargs="?", default="dqn", choices=("dqn", "pqn", "sac"))
    parser.add_argument("--env", default=None)
    parser.add_argument("--preset", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--reference", default=None, help="reference command (see module doc)")
    parser.add_argument("--reach", type=float, default=475.0,
                        help="returns: report when the eval return first reaches this")
    args = parser.parse_args()
    {"speed": speed, "returns": returns, "memory": memory}[args.what](args)


if __name__ == "__main__":
    main()
