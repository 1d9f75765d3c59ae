"""RL on sequences (SFT, GRPO, REINFORCE, reward model, PPO-RLHF, DPO) on 3-digit addition:
the issue's targets, printed as tables.

    python benchmarks/rlhf.py sft --out runs/rlhf            # the SFT start (4 seeds; one is chosen)
    python benchmarks/rlhf.py grpo --out runs/rlhf           # GRPO and REINFORCE from it, 4 seeds each
    python benchmarks/rlhf.py preferences --out runs/rlhf    # reward model, PPO-RLHF, DPO
    python benchmarks/rlhf.py hacking --out runs/rlhf        # reward hacking with a length-loving scorer
    python benchmarks/rlhf.py speed --out runs/rlhf --trl-json trl.json   # beside trl's GRPOTrainer
    python benchmarks/rlhf.py all --out runs/rlhf

Every stage trains through `lab.run` on `Addition-v0` (digits=3) with the agents' `addition`
presets, one JAX CPU device per core (`purejaxrl_lab.use_cpu_cores()`), and saves its results
under OUT. `sft` picks the seed whose held-out accuracy is nearest 40% within [20%, 60%] as the
start (OUT/start.json); the later stages start from it (`init_from`, `init_from_seed`).
Accuracy is the exact-match accuracy of greedy completions of held-out prompts, evaluated after
every iteration on `eval_batch_size` fresh prompts; final figures average the last 10% of
iterations (the lab's final score) and the time to a level is the first iteration whose
running mean over 10 iterations reaches it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import purejaxrl_lab as lab

lab.use_cpu_cores(quiet=True)  # one JAX CPU device per core, as the CLI does

import envs  # noqa: E402
from agents.common.config import with_overrides  # noqa: E402

ENV = ("Addition-v0", {"digits": 3})


def env():
    return envs.make(ENV[0], **ENV[1])


def run(agent: str, out: Path, seeds: int = 4, overrides: dict | None = None, env_pair=None):
    import agents

    module = agents.get(agent)
    config = with_overrides(module.PRESETS["addition"], overrides or {})
    t0 = time.perf_counter()
    results = lab.run(agent, config, env_pair or env(), seeds=seeds, progress=True, eval_every=0)
    wall = time.perf_counter() - t0
    results.save(out / agent)
    return results, wall


def time_to(values: np.ndarray, level: float, run_time: float, window: int = 10):
    """Seconds (of run time, compilation excluded) until the running mean reaches `level`."""
    n = values.shape[-1]
    smooth = np.convolve(values, np.ones(window) / window, mode="valid")
    hit = np.nonzero(smooth >= level)[0]
    return None if not len(hit) else (hit[0] + window) / n * run_time


def row(name, results, wall, extra=""):
    acc = results.metrics["accuracy"]
    final = results.final_score
    times = [time_to(a, 0.95, results.run_time) for a in acc]
    reached = [f"{t:.0f}" if t is not None else "-" for t in times]
    kl = results.metrics["kl"][:, -max(1, acc.shape[1] // 10):].mean()
    print(f"| {name} | {acc[:, 0].mean():.3f} | {np.mean(final):.3f} ({', '.join(f'{f:.3f}' for f in final)}) "
          f"| {kl:.2f} | {', '.join(reached)} | {results.compile_time:.0f} + {results.run_time:.0f} "
          f"| {wall:.0f} | {extra}")


def sft(out: Path, seeds: int) -> None:
    results, wall = run("sft", out, seeds)
    final = results.final_score
    inside = [i for i, f in enumerate(final) if 0.2 <= f <= 0.6]
    chosen = min(inside, key=lambda i: abs(final[i] - 0.4)) if inside else None
    print("| stage | first acc | final acc (per seed) | KL to start | s to 95% | compile + run s | wall s | |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    row("SFT", results, wall, f"start: seed {chosen}")
    if chosen is None:
        raise SystemExit("no SFT seed ended with a held-out accuracy in [0.2, 0.6]; rerun with more seeds")
    best = int(np.argmax(final))
    (out / "start.json").write_text(json.dumps({"init_from": str((out / "sft").absolute()),
                                                "init_from_seed": int(results.seeds[chosen]),
                                                "accuracy": float(final[chosen]),
                                                "best_seed": int(results.seeds[best]),
                                                "best_accuracy": float(final[best])}))


def start(out: Path) -> dict:
    data = json.loads((out / "start.json").read_text())
    print(f"start: {data['init_from']} seed {data['init_from_seed']}, held-out accuracy "
          f"{data['accuracy']:.3f}")
    return {"init_from": data["init_from"], "init_from_seed": data["init_from_seed"]}


def grpo(out: Path, seeds: int, overrides: dict) -> None:
    begin = start(out)
    lines = []
    for agent in ("grpo", "reinforce"):
        results, wall = run(agent, out, seeds, {**begin, **overrides})
        lines.append((agent.upper() if agent == "grpo" else "REINFORCE (leave-one-out)", results, wall))
    print("| agent | first acc | final acc (per seed) | KL to start | s to 95% (per seed) | compile + run s | wall s | |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for line in lines:
        row(*line)
    paths = lab.plots.compare([r for _, r, _ in lines], [name for name, _, _ in lines], out / "figures",
                              metric="accuracy", smoothing=20)
    print(f"figure: {paths[0]}")


def preferences(out: Path, seeds: int, overrides: dict) -> None:
    """Reward model (pairwise accuracy), PPO-RLHF against it, DPO, from the SFT start. The
    reward model starts from the best SFT seed (judging an answer's digits takes knowing the
    sum) and learns from that model's samples."""
    begin = start(out)
    best = json.loads((out / "start.json").read_text())["best_seed"]
    rm, rm_wall = run("reward_model", out, seeds, {**begin, "init_from_seed": best})
    print(f"| reward model | pairwise accuracy {np.mean(rm.final_score):.3f} "
          f"({', '.join(f'{f:.3f}' for f in rm.final_score)}) | valid pairs "
          f"{rm.metrics['valid_pairs'][:, 0].mean():.2f} | {rm.compile_time:.0f} + {rm.run_time:.0f} s |")
    reward_from = {"reward_from": str((out / "reward_model").absolute())}
    ppo_run, ppo_wall = run("ppo_rlhf", out, seeds, {**begin, **reward_from, **overrides})
    m = ppo_run.metrics
    k = max(1, m["reward"].shape[1] // 10)
    print(f"| PPO-RLHF | verifier reward of samples {m['reward'][:, :k].mean():.3f} -> "
          f"{m['reward'][:, -k:].mean():.3f}; reward-model score {m['score'][:, :k].mean():.2f} -> "
          f"{m['score'][:, -k:].mean():.2f}; KL {m['sample_kl'][:, -k:].mean():.2f} (target "
          f"{ppo_run.config['target_kl']}); greedy accuracy {m['accuracy'][:, :k].mean():.3f} -> "
          f"{np.mean(ppo_run.final_score):.3f} | {ppo_run.compile_time:.0f} + {ppo_run.run_time:.0f} s |")
    d, d_wall = run("dpo", out, seeds, begin)
    m = d.metrics
    print(f"| DPO | held-out preference accuracy {m['preference_accuracy'][:, -k:].mean():.3f}; greedy "
          f"verifier reward {m['verifier_reward'][:, 0].mean():.3f} -> "
          f"{m['verifier_reward'][:, -max(1, m['verifier_reward'].shape[1] // 10):].mean():.3f}; "
          f"accuracy {np.mean(d.final_score):.3f}; KL {m['kl'][:, -1].mean():.2f} | "
          f"{d.compile_time:.0f} + {d.run_time:.0f} s |")


def hacking(out: Path, seeds: int, bonus: float = 0.1) -> None:
    """A reward model of a scorer that likes long answers, then PPO against it with and without
    the KL penalty (one sweep over kl_coef): the score rises, the verifier's reward falls."""
    begin = start(out)
    pair = envs.make(ENV[0], **ENV[1], max_completion_length=8, preference_length_bonus=bonus)
    rm, _ = run("reward_model", out / "hacking", seeds, {**begin, "sample_temperature": 1.5}, pair)
    print(f"length-loving reward model: pairwise accuracy {np.mean(rm.final_score):.3f}")
    import agents

    config = with_overrides(agents.get("ppo_rlhf").PRESETS["addition"], {
        **begin, "reward_from": str((out / "hacking" / "reward_model").absolute()),
        "adaptive_kl": False, "max_completion_length": 8})
    swept = lab.sweep("ppo_rlhf", config, pair, grid={"kl_coef": [0.0, 0.2]}, seeds=seeds,
                      progress=True, eval_every=0)
    swept.save(out / "hacking" / "ppo_rlhf")
    figure(swept, out / "hacking" / "reward_hacking.png")
    for j, setting in enumerate(swept.settings):
        m = {k: v[j] for k, v in swept.metrics.items()}
        k = max(1, m["reward"].shape[1] // 10)
        print(f"| kl_coef {setting['kl_coef']} | score {m['score'][:, :k].mean():.2f} -> "
              f"{m['score'][:, -k:].mean():.2f} | verifier reward {m['reward'][:, :k].mean():.3f} -> "
              f"{m['reward'][:, -k:].mean():.3f} | length {m['sample_length'][:, :k].mean():.2f} -> "
              f"{m['sample_length'][:, -k:].mean():.2f} | KL {m['sample_kl'][:, -k:].mean():.2f} |")


def speed(out: Path, trl_json: Path | None) -> None:
    """GRPO completions per second (the preset's batch, 300 iterations from the start, greedy
    evaluation included) at 1 and 4 seeds, beside trl's GRPOTrainer (benchmarks/trl_grpo.py,
    run in its own environment) when its --json output is given."""
    begin = start(out)
    print("| run | seeds | completions/s (per seed x seeds) | s per iteration | ratio to trl |")
    print("| --- | ---: | ---: | ---: | ---: |")
    trl = json.loads(trl_json.read_text()) if trl_json else None
    if trl:
        print(f"| trl GRPOTrainer (PyTorch CPU, {trl['threads']} threads) | 1 | "
              f"{trl['completions_per_s']:.0f} | {trl['median_step_s']:.3f} | 1.0 |")
    for seeds in (1, 4):
        results, _ = run("grpo", out / f"speed_{seeds}", seeds, {**begin, "total_completions": 256 * 300})
        per_s = 256 * 300 * seeds / results.run_time
        ratio = f"{per_s / trl['completions_per_s']:.0f}x" if trl else "-"
        print(f"| purejaxrl_lab grpo | {seeds} | {per_s:.0f} | {results.run_time / 300:.3f} | {ratio} |")


def figure(swept, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    x = swept.units
    for j, setting in enumerate(swept.settings):
        for ax, name in zip(axes, ("score", "reward")):
            values = swept.metrics[name][j]
            ax.plot(x, values.mean(0), label=f"kl_coef = {setting['kl_coef']}")
            ax.fill_between(x, values.min(0), values.max(0), alpha=0.2)
    axes[0].set_title("reward model's score (what PPO maximises)")
    axes[1].set_title("verifier's reward (exact answers)")
    for ax in axes:
        ax.set_xlabel("completions")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"figure: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=["sft", "grpo", "preferences", "hacking", "speed", "all"])
    parser.add_argument("--out", type=Path, default=Path("runs/rlhf"))
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="config overrides of the RL stage (e.g. learning_rate=1e-4)")
    parser.add_argument("--trl-json", type=Path, default=None,
                        help="speed: the --json output of benchmarks/trl_grpo.py, shown beside ours")
    args = parser.parse_args()
    overrides = {k: json.loads(v) if v[:1].isdigit() or v[:1] in "-[{" else v
                 for k, v in (item.split("=", 1) for item in args.set)}
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage in ("sft", "all"):
        sft(args.out, args.seeds)
    if args.stage in ("grpo", "all"):
        grpo(args.out, args.seeds, overrides)
    if args.stage in ("preferences", "all"):
        preferences(args.out, args.seeds, overrides)
    if args.stage in ("hacking", "all"):
        hacking(args.out, args.seeds)
    if args.stage in ("speed", "all"):
        speed(args.out, args.trl_json)


if __name__ == "__main__":
    main()
