"""Supervised fine-tuning on demonstrations of a token task.

The demonstrations (`num_demonstrations` training prompts with their answers, a fraction
`noise` of them corrupted: `TokenTask.demonstrations`) are generated when the run starts and
kept in the state; one iteration of `update`:
  1. draw `batch_size` demonstrations (uniformly, with replacement);
  2. one gradient step on the cross-entropy of the answer's tokens, EOS included, given the
     prompt: -mean over the batch's answer tokens of log pi(y_t | prompt, y_<t);
  3. evaluate greedy completions of held-out prompts (`accuracy`, the score).

    env, env_params = envs.make("Addition-v0")
    agent = sft.make(sft.Config(), env, env_params)
    state, metrics = agent.update(agent.init(key))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import struct

from agents.common import sequence as S
from agents.common.config import check_positive_int, check_real, hparams_from_config
from agents.common.optim import make_optimizer
from agents.common.types import Agent, train_loop
from envs import token_tasks

SCORE, NAN_METRICS, ACT_INPUT, LOADS = S.SCORE, S.NAN_METRICS, S.ACT_INPUT, S.LOADS
ACTION_SPACES = S.ACTION_SPACES


@dataclasses.dataclass(frozen=True)
class Config(S.SequenceConfig):
    """SFT settings."""

    SHAPE_FIELDS: ClassVar[frozenset[str]] = S.SequenceConfig.SHAPE_FIELDS | frozenset(
        {"total_examples", "batch_size", "num_demonstrations"})

    total_examples: int = 64_000
    """Demonstrations drawn in the whole run (with repetition): iterations x batch_size."""
    batch_size: int = 64
    """Demonstrations per gradient step."""
    num_demonstrations: int = 2_000
    """Size of the demonstration set, generated at the start of the run."""
    noise: float = 0.0
    """Fraction of demonstrations with one answer digit wrong, so that SFT alone stops short."""

    def __post_init__(self):
        super().__post_init__()
        check_positive_int(self, "total_examples", "batch_size", "num_demonstrations")
        check_real(self, "noise", 0.0, 1.0)

    @property
    def num_iterations(self) -> int:
        return self.total_examples // self.batch_size

    @property
    def units_per_iteration(self) -> int:
        return self.batch_size

    @property
    def unit(self) -> str:
        return "examples"


PRESETS: dict[str, Config] = {
    # The SFT start of benchmarks/rlhf.py on 3-digit addition: held-out accuracy between 20%
    # and 60% (few, partly wrong demonstrations), the start GRPO and REINFORCE improve on.
    "addition": Config(total_examples=96_000, batch_size=64, num_demonstrations=20_000, noise=0.2),
}


@struct.dataclass
class HParams:
    learning_rate: jax.Array
    max_grad_norm: jax.Array


@struct.dataclass
class State:
    params: Any  # the transformer's variables
    ref_params: Any  # the start (frozen), for the KL the evaluation reports
    opt_state: Any
    hparams: HParams
    key: jax.Array
    data: token_tasks.Prompts  # the demonstrations: prompts [N, P], answers [N, C]


def make(config: Config, env, env_params, loaded: Mapping[str, Any] | None = None) -> Agent:
    """`loaded`: {"init_from": a saved run's policy} to continue from (the lab passes it)."""
    S.check_task("sft", config, env, env_params)
    S.check_loaded(config, env, loaded)
    model = S.TaskModel(config.model, env, env_params)
    optimizer = make_optimizer()

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> State:
        key, key_params, key_data = jax.random.split(key, 3)
        params = S.initial_params(model, key_params, config, loaded)
        data = env.demonstrations(key_data, env_params, config.num_demonstrations, config.noise)
        return State(params=params, ref_params=params, opt_state=optimizer.init(params),
                     hparams=hparams_from_config(HParams, config, hparams), key=key, data=data)

    def loss_fn(params, prompts, answers):
        mask = (answers != token_tasks.PAD).astype(jnp.float32)
        log_probs = model.log_probs(params, prompts, answers) * mask
        return -log_probs.sum() / mask.sum()

    def update(state: State) -> tuple[State, dict]:
        hp = state.hparams
        key, key_batch, key_eval = jax.random.split(state.key, 3)
        index = jax.random.randint(key_batch, (config.batch_size,), 0, config.num_demonstrations)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, state.data.prompts[index],
                                                  state.data.targets[index])
        updates, opt_state = optimizer.update(grads, state.opt_state, learning_rate=hp.learning_rate,
                                              max_grad_norm=hp.max_grad_norm)
        params = jax.tree.map(lambda p, u: p + u, state.params, updates)
        state = state.replace(params=params, opt_state=opt_state, key=key)
        metrics = {"loss": loss,
                   **S.evaluate(model, params, state.ref_params, key_eval, config.eval_batch_size)}
        return state, metrics

    return Agent(init=init, update=update, act=model.act)


def make_train(config: Config, env, env_params, loaded: Mapping[str, Any] | None = None):
    """`train(key) -> (final state, metrics [num_iterations])` in one program."""
    return train_loop(make(config, env, env_params, loaded), config.num_iterations)
