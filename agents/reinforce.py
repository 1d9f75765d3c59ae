"""REINFORCE (Williams 1992) with a baseline on token tasks with verifiable rewards.

One iteration of `update`:
  1. sample generation_batch_size // num_generations training prompts and num_generations
     completions of each from the policy;
  2. reward each with the verifier; subtract a baseline b_i:
       leave_one_out   the mean reward of the other completions of the same prompt (RLOO,
                       Kool et al. 2019, Ahmadian et al. 2024);
       moving_average  a running mean of the batch reward, b <- d b + (1 - d) mean(r);
  3. one gradient step on -sum_i (r_i - b_i) sum_t log pi(y_it) / (B x C), with optional
     k3 KL penalty `beta` to the reference (the same token sum);
  4. evaluate greedy completions of held-out prompts (`accuracy`, the score).

It shares sampling, evaluation and settings with GRPO (`agents.common.sequence`); no ratio,
no clipping, no division by the reward's spread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from agents.common import sequence as S
from agents.common.config import check_choice, check_real, hparams_from_config
from agents.common.sequence_losses import k3_kl
from agents.common.types import Agent, train_loop

SCORE, NAN_METRICS, ACT_INPUT, LOADS = S.SCORE, S.NAN_METRICS, S.ACT_INPUT, S.LOADS
ACTION_SPACES = S.ACTION_SPACES
BASELINES = ("leave_one_out", "moving_average")


@dataclasses.dataclass(frozen=True)
class Config(S.SamplingConfig):
    """REINFORCE settings."""

    baseline: str = "leave_one_out"
    """leave_one_out (needs num_generations >= 2) or moving_average."""
    baseline_decay: float = 0.9
    """d of the moving-average baseline (tunable)."""

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "baseline", BASELINES)
        S.check_generation(self, minimum=2 if self.baseline == "leave_one_out" else 1)
        check_real(self, "baseline_decay", 0.0, 1.0)


PRESETS: dict[str, Config] = {
    # REINFORCE (leave-one-out) from the same SFT start as GRPO's (benchmarks/rlhf.py).
    "addition": Config(total_completions=512_000, generation_batch_size=256, num_generations=4,
                       temperature=0.7, learning_rate=3e-4, beta=0.04),
}


@struct.dataclass
class HParams:
    learning_rate: jax.Array
    max_grad_norm: jax.Array
    temperature: jax.Array
    beta: jax.Array
    baseline_decay: jax.Array
    num_generations: jax.Array  # int32


def make_hparams(config: Config, overrides: Mapping[str, Any] | None = None) -> HParams:
    return hparams_from_config(HParams, config, overrides, ("num_generations",))


def make(config: Config, env, env_params, loaded: Mapping[str, Any] | None = None) -> Agent:
    """`loaded`: {"init_from": the saved run's policy}, as the lab passes it."""

    def advantages(rewards, hp: HParams, baseline):
        if config.baseline == "leave_one_out":
            g = hp.num_generations
            others = (S.group_mean(rewards, g) * g - rewards) / (g - 1)
            return rewards - others, baseline
        new = hp.baseline_decay * baseline + (1 - hp.baseline_decay) * rewards.mean()
        return rewards - baseline, new

    def loss(log_probs, batch: S.Batch, hp: HParams):
        b, c = log_probs.shape
        policy = -(batch.advantages[:, None] * log_probs * batch.mask).sum()
        kl = (k3_kl(log_probs, batch.ref_log_probs) * batch.mask).sum()
        return (policy + hp.beta * kl) / (b * c)

    return S.make_sampling_agent("reinforce", config, env, env_params, make_hparams, advantages,
                                 loss, 1, loaded)


def make_train(config: Config, env, env_params, loaded: Mapping[str, Any] | None = None):
    """`train(key) -> (final state, metrics [num_iterations])` in one program."""
    return train_loop(make(config, env, env_params, loaded), config.num_iterations)
