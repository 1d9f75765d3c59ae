"""PPO on CartPole-v1, default config (4 envs x 128 steps, 4 epochs x 4 minibatches, 5e5 steps).

Prints compile seconds, run seconds, env steps/s and final return (mean and min over
seeds) at 1, 8 and 32 seeds, through `purejaxrl_lab.run` (the path the CLI takes), with
evaluation off (the reference has none).

    python benchmarks/ppo_cartpole.py            # 1, 8 and 32 seeds
    python benchmarks/ppo_cartpole.py 1 8        # chosen seed counts
    python benchmarks/ppo_cartpole.py --eval 8   # with the default evaluation (about 10 per run)
"""

import sys

import numpy as np

import purejaxrl_lab as lab

lab.use_cpu_cores()  # one JAX CPU device per core, as the CLI does

from agents import ppo  # noqa: E402
from purejaxrl_lab import runtime  # noqa: E402


def main(seed_counts, evaluate=False):
    print(f"machine: {runtime.machine_description()}; evaluation {'on' if evaluate else 'off'}")
    print("| seeds | compile s | run s | env steps/s | final return mean | final return min |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in seed_counts:
        r = lab.run("ppo", ppo.Config(), "CartPole-v1", seeds=n, progress=False,
                    eval_every=None if evaluate else 0)
        final = r.final_return
        print(f"| {n} | {r.compile_time:.2f} | {r.run_time:.2f} | {r.throughput:,.0f} | "
              f"{np.nanmean(final):.1f} | {np.nanmin(final):.1f} |", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    main([int(a) for a in args if a != "--eval"] or [1, 8, 32], evaluate="--eval" in args)
