"""Speed reference: trl's `GRPOTrainer` (PyTorch, CPU) on our GRPO addition task.

What it measures: seconds per GRPO step (generate 256 completions = 64 prompts x 4, score them,
one gradient step on them) of Hugging Face trl's `GRPOTrainer` on 3-digit addition ("137+614=" ->
"751" then EOS), with a model of the same size as our JAX GRPO agent's (decoder-only transformer,
2 layers, 4 heads, d_model 64, feed-forward 256, 32 learned positions, 17-token vocabulary) built
here with random weights, and the same GRPO settings as our `addition` preset (num_generations=4,
beta=0.04, epsilon=0.2, loss_type="dapo", scale_rewards="group", lr 3e-4, max_grad_norm 1.0,
temperature 0.7, one gradient step per generation batch). Nothing is downloaded: the tokenizer is
a character-level `tokenizers` WordLevel model built here over our project's vocabulary, and the
reward is exact match of the decoded completion with the sum.

It is the side-by-side reference only: it is not part of the test suite, it does not import our
project, and it runs in its own virtual environment (torch, trl, transformers, datasets,
accelerate; no JAX). The project's own figure comes from `benchmarks/rlhf.py`.

    /tmp/trlvenv/bin/python benchmarks/trl_grpo.py --steps 20 --threads 2 [--json out.json]

It prints the per-step times, the median and mean seconds per step excluding the first 2 steps
(warm-up), completions per second (256 / median), the total wall-clock of `trainer.train()`, the
mean reward of the logged steps, a markdown table row, and the versions and CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

# Offline, before any Hugging Face import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="optimizer steps (trainer max_steps)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the statistics")
    p.add_argument("--prompts", type=int, default=100_000, help="dataset size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="PATH", help="write the figures here")
    return p.parse_args()


ARGS = parse_args()
# Thread counts must be set before torch starts its pools.
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
os.environ["MKL_NUM_THREADS"] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)

import datasets  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors  # noqa: E402
from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    TrainerCallback,
)
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

# ---------------------------------------------------------------- task and vocabulary (ours)
PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
VOCAB = {PAD: 0, BOS: 1, EOS: 2, **{str(d): 3 + d for d in range(10)}, "+": 13, "=": 14, "S": 15, "R": 16}
NUM_GENERATIONS = 4
GENERATION_BATCH = 256  # completions per optimizer step (64 prompts x 4)
MAX_COMPLETION = 5  # up to 4 digits + EOS


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level: every character is one token; encoding prepends BOS."""
    tok = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, VOCAB[BOS])])
    tok.decoder = decoders.Fuse()  # concatenate characters, no spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        padding_side="left", truncation_side="left", clean_up_tokenization_spaces=False,
        model_max_length=32)
    # Round trip and ids, checked once.
    ids = fast("137+614=")["input_ids"]
    assert ids == [1, 4, 6, 10, 13, 9, 4, 7, 14], ids
    assert fast.decode([6, 5, 4, 2, 0], skip_special_tokens=True) == "321", fast.decode([6, 5, 4, 2, 0])
    assert fast.decode(ids, skip_special_tokens=True) == "137+614="
    assert (fast.pad_token_id, fast.bos_token_id, fast.eos_token_id) == (0, 1, 2)
    assert len(fast) == len(VOCAB) == 17
    batch = fast(["1+2=", "137+614="], padding=True)["input_ids"]
    assert batch[0][:4] == [0] * 4 and batch[0][4:] == [1, 4, 13, 5, 14], batch  # left padding
    return fast


def build_dataset(n: int, seed: int) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 1000, size=(2, n))
    return datasets.Dataset.from_dict({
        "prompt": [f"{x}+{y}=" for x, y in zip(a, b)],
        "answer": [str(x + y) for x, y in zip(a, b)],
    })


def exact_match(completions, answer, **kwargs):
    """1.0 when the completion (decoded without EOS/pad) is the sum, else 0.0."""
    return [1.0 if c.strip() == t else 0.0 for c, t in zip(completions, answer)]


def build_model() -> GPT2LMHeadModel:
    """Ours: pre-LayerNorm decoder, GELU (tanh) MLP, learned positions, untied output layer, no
    dropout. GPT-2's output layer has no bias (ours has 17 more parameters)."""
    config = GPT2Config(
        vocab_size=len(VOCAB), n_positions=32, n_embd=64, n_layer=2, n_head=4, n_inner=256,
        bos_token_id=VOCAB[BOS], eos_token_id=VOCAB[EOS], pad_token_id=VOCAB[PAD],
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False)
    return GPT2LMHeadModel(config)


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []
        self.rewards: list[float] = []
        self._t0 = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t0)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs:
            self.rewards.append(float(logs["reward"]))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    args = ARGS
    transformers.set_seed(args.seed)
    tokenizer = build_tokenizer()
    dataset = build_dataset(args.prompts, args.seed)
    model = build_model()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: GPT2LMHeadModel, {n_params:,} parameters; dataset: {len(dataset):,} prompts, "
          f"e.g. {dataset[0]['prompt']!r} -> {dataset[0]['answer']!r}")

    with tempfile.TemporaryDirectory() as tmp:
        # With beta > 0 trl builds the reference model by loading `model.config._name_or_path`,
        # so a randomly initialised instance has to be saved first: reference = the initial weights.
        model_dir = os.path.join(tmp, "init")
        model.save_pretrained(model_dir)
        model.config._name_or_path = model_dir

        config = GRPOConfig(
            output_dir=os.path.join(tmp, "out"),
            # One generation batch of 256 completions per optimizer step, one gradient step on it:
            # generation_batch_size = per_device_train_batch_size * processes * steps_per_generation
            # and steps_per_generation defaults to gradient_accumulation_steps (1).
            per_device_train_batch_size=GENERATION_BATCH,
            gradient_accumulation_steps=1,
            num_generations=NUM_GENERATIONS,
            num_iterations=1,
            max_completion_length=MAX_COMPLETION,
            temperature=0.7, top_k=0, top_p=1.0,
            beta=0.04, epsilon=0.2, loss_type="dapo", scale_rewards="group",
            learning_rate=3e-4, lr_scheduler_type="constant", max_grad_norm=1.0,
            max_steps=args.steps, seed=args.seed,
            use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
            use_vllm=False, use_transformers_continuous_batching=False,  # plain model.generate
            generation_kwargs={"suppress_tokens": [0, 1]},  # PAD and BOS never generated, as ours
            logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
            dataloader_pin_memory=False, dataloader_num_workers=0,
        )
        assert config.generation_batch_size == GENERATION_BATCH and config.steps_per_generation == 1

        timer = StepTimer()
        trainer = GRPOTrainer(model=model, reward_funcs=exact_match, args=config,
                              train_dataset=dataset, processing_class=tokenizer, callbacks=[timer])
        torch.set_num_threads(args.threads)
        print(f"torch threads: {torch.get_num_threads()}; device: {trainer.accelerator.device}")
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0

    times = timer.times
    kept = times[args.warmup:] or times
    median, mean = statistics.median(kept), statistics.fmean(kept)
    per_s = GENERATION_BATCH / median
    reward = statistics.fmean(timer.rewards) if timer.rewards else float("nan")
    label = f"trl GRPOTrainer (PyTorch CPU, {args.threads} threads)"
    versions = {"torch": torch.__version__, "trl": trl.__version__,
                "transformers": transformers.__version__, "datasets": datasets.__version__,
                "python": platform.python_version()}
    cpu = cpu_name()

    print("\nseconds per step:", " ".join(f"{t:.3f}" for t in times))
    print(f"steps {len(times)} (statistics over {len(kept)}, first {args.warmup} left out): "
          f"median {median:.3f} s, mean {mean:.3f} s, {per_s:.0f} completions/s; "
          f"train() wall {wall:.1f} s; mean logged reward {reward:.4f}")
    print("\n| run | model params | s/step median | completions/s | steps |")
    print("|---|---|---|---|---|")
    print(f"| {label} | {n_params:,} | {median:.3f} | {per_s:.0f} | {len(times)} |")
    print("\n" + ", ".join(f"{k} {v}" for k, v in versions.items()) + f"; CPU: {cpu}")

    if args.json:
        figures = {
            "label": label, "threads": args.threads, "model_params": n_params,
            "completions_per_step": GENERATION_BATCH, "num_generations": NUM_GENERATIONS,
            "steps": len(times), "warmup_steps_excluded": args.warmup,
            "step_seconds": times, "median_step_s": median, "mean_step_s": mean,
            "completions_per_s": per_s, "train_wall_s": wall, "mean_reward": reward,
            "rewards": timer.rewards, "versions": versions, "cpu": cpu,
        }
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
