"""Direct Preference Optimization (Rafailov et al. 2023) on preference pairs of a token task.

The pairs are made when the run starts, from the start model's samples (`init_from`, usually
an SFT run, which is also the frozen reference), labelled by the task's hidden scorer (see
`reward_model`). One iteration of `update`:
  1. draw `batch_size` training pairs;
  2. one gradient step on `agents.common.dpo_loss` of the sequence log-probs, with
        d = (log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r)):
        sigmoid  -(1 - s) log sigmoid(beta d) - s log sigmoid(-beta d)
        ipo      (d - 1 / (2 beta))^2, on per-token mean log-probs
        hinge    relu(1 - beta d)
        robust   (-(1 - s) log sigmoid(beta d) + s log sigmoid(-beta d)) / (1 - 2 s);
  3. `preference_accuracy`: the fraction of held-out pairs whose implicit reward
     beta (log pi - log ref) ranks the chosen completion first; and the greedy evaluation
     on held-out prompts (`accuracy`, the score).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from agents.common import sequence as S
from agents.common.config import check_choice, check_real, hparams_from_config, invalid
from agents.common.optim import make_optimizer
from agents.common.sequence_losses import DPO_LOSS_TYPES, dpo_loss
from agents.common.types import Agent, train_loop

SCORE, NAN_METRICS, ACT_INPUT, LOADS = S.SCORE, S.NAN_METRICS, S.ACT_INPUT, S.LOADS
ACTION_SPACES = S.ACTION_SPACES


@dataclasses.dataclass(frozen=True)
class Config(S.PreferenceConfig):
    """DPO settings (trl's `DPOConfig` names)."""

    beta: float = 0.1
    """Temperature of the implicit reward beta (log pi - log ref) (tunable)."""
    loss_type: str = "sigmoid"
    """sigmoid, ipo, hinge or robust (`agents.common.dpo_loss`)."""
    label_smoothing: float = 0.0
    """Probability that a label is flipped, s (sigmoid and robust; tunable)."""

    def __post_init__(self):
        super().__post_init__()
        check_real(self, "beta", 0.0, low_open=True)
        check_choice(self, "loss_type", DPO_LOSS_TYPES)
        check_real(self, "label_smoothing", 0.0, 1.0)
        if self.loss_type == "robust" and self.label_smoothing >= 0.5:
            raise invalid("label_smoothing", self.label_smoothing,
                          "loss_type='robust' divides by 1 - 2 label_smoothing: expected < 0.5")


PRESETS: dict[str, Config] = {
    # DPO from the SFT start of benchmarks/rlhf.py on 3-digit addition. A large beta keeps the
    # policy near the start (KL ~0.6), where its greedy answers improve; with beta 0.1 they
    # drift (KL ~2.8) and get worse although the preference accuracy is as high.
    "addition": Config(total_pairs=64_000, num_pairs=8_000, learning_rate=1e-4, beta=1.0),
}


@struct.dataclass
class HParams:
    learning_rate: jax.Array
    max_grad_norm: jax.Array
    beta: jax.Array
    label_smoothing: jax.Array


@struct.dataclass
class State:
    params: Any  # the policy's transformer variables
    ref_params: Any  # the frozen reference: the start model, which sampled the pairs
    opt_state: Any
    hparams: HParams
    key: jax.Array
    data: S.PreferenceData


def make(config: Config, env, env_params, loaded: Mapping[str, Any] | None = None) -> Agent:
    """`loaded`: {"init_from": the start run's policy} (the lab passes it)."""
    S.check_task("dpo", config, env, env_params)
    S.check_loaded(config, env, loaded)
    model = S.TaskModel(config.model, env, env_params)
    optimizer = make_optimizer()
    average = config.loss_type == "ipo"  # IPO is defined on per-token mean log-probs

    def log_ratios(params, ref_params, pairs: S.Pairs):
        """(chosen, rejected) [B]: log pi - log ref of each completion."""
        def logp(p, completions, mask):
            return S.sequence_log_probs(model, p, pairs.prompts, completions, mask, average)

        chosen = logp(params, pairs.chosen, pairs.chosen_mask) - logp(
            ref_params, pairs.chosen, pairs.chosen_mask)
        rejected = logp(params, pairs.rejected, pairs.rejected_mask) - logp(
            ref_params, pairs.rejected, pairs.rejected_mask)
        return chosen, rejected

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> State:
        key, key_params, key_data = jax.random.split(key, 3)
        params = S.initial_params(model, key_params, config, loaded)
        data = S.preference_data(config, model, params, key_data)
        return State(params=params, ref_params=params, opt_state=optimizer.init(params),
                     hparams=hparams_from_config(HParams, config, hparams), key=key, data=data)

    def loss_fn(params, ref_params, pairs: S.Pairs, hp: HParams):
        chosen, rejected = log_ratios(params, ref_params, pairs)
        zeros = jnp.zeros_like(chosen)  # the ratios already hold the reference
        losses = dpo_loss(chosen, rejected, zeros, zeros, beta=hp.beta, loss_type=config.loss_type,
                          label_smoothing=hp.label_smoothing)
        return losses.mean()

    def update(state: State) -> tuple[State, dict]:
        hp = state.hparams
        key, key_batch, key_eval = jax.random.split(state.key, 3)
        batch = S.draw_pairs(key_batch, state.data.train, config.batch_size)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, state.ref_params, batch, hp)
        updates, opt_state = optimizer.update(grads, state.opt_state, learning_rate=hp.learning_rate,
                                              max_grad_norm=hp.max_grad_norm)
        params = jax.tree.map(lambda p, u: p + u, state.params, updates)
        held_out = state.data.held_out
        chosen, rejected = log_ratios(params, state.ref_params, held_out)
        metrics = {"loss": loss,
                   "preference_accuracy": S.weighted_mean((chosen > rejected).astype(jnp.float32),
                                                          held_out.valid),
                   "reward_margin": S.weighted_mean(hp.beta * (chosen - rejected), held_out.valid),
                   **S.evaluate(model, params, state.ref_params, key_eval, config.eval_batch_size)}
        return state.replace(params=params, opt_state=opt_state, key=key), metrics

    return Agent(init=init, update=update, act=model.act)


def make_train(config: Config, env, env_params, loaded: Mapping[str, Any] | None = None):
    """`train(key) -> (final state, metrics [num_iterations])` in one program."""
    return train_loop(make(config, env, env_params, loaded), config.num_iterations)
