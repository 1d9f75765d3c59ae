"""A Bradley-Terry reward model on preference pairs of a token task (Ouyang et al. 2022).

The pairs are made when the run starts: completions sampled from the start model
(`init_from`, usually an SFT run), the best and the worst of `num_candidates` per prompt by
the task's hidden scorer (`TokenTask.preference_score`: partial credit, plus a length bonus
with `preference_length_bonus`). One iteration of `update`:
  1. draw `batch_size` training pairs;
  2. one gradient step on the Bradley-Terry loss (`agents.common.bradley_terry_loss`):
        mean(-log sigmoid(r(x, y_c) - r(x, y_r) - margin)) + center_coef mean((r_c + r_r)^2),
     r(x, y) the value head's output at the completion's last token (its EOS);
  3. `pairwise_accuracy` (the score): the fraction of held-out pairs ranked as the scorer
     ranks them.

The model is the transformer with a value head, started from `init_from` (the head fresh).
`score(params, prompts, completions, mask)` is the reward a policy is then trained against
(`ppo_rlhf`). `act` is the language-model head the model was started from (not trained here).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from agents.common import sequence as S
from agents.common.config import check_real, hparams_from_config
from agents.common.contract import Score
from agents.common.optim import make_optimizer
from agents.common.sequence_losses import bradley_terry_loss
from agents.common.types import Agent, train_loop

SCORE = Score(metric="pairwise_accuracy", higher_is_better=True, label="pairwise accuracy")
"""The fraction of held-out preference pairs the model ranks as the hidden scorer does."""
NAN_METRICS, ACT_INPUT, LOADS = S.NAN_METRICS, S.ACT_INPUT, S.LOADS
ACTION_SPACES = S.ACTION_SPACES


@dataclasses.dataclass(frozen=True)
class Config(S.PreferenceConfig):
    """Reward model settings."""

    margin: float = 0.0
    """Margin the chosen reward must exceed the rejected one by (tunable)."""
    center_coef: float = 0.0
    """Weight of the reward-centring term mean((r_c + r_r)^2) (tunable)."""

    def __post_init__(self):
        super().__post_init__()
        check_real(self, "margin")
        check_real(self, "center_coef", 0.0)


PRESETS: dict[str, Config] = {
    # The reward model of benchmarks/rlhf.py on 3-digit addition: pass --init-from the best SFT
    # seed (its samples make the pairs; judging digits takes knowing the sum).
    "addition": Config(total_pairs=128_000, num_pairs=32_000, learning_rate=3e-4),
}


@struct.dataclass
class HParams:
    learning_rate: jax.Array
    max_grad_norm: jax.Array
    margin: jax.Array
    center_coef: jax.Array


@struct.dataclass
class State:
    params: Any  # the transformer with its value head
    ref_params: Any  # the start model, which sampled the pairs
    opt_state: Any
    hparams: HParams
    key: jax.Array
    data: S.PreferenceData


def score(model: S.TaskModel, params, prompts, completions, mask) -> jax.Array:
    """The reward of each completion [B]: the value head at its last token."""
    tokens = jnp.concatenate([prompts, completions], axis=1)
    last = prompts.shape[1] + jnp.maximum(mask.sum(1).astype(jnp.int32), 1) - 1
    values = model.net.apply(params, tokens)[1]  # [B, P + C]
    return jnp.take_along_axis(values, last[:, None], axis=1)[:, 0]


def make(config: Config, env, env_params, loaded: Mapping[str, Any] | None = None) -> Agent:
    """`loaded`: {"init_from": the start run's policy} (the lab passes it)."""
    S.check_task("reward_model", config, env, env_params)
    S.check_loaded(config, env, loaded)
    model = S.TaskModel(config.model, env, env_params, value_head=True)
    optimizer = make_optimizer()

    def rewards(params, pairs: S.Pairs):
        chosen = score(model, params, pairs.prompts, pairs.chosen, pairs.chosen_mask)
        rejected = score(model, params, pairs.prompts, pairs.rejected, pairs.rejected_mask)
        return chosen, rejected

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> State:
        key, key_params, key_data = jax.random.split(key, 3)
        params = S.initial_params(model, key_params, config, loaded)
        data = S.preference_data(config, model, params, key_data)
        return State(params=params, ref_params=params, opt_state=optimizer.init(params),
                     hparams=hparams_from_config(HParams, config, hparams), key=key, data=data)

    def loss_fn(params, pairs: S.Pairs, hp: HParams):
        chosen, rejected = rewards(params, pairs)
        return bradley_terry_loss(chosen, rejected, margin=hp.margin, center_coef=hp.center_coef)

    def update(state: State) -> tuple[State, dict]:
        hp = state.hparams
        key, key_batch = jax.random.split(state.key)
        batch = S.draw_pairs(key_batch, state.data.train, config.batch_size)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, hp)
        updates, opt_state = optimizer.update(grads, state.opt_state, learning_rate=hp.learning_rate,
                                              max_grad_norm=hp.max_grad_norm)
        params = jax.tree.map(lambda p, u: p + u, state.params, updates)
        held_out = state.data.held_out
        chosen, rejected = rewards(params, held_out)
        metrics = {"loss": loss,
                   "pairwise_accuracy": S.weighted_mean((chosen > rejected).astype(jnp.float32),
                                                        held_out.valid),
                   "reward_mean": S.weighted_mean((chosen + rejected) / 2, held_out.valid),
                   "valid_pairs": state.data.train.valid.mean()}
        return state.replace(params=params, opt_state=opt_state, key=key), metrics

    return Agent(init=init, update=update, act=model.act)


def make_train(config: Config, env, env_params, loaded: Mapping[str, Any] | None = None):
    """`train(key) -> (final state, metrics [num_iterations])` in one program."""
    return train_loop(make(config, env, env_params, loaded), config.num_iterations)
