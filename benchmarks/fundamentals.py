"""Fundamentals: Sutton & Barto's bandit and tabular figures, Riquelme et al.'s contextual
bandits, and speed beside MABWiser, printed as tables (figures with --figures DIR).

    python benchmarks/fundamentals.py bandits       # Figures 2.2-2.5: 2,000 runs x 1,000 steps
    python benchmarks/fundamentals.py tabular       # Example 6.6, Figure 8.2, value iteration
                                                    #   and Q-learning checked in Gymnasium
    python benchmarks/fundamentals.py contextual    # linear and wheel problems, 1,000 seeds
    python benchmarks/fundamentals.py speed --mabwiser-json mab.json
    python benchmarks/fundamentals.py all --figures benchmarks/figures

Every curve is one call of the lab (`lab.sweep` over the figure's settings, or `lab.run`),
all runs of a figure in one compiled program, on one JAX CPU device per core
(`purejaxrl_lab.use_cpu_cores()`). Curves are means over runs with 95% normal intervals.
`speed` needs the JSON of benchmarks/mabwiser_bandits.py, run in a virtual environment with
MABWiser installed (it is not a dependency of this project).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import purejaxrl_lab as lab

lab.use_cpu_cores(quiet=True)

import envs  # noqa: E402
from agents import tabular  # noqa: E402

FIGURES: Path | None = None


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, progress=False, **kwargs)
    return out, time.perf_counter() - t0


def band(ax, x, runs, label, **style):
    """Mean over runs [runs, points] with its 95% normal interval."""
    runs = np.asarray(runs, np.float64)
    mean = np.nanmean(runs, 0)
    half = 1.96 * np.nanstd(runs, 0) / np.sqrt(np.maximum((~np.isnan(runs)).sum(0), 1))
    ax.plot(x, mean, label=label, lw=1.2, **style)
    ax.fill_between(x, mean - half, mean + half, alpha=0.2, **style)


def save(fig, name: str) -> None:
    if FIGURES is None:
        return
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(FIGURES / name, dpi=110)
    print(f"figure: {FIGURES / name}")


def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


# --------------------------------------------------------------------------- bandits


def bandits(runs: int = 2000, steps: int = 1000) -> None:
    """Figures 2.2-2.5 of Sutton & Barto, each from one program of `runs` x settings."""
    from agents import epsilon_greedy, gradient_bandit, ucb

    testbed = envs.make("KArmedTestbed-v0")
    figures = {}
    base = epsilon_greedy.Config(total_timesteps=steps)
    figures["2.2"] = [timed(lab.sweep, "epsilon_greedy", base, testbed, seeds=runs,
                            grid={"epsilon": [0.0, 0.01, 0.1]})]
    figures["2.3"] = [timed(lab.sweep, "epsilon_greedy", base, testbed, seeds=runs, settings=[
        {"epsilon": 0.0, "alpha": 0.1, "initial_value": 5.0},
        {"epsilon": 0.1, "alpha": 0.1, "initial_value": 0.0}])]
    figures["2.4"] = [timed(lab.run, "ucb", ucb.Config(total_timesteps=steps, c=2.0), testbed, seeds=runs),
                      timed(lab.run, "epsilon_greedy", base, testbed, seeds=runs)]
    figures["2.5"] = [timed(lab.sweep, "gradient_bandit", gradient_bandit.Config(total_timesteps=steps),
                            envs.make("KArmedTestbed-v0", mean=4.0), seeds=runs,
                            grid={"alpha": [0.1, 0.4], "baseline": [1.0, 0.0]})]
    print(f"| figure | setting | average reward, steps 900-1000 | % optimal action, steps 900-1000 "
          f"| the book's (read off the figure) | compile + run s ({runs} runs each) |")
    print("| --- | --- | --- | --- | --- | --- |")
    book = {("2.2", 0): "~1.05, ~35%", ("2.2", 1): "~1.3, ~50-55%", ("2.2", 2): "~1.4, ~80%",
            ("2.3", 0): "~85%", ("2.3", 1): "~80%", ("2.4", 0): "~1.5", ("2.4", 1): "~1.35-1.4",
            ("2.5", 0): "~80-85%", ("2.5", 1): "~50-55%", ("2.5", 2): "~70-75%", ("2.5", 3): "~25-30%"}
    pyplot = plt()
    fig, axes = pyplot.subplots(2, 4, figsize=(17, 7))
    for col, (figure, results) in enumerate(figures.items()):
        rows = []
        for r, wall in results:
            items = ([(lab.grid.label(s), r.result(j)) for j, s in enumerate(r.settings)]
                     if hasattr(r, "settings") else
                     [(" ".join(f"{k}={r.config[k]}" for k in ("c", "epsilon") if k in r.config), r)])
            rows += [(name, one, r, wall) for name, one in items]
        for i, (name, one, r, wall) in enumerate(rows):
            reward, optimal = one.metrics["reward"], one.metrics["optimal_action"]
            print(f"| {figure} | {one.agent} {name} | {reward[:, -100:].mean():.3f} | "
                  f"{100 * optimal[:, -100:].mean():.1f}% | {book.get((figure, i), '')} | "
                  f"{r.compile_time:.1f} + {r.run_time:.1f} |")
            x = np.arange(1, reward.shape[1] + 1)
            band(axes[0, col], x, reward, f"{one.agent} {name}")
            band(axes[1, col], x, 100 * optimal, f"{one.agent} {name}")
        axes[0, col].set_title(f"Sutton & Barto Figure {figure}")
        axes[0, col].set_ylabel("average reward")
        axes[1, col].set_ylabel("% optimal action")
        axes[1, col].set_xlabel("steps")
        axes[1, col].legend(fontsize=7)
    save(fig, "sutton_barto_bandits.png")


# --------------------------------------------------------------------------- tabular


def tabular_figures(runs: int = 100) -> None:
    """Example 6.6 (cliff walking) and Figure 8.2 (Dyna maze), value iteration against
    Gymnasium's tables, and Q-learning's greedy policy run in Gymnasium's FrozenLake."""
    from agents import dyna_q, q_learning, sarsa

    cliff = {}
    for name in ("sarsa", "q_learning"):
        module = {"sarsa": sarsa, "q_learning": q_learning}[name]
        r, wall = timed(lab.run, name, module.PRESETS["cliff"], "CliffWalking-v1", seeds=runs,
                        eval_every=0)
        cliff[name] = (lab.stats.per_episode(r.metrics["episode_return"], r.metrics["episodes"], 500), r)
    print("| Example 6.6 (cliff walking, epsilon 0.1, alpha 0.5) | sum of rewards per episode, "
          "episodes 100-500 (mean over runs) | greedy path return | compile + run s |")
    print("| --- | --- | --- | --- |")
    model = envs.tabular_model(*envs.make("CliffWalking-v1"))
    for name, (per_ep, r) in cliff.items():
        greedy = np.asarray(r.params["q"]).argmax(-1)
        path = [greedy_return(model, g, 36) for g in greedy]
        reach = np.isfinite(path)
        print(f"| {name} ({runs} runs) | {np.nanmean(per_ep[:, 100:]):.1f} | median "
              f"{np.median(path):.1f}, {100 * reach.mean():.0f}% of runs reach the goal (book: "
              f"SARSA's safe path -17, Q-learning's optimal -13) | "
              f"{r.compile_time:.1f} + {r.run_time:.1f} |")
    maze, wall = timed(lab.sweep, "dyna_q", dyna_q.Config(
        total_timesteps=12_000, alpha=0.1, epsilon=0.1, gamma=0.95), "DynaMaze-v0", seeds=30,
        grid={"planning_steps": [0, 5, 50]}, eval_every=0)
    print("\n| Figure 8.2 (Dyna maze, 30 runs) | steps in episode 2 | episode 5 | episode 10 | "
          "episodes 20-50 | compile + run s |")
    print("| --- | --- | --- | --- | --- | --- |")
    lengths = []
    for j, s in enumerate(maze.settings):
        per_ep = lab.stats.per_episode(maze.metrics["episode_length"][j], maze.metrics["episodes"][j], 50)
        lengths.append(per_ep)
        m = np.nanmean(per_ep, 0)
        print(f"| n = {s['planning_steps']} | {m[1]:.0f} | {m[4]:.0f} | {m[9]:.0f} | "
              f"{np.nanmean(per_ep[:, 19:]):.1f} | {maze.compile_time:.1f} + {maze.run_time:.1f} |")
    pyplot = plt()
    fig, axes = pyplot.subplots(1, 2, figsize=(11, 4))
    for name, (per_ep, _) in cliff.items():
        smooth = np.stack([np.convolve(p, np.ones(10) / 10, "valid") for p in per_ep])
        band(axes[0], np.arange(smooth.shape[1]) + 10, smooth, name)
    axes[0].set_ylim(-100, 0)
    axes[0].set(title="Example 6.6: cliff walking", xlabel="episodes",
                ylabel="sum of rewards during episode")
    for s, per_ep in zip(maze.settings, lengths):
        band(axes[1], np.arange(2, 51), per_ep[:, 1:], f"n = {s['planning_steps']}")
    axes[1].set_ylim(0, 800)
    axes[1].set(title="Figure 8.2: Dyna maze", xlabel="episodes", ylabel="steps per episode")
    for ax in axes:
        ax.legend()
    save(fig, "sutton_barto_tabular.png")
    values_against_gymnasium()


def greedy_return(model, policy, state: int, limit: int = 200) -> float:
    """The return of following a deterministic policy in a deterministic model from `state`
    (-inf if it does not end within `limit` steps)."""
    transitions, rewards = np.asarray(model.transitions), np.asarray(model.rewards)
    total = 0.0
    for _ in range(limit):
        a = policy[state]
        nxt = int(transitions[state, a].argmax())
        total += float(rewards[state, a, nxt])
        if model.terminal[nxt]:
            return total
        state = nxt
    return -np.inf


def values_against_gymnasium(episodes: int = 10_000) -> None:
    import gymnasium as gym

    from agents import q_learning

    theirs = gym.make("FrozenLake8x8-v1").unwrapped
    v = np.zeros(64)
    while True:  # value iteration in float64 straight from Gymnasium's P
        q = np.array([[sum(p * (r + 0.99 * v[s2] * (not t)) for p, s2, r, t in theirs.P[s][a])
                       for a in range(4)] for s in range(64)])
        if np.abs(q.max(1) - v).max() < 1e-12:
            break
        v = q.max(1)
    ours, _ = tabular.value_iteration(envs.tabular_model(*envs.make("FrozenLake8x8-v1")), 0.99)
    print(f"\nvalue iteration on FrozenLake8x8-v1 (gamma 0.99): max |ours - Gymnasium's tables| = "
          f"{np.abs(np.asarray(ours) - v).max():.1e}")
    env, params = envs.make("FrozenLake-v1")
    r, wall = timed(lab.run, "q_learning", q_learning.PRESETS["frozen_lake"], "FrozenLake-v1",
                    seeds=4, eval_every=0)
    _, optimal = tabular.value_iteration(envs.tabular_model(env, params), 0.99)

    def success(policy) -> float:
        g = gym.make("FrozenLake-v1")
        wins = 0.0
        for i in range(episodes):
            s, _ = g.reset(seed=i)
            done = False
            while not done:
                s, reward, terminated, truncated, _ = g.step(int(policy[s]))
                done = terminated or truncated
            wins += reward
        return wins / episodes

    best = success(np.asarray(optimal))
    learnt = [success(np.asarray(q).argmax(-1)) for q in r.params["q"]]
    print(f"Q-learning on FrozenLake-v1 (slippery), greedy policy run in Gymnasium, {episodes} "
          f"episodes: success {', '.join(f'{x:.3f}' for x in learnt)} per seed vs the optimal "
          f"policy's {best:.3f}: {100 * min(learnt) / best:.1f}%-{100 * max(learnt) / best:.1f}% "
          f"({r.compile_time:.1f} + {r.run_time:.1f} s for 4 seeds x "
          f"{q_learning.PRESETS['frozen_lake'].total_timesteps} steps)")


# --------------------------------------------------------------------------- contextual


CONTEXTUAL_AGENTS = [("uniform", "epsilon_greedy", {"epsilon": 1.0}),
                     ("epsilon-greedy 0.1", "epsilon_greedy", {"epsilon": 0.1}),
                     ("linucb", "linucb", {}), ("lin_ts", "lin_ts", {}),
                     ("neural_linear", "neural_linear", {})]


def contextual(seeds: int = 1000, rounds: int = 1000) -> None:
    """Cumulative regret over `seeds` runs, 95% CIs, and relative to uniform (= 100), as
    Riquelme et al. 2018 report."""
    problems = [("linear", envs.make("LinearContextualBandit-v0")),
                ("wheel delta 0.5", envs.make("WheelBandit-v0", delta=0.5)),
                ("wheel delta 0.95", envs.make("WheelBandit-v0", delta=0.95))]
    print(f"| problem | agent | cumulative regret after {rounds} rounds (mean, 95% CI) | "
          f"relative to uniform = 100 | compile + run s ({seeds} seeds) |")
    print("| --- | --- | --- | --- | --- |")
    for problem, pair in problems:
        uniform = None
        for label, name, overrides in CONTEXTUAL_AGENTS:
            r, wall = timed(lab.run, name, {**overrides, "total_timesteps": rounds}, pair, seeds=seeds)
            final = r.metrics["cumulative_regret"][:, -1]
            uniform = final.mean() if uniform is None else uniform
            half = 1.96 * final.std() / np.sqrt(len(final))
            print(f"| {problem} | {label} | {final.mean():.1f} [{final.mean() - half:.1f}, "
                  f"{final.mean() + half:.1f}] | {100 * final.mean() / uniform:.1f} | "
                  f"{r.compile_time:.1f} + {r.run_time:.1f} |", flush=True)


# --------------------------------------------------------------------------- speed


def speed(mabwiser_json: Path | None, seeds: int = 1000, rounds: int = 1000) -> None:
    """Rounds per second of LinUCB (linear problem) and Thompson sampling (Bernoulli bandit),
    `seeds` runs vmapped, beside MABWiser's (benchmarks/mabwiser_bandits.py)."""
    theirs = json.loads(Path(mabwiser_json).read_text()) if mabwiser_json else {}
    print("| agent | problem | ours: rounds/s (seeds x rounds / run time) | compile s | "
          "MABWiser rounds/s | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, env_id, key in (("linucb", "LinearContextualBandit-v0", "linucb"),
                              ("thompson", "BernoulliBandit-v0", "thompson")):
        r, wall = timed(lab.run, name, {"total_timesteps": rounds}, env_id, seeds=seeds)
        ours = seeds * rounds / r.run_time
        mab = theirs.get(key, {}).get("rounds_per_s")
        ratio = f"{ours / mab:.0f}x" if mab else "-"
        print(f"| {name} | {env_id} | {ours:,.0f} | {r.compile_time:.1f} | "
              f"{f'{mab:,.0f}' if mab else '-'} | {ratio} |")


def main() -> None:
    global FIGURES
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["bandits", "tabular", "contextual", "speed", "all"])
    parser.add_argument("--figures", type=Path, default=None, help="write the figures here")
    parser.add_argument("--mabwiser-json", type=Path, default=None)
    parser.add_argument("--seeds", type=int, default=None, help="runs per setting")
    args = parser.parse_args()
    FIGURES = args.figures
    import jax

    print(f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s)\n")
    if args.stage in ("bandits", "all"):
        bandits(runs=args.seeds or 2000)
    if args.stage in ("tabular", "all"):
        tabular_figures(runs=args.seeds or 100)
    if args.stage in ("contextual", "all"):
        contextual(seeds=args.seeds or 1000)
    if args.stage in ("speed", "all"):
        speed(args.mabwiser_json, seeds=args.seeds or 1000)


if __name__ == "__main__":
    main()
