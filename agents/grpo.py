"""Group Relative Policy Optimization (Shao et al. 2024) on token tasks with verifiable rewards.

One iteration of `update`:
  1. sample generation_batch_size // num_generations training prompts and num_generations
     (G) completions of each from the policy at `temperature`;
  2. reward each completion with the task's verifier; advantages relative to its group:
     A_i = (r_i - mean_group(r)) / (std_group(r) + 1e-4)   (`scale_rewards`: group, batch, none);
  3. `num_passes` gradient steps on the whole batch of the clipped objective with a k3 KL
     penalty to the frozen reference, aggregated by `loss_type` (`agents.common.grpo_loss`):
        l_t = -min(rho_t A, clip(rho_t, 1 - epsilon, 1 + epsilon_high) A)
              + beta (exp(ref_t - logp_t) - (ref_t - logp_t) - 1),   rho_t = exp(logp_t - old_t);
  4. evaluate greedy completions of held-out prompts (`accuracy`, the score).

Field names and meanings follow trl's `GRPOConfig` where the concept is the same
(`num_generations`, `beta`, `epsilon`, `epsilon_high`, `loss_type`, `scale_rewards`,
`max_completion_length`, `temperature`, `top_k`; trl's `num_iterations` is `num_passes`, since
`num_iterations` counts a run's updates here); the defaults are sized for the toy tasks. The group size is tunable: a sweep over it keeps the batch of completions and
changes how many prompts it holds.

    env, env_params = envs.make("Addition-v0", digits=2)
    agent = grpo.make(grpo.Config(), env, env_params)           # or init_from a saved SFT run
    state = agent.init(key)
    state, metrics = agent.update(state)                        # metrics["accuracy"]
    token = agent.act(state.params, obs, key, deterministic=True)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import struct

from agents.common import sequence as S
from agents.common.config import check_choice, check_positive_int, check_real, invalid
from agents.common.sequence_losses import GRPO_LOSS_TYPES, SCALE_REWARDS, grpo_loss
from agents.common.types import Agent, train_loop

SCORE, NAN_METRICS, ACT_INPUT, LOADS = S.SCORE, S.NAN_METRICS, S.ACT_INPUT, S.LOADS
ACTION_SPACES = S.ACTION_SPACES


@dataclasses.dataclass(frozen=True)
class Config(S.SamplingConfig):
    """GRPO settings (trl's `GRPOConfig` names)."""

    SHAPE_FIELDS: ClassVar[frozenset[str]] = S.SamplingConfig.SHAPE_FIELDS | frozenset(
        {"num_passes", "loss_type", "scale_rewards"})

    epsilon: float = 0.2
    """Lower clipping range of the ratio, 1 - epsilon (tunable)."""
    epsilon_high: float | None = None
    """Upper clipping range, 1 + epsilon_high (DAPO's clip-higher); None: epsilon (tunable)."""
    loss_type: str = "dapo"
    """Aggregation over tokens: grpo, bnpo, dr_grpo or dapo (`agents.common.grpo_loss`)."""
    scale_rewards: str = "group"
    """Divide advantages by the group's std (group), the batch's (batch) or not (none)."""
    num_passes: int = 1
    """Gradient steps on each generation batch: trl's `num_iterations` (mu), renamed because
    `num_iterations` counts a run's updates in every agent of this project."""

    def __post_init__(self):
        super().__post_init__()
        S.check_generation(self, minimum=2)
        check_positive_int(self, "num_passes")
        check_real(self, "epsilon", 0.0, 1.0)
        if self.epsilon_high is not None:
            check_real(self, "epsilon_high", 0.0)
        check_choice(self, "loss_type", GRPO_LOSS_TYPES)
        check_choice(self, "scale_rewards", SCALE_REWARDS)


PRESETS: dict[str, Config] = {
    # GRPO from an SFT start on 3-digit addition (benchmarks/rlhf.py): pass --init-from.
    "addition": Config(total_completions=512_000, generation_batch_size=256, num_generations=4,
                       temperature=0.7, learning_rate=3e-4, beta=0.04),
}


@struct.dataclass
class HParams:
    learning_rate: jax.Array
    max_grad_norm: jax.Array
    temperature: jax.Array
    beta: jax.Array
    epsilon: jax.Array
    epsilon_high: jax.Array  # NaN: the same as epsilon
    num_generations: jax.Array  # int32


def make_hparams(config: Config, overrides: Mapping[str, Any] | None = None) -> HParams:
    """The tunable hyperparameters as arrays (epsilon_high None: NaN, meaning epsilon)."""
    values = {f: getattr(config, f) for f in HParams.__dataclass_fields__}
    values["epsilon_high"] = math.nan if config.epsilon_high is None else config.epsilon_high
    values.update(overrides or {})
    return HParams(**{f: jnp.asarray(v, jnp.int32 if f == "num_generations" else jnp.float32)
                      for f, v in values.items()})


def make(config: Config, env, env_params, loaded: Mapping[str, Any] | None = None) -> Agent:
    """`loaded`: {"init_from": the saved run's policy}, as the lab passes it; without it the
    model starts from random weights (the shapes are the same)."""

    def advantages(rewards, hp: HParams, baseline):
        if config.scale_rewards == "group":  # the group size may be traced: segment sums
            g = hp.num_generations
            mean = S.group_mean(rewards, g)
            std = jnp.sqrt(S.group_mean(jnp.square(rewards - mean), g) * g / (g - 1))
            return (rewards - mean) / (std + 1e-4), baseline
        centred = rewards - S.group_mean(rewards, hp.num_generations)
        if config.scale_rewards == "none":
            return centred, baseline
        return centred / (jnp.std(rewards, ddof=1) + 1e-4), baseline

    def loss(log_probs, batch: S.Batch, hp: HParams):
        high = jnp.where(jnp.isnan(hp.epsilon_high), hp.epsilon, hp.epsilon_high)
        return grpo_loss(log_probs, batch.old_log_probs, batch.ref_log_probs, batch.advantages,
                         batch.mask, epsilon=hp.epsilon, epsilon_high=high, beta=hp.beta,
                         loss_type=config.loss_type)

    return S.make_sampling_agent("grpo", config, env, env_params, make_hparams, advantages, loss,
                                 config.num_passes, loaded)


def make_train(config: Config, env, env_params, loaded: Mapping[str, Any] | None = None):
    """`train(key) -> (final state, metrics [num_iterations])` in one program."""
    return train_loop(make(config, env, env_params, loaded), config.num_iterations)
