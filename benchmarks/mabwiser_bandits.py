"""MABWiser (Kadioglu et al.), the side-by-side reference of `benchmarks/fundamentals.py
speed`: LinUCB on Riquelme et al.'s linear problem and Thompson sampling on a Bernoulli
bandit, played online round by round (`predict`, then `partial_fit`), as a user of the
library simulates a bandit. Prints rounds per second and cumulative regret as JSON.

MABWiser is not a dependency of this project; run this in its own environment:

    python -m venv /tmp/mabvenv && /tmp/mabvenv/bin/pip install mabwiser
    /tmp/mabvenv/bin/python benchmarks/mabwiser_bandits.py --json mab.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from mabwiser.mab import MAB, LearningPolicy


def linear_problem(rng, rounds, d=10, k=8):
    """Riquelme et al. 2018's linear problem: unit-norm arm parameters, N(0, I) contexts,
    noise sd 0.01 (j + 1)."""
    beta = rng.uniform(-1, 1, (d, k))
    beta /= np.linalg.norm(beta, axis=0)
    contexts = rng.normal(size=(rounds, d))
    means = contexts @ beta
    return contexts, means, means + rng.normal(size=means.shape) * 0.01 * (np.arange(k) + 1)


def play(policy, contexts, means, rewards, seed):
    k = means.shape[1]
    arms = list(range(k))
    mab = MAB(arms, policy, seed=seed)
    first = seed % k  # one round to initialise the model, as MABWiser requires a fit first
    kwargs = {"contexts": contexts[:1]} if contexts is not None else {}
    mab.fit([first], [rewards[0, first]], **kwargs)
    regret = means[0].max() - means[0, first]
    t0 = time.perf_counter()
    for t in range(1, len(means)):
        if contexts is not None:
            a = int(mab.predict(contexts[t:t + 1]))
            mab.partial_fit([a], [rewards[t, a]], contexts=contexts[t:t + 1])
        else:
            a = int(mab.predict())
            mab.partial_fit([a], [rewards[t, a]])
        regret += means[t].max() - means[t, a]
    return len(means) - 1, time.perf_counter() - t0, regret


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    out = {}
    for name in ("linucb", "thompson"):
        total_rounds, total_time, regrets = 0, 0.0, []
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            if name == "linucb":
                contexts, means, rewards = linear_problem(rng, args.rounds)
                policy = LearningPolicy.LinUCB(alpha=1.0)
            else:
                p = rng.uniform(size=10)
                means = np.broadcast_to(p, (args.rounds, 10))
                rewards = (rng.uniform(size=(args.rounds, 10)) < p).astype(float)
                contexts, policy = None, LearningPolicy.ThompsonSampling()
            n, seconds, regret = play(policy, contexts, means, rewards, seed)
            total_rounds, total_time = total_rounds + n, total_time + seconds
            regrets.append(regret)
        out[name] = {"rounds_per_s": total_rounds / total_time, "seeds": args.seeds,
                     "rounds": args.rounds, "cumulative_regret": float(np.mean(regrets))}
        print(f"{name}: {out[name]['rounds_per_s']:,.0f} rounds/s, cumulative regret "
              f"{out[name]['cumulative_regret']:.1f} (mean of {args.seeds} seeds)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
