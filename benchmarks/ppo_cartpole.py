"""PPO on CartPole-v1, default config (4 envs x 128 steps, 4 epochs x 4 minibatches, 5e5 steps).

Prints compile seconds, run seconds, env steps/s and final return (mean and min over
seeds) at 1, 8 and 32 seeds, through `purejaxrl_lab.run` (the path the CLI takes).

    python benchmarks/ppo_cartpole.py            # 1, 8 and 32 seeds
    python benchmarks/ppo_cartpole.py 1 8        # chosen seed counts
"""

import sys

import numpy as np

import purejaxrl_lab as lab
from agents import ppo
from purejaxrl_lab import runtime


def main(seed_counts):
    print(f"machine: {runtime.machine_description()}")
    print("| seeds | compile s | run s | env steps/s | final return mean | final return min |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in seed_counts:
        r = lab.run("ppo", ppo.Config(), "CartPole-v1", seeds=n, progress=False)
        final = r.final_return
        print(f"| {n} | {r.compile_time:.2f} | {r.run_time:.2f} | {r.steps_per_second:,.0f} | "
              f"{np.nanmean(final):.1f} | {np.nanmin(final):.1f} |", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1, 8, 32])
