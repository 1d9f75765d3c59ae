"""Losses of RL on sequences (GRPO, DPO, reward models) as pure functions, ranks checked first.

The definitions and aggregations follow trl (`GRPOTrainer`, `DPOTrainer`, `RewardTrainer`), so
a number computed here and there agrees.

Shao et al. 2024, "DeepSeekMath" (GRPO); Yu et al. 2025, "DAPO" (clip-higher, token-level
aggregation); Liu et al. 2025, "Understanding R1-Zero-like training" (Dr. GRPO); Rafailov et
al. 2023, "Direct Preference Optimization"; Azar et al. 2023 (IPO); Chowdhury et al. 2024
(robust DPO); Bradley and Terry 1952; Ouyang et al. 2022 (reward models).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from envs.utils import unknown_name_error

SCALE_REWARDS = ("group", "batch", "none")
GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")


def group_advantages(rewards: jax.Array, group_size: int, scale: str = "group",
                     eps: float = 1e-4) -> jax.Array:
    """Group-relative advantages: A_i = (r_i - mean of r over i's group) / (s + eps).

    Args:
      rewards: [B], each prompt's `group_size` completions consecutive.
      group_size: completions per prompt (G >= 2); B must be a multiple of it.
      scale: s is the group's standard deviation with Bessel's correction ("group"), the
        whole batch's ("batch"), or 1 ("none": only the group mean is subtracted).
      eps: added to s.

    Returns:
      advantages [B]. Rewards [1, 2, 3] as one group: mean 2, s = 1, so about [-1, 0, 1].
    """
    chex.assert_rank(rewards, 1)
    if scale not in SCALE_REWARDS:
        raise unknown_name_error("scale", scale, SCALE_REWARDS)
    if group_size < 2 or rewards.shape[0] % group_size:
        raise ValueError(f"group_size={group_size} is not allowed: expected an integer >= 2 "
                         f"dividing the batch of {rewards.shape[0]} rewards")
    grouped = rewards.reshape(-1, group_size)
    centred = (grouped - grouped.mean(axis=1, keepdims=True)).reshape(-1)
    if scale == "none":
        return centred
    if scale == "group":
        std = jnp.repeat(jnp.std(grouped, axis=1, ddof=1), group_size)
    else:
        std = jnp.std(rewards, ddof=1)
    return centred / (std + eps)


def k3_kl(log_prob: jax.Array, ref_log_prob: jax.Array) -> jax.Array:
    """Per token: exp(ref - logp) - (ref - logp) - 1, Schulman's k3 estimator of KL(pi || ref)
    from a sample of pi (unbiased, never negative)."""
    delta = ref_log_prob - log_prob
    return jnp.exp(delta) - delta - 1.0


def grpo_loss(log_prob: jax.Array, old_log_prob: jax.Array, ref_log_prob: jax.Array,
              advantages: jax.Array, mask: jax.Array, *, epsilon=0.2, epsilon_high=None,
              beta=0.0, loss_type: str = "dapo",
              max_completion_length: int | None = None) -> jax.Array:
    """The GRPO loss of a batch of completions.

    Per token, with rho = exp(logp - old_logp):
        l = -min(rho A, clip(rho, 1 - epsilon, 1 + epsilon_high) A)
            + beta (exp(ref - logp) - (ref - logp) - 1)
    aggregated over the masked tokens as trl does:
        grpo     mean over sequences of each sequence's masked token mean;
        bnpo     masked sum / masked token count (of the batch);
        dapo     the same as bnpo here (trl's global count over processes: one process);
        dr_grpo  masked sum / (B x max_completion_length).

    Args:
      log_prob: [B, T] per-token log-probs under the policy being optimised.
      old_log_prob: [B, T] per-token log-probs under the policy that sampled.
      ref_log_prob: [B, T] per-token log-probs under the reference.
      advantages: [B], one per completion.
      mask: [B, T], 1 for the completion's tokens.
      epsilon: the lower clipping bound, 1 - epsilon.
      epsilon_high: the upper clipping bound, 1 + epsilon_high; None means epsilon.
      beta: weight of the KL penalty to the reference (0: no reference needed).
      max_completion_length: for dr_grpo; default T.
    """
    chex.assert_rank([log_prob, old_log_prob, ref_log_prob, mask, advantages], [2, 2, 2, 2, 1])
    if loss_type not in GRPO_LOSS_TYPES:
        raise unknown_name_error("loss_type", loss_type, GRPO_LOSS_TYPES)
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    ratio = jnp.exp(log_prob - old_log_prob)
    a = advantages[:, None]
    per_token = -jnp.minimum(ratio * a, jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon_high) * a)
    per_token = per_token + beta * k3_kl(log_prob, ref_log_prob)
    mask = mask.astype(per_token.dtype)
    masked = per_token * mask
    if loss_type == "grpo":
        return jnp.mean(masked.sum(-1) / jnp.maximum(mask.sum(-1), 1.0))
    if loss_type == "dr_grpo":
        length = log_prob.shape[1] if max_completion_length is None else max_completion_length
        return masked.sum() / (log_prob.shape[0] * length)
    return masked.sum() / jnp.maximum(mask.sum(), 1.0)


def dpo_loss(chosen_log_prob: jax.Array, rejected_log_prob: jax.Array,
             ref_chosen_log_prob: jax.Array, ref_rejected_log_prob: jax.Array, *, beta=0.1,
             loss_type: str = "sigmoid", label_smoothing=0.0) -> jax.Array:
    """Per-pair DPO losses [B] from sequence log-probs [B].

    With d = (chosen - ref_chosen) - (rejected - ref_rejected) and s = label_smoothing:
        sigmoid  -(1 - s) log sigmoid(beta d) - s log sigmoid(-beta d)     (Rafailov et al.)
        ipo      (d - 1 / (2 beta))^2        (Azar et al.; pass per-token mean log-probs)
        hinge    relu(1 - beta d)
        robust   (-(1 - s) log sigmoid(beta d) + s log sigmoid(-beta d)) / (1 - 2 s)
                 (Chowdhury et al.; s < 1/2)
    """
    chex.assert_rank([chosen_log_prob, rejected_log_prob, ref_chosen_log_prob,
                      ref_rejected_log_prob], 1)
    if loss_type not in DPO_LOSS_TYPES:
        raise unknown_name_error("loss_type", loss_type, DPO_LOSS_TYPES)
    d = (chosen_log_prob - ref_chosen_log_prob) - (rejected_log_prob - ref_rejected_log_prob)
    s = label_smoothing
    if loss_type == "sigmoid":
        return -(1 - s) * jax.nn.log_sigmoid(beta * d) - s * jax.nn.log_sigmoid(-beta * d)
    if loss_type == "ipo":
        return jnp.square(d - 1.0 / (2.0 * beta))
    if loss_type == "hinge":
        return jax.nn.relu(1.0 - beta * d)
    return (-(1 - s) * jax.nn.log_sigmoid(beta * d) + s * jax.nn.log_sigmoid(-beta * d)) / (1 - 2 * s)


def bradley_terry_loss(chosen_reward: jax.Array, rejected_reward: jax.Array, *, margin=None,
                       center_coef=0.0) -> jax.Array:
    """The reward model's loss over a batch of pairs [B]:
        mean(-log sigmoid(r_c - r_r - margin)) + center_coef * mean((r_c + r_r)^2)
    (Bradley-Terry likelihood of the preferences; the centring term of Eisenstein et al. 2023
    keeps rewards near 0). `margin`: None, a number or [B]."""
    chex.assert_rank([chosen_reward, rejected_reward], 1)
    diff = chosen_reward - rejected_reward
    if margin is not None:
        diff = diff - margin
    loss = -jnp.mean(jax.nn.log_sigmoid(diff))
    return loss + center_coef * jnp.mean(jnp.square(chosen_reward + rejected_reward))
