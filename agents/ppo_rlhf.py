"""PPO on token sequences with a KL penalty to the reference, against a reward model or the
task's verifier (Ziegler et al. 2019, Stiennon et al. 2020, Ouyang et al. 2022).

One iteration of `update`:
  1. sample one completion for each of `generation_batch_size` training prompts (the policy
     at `temperature`), with the value head's values of every state;
  2. score each completion: the reward model of the run `reward_from` (the value head of its
     transformer at the completion's last token), or the verifier when it is empty;
  3. per-token rewards with the KL penalty folded in:
        r_t = -kl_coef (log pi(y_t) - log ref(y_t))  (+ the score at the last token);
  4. GAE over the completion's tokens (gamma, lam), returns = advantages + values;
  5. `num_passes` epochs of `num_minibatches` steps on the clipped surrogate (token mean) +
     vf_coef x the clipped value loss, advantages whitened over the batch;
  6. with `adaptive_kl`, kl_coef <- kl_coef (1 + clip(KL / target_kl - 1, -0.2, 0.2) B / horizon),
     KL the batch's mean summed per-sequence log-ratio (Ziegler et al.'s proportional control);
  7. evaluate greedy completions of held-out prompts (`accuracy`, the score).

`init_from` (an SFT run) is the policy's start and the frozen reference; the value head
starts fresh.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import struct

from agents import reward_model as RM
from agents.common import sequence as S
from agents.common.config import check_positive_int, check_real, hparams_from_config, invalid
from agents.common.optim import make_optimizer
from agents.common.returns import gae
from agents.common.types import Agent, train_loop

SCORE, NAN_METRICS, ACT_INPUT = S.SCORE, S.NAN_METRICS, S.ACT_INPUT
ACTION_SPACES = S.ACTION_SPACES
LOADS = ("init_from", "reward_from")
"""The runs the lab loads: the start (SFT) and the reward model."""


@dataclasses.dataclass(frozen=True)
class Config(S.SamplingConfig):
    """PPO-RLHF settings. `num_generations` is 1: no groups; `beta` is unused (the KL
    penalty is `kl_coef`)."""

    SHAPE_FIELDS: ClassVar[frozenset[str]] = S.SamplingConfig.SHAPE_FIELDS | frozenset(
        {"num_passes", "num_minibatches"})

    num_generations: int = 1
    reward_from: str = ""
    """A saved reward_model run to score completions with (its first seed); empty: the task's
    verifier."""
    kl_coef: float = 0.05
    """Initial weight of the per-token KL penalty folded into the reward (tunable)."""
    adaptive_kl: bool = True
    """Adapt kl_coef towards target_kl (Ziegler et al. 2019)."""
    target_kl: float = 1.0
    """The KL per completion the controller steers to (tunable)."""
    horizon: float = 10_000.0
    """Completions over which the controller's proportional error acts (tunable)."""
    num_passes: int = 4
    """PPO epochs over each batch."""
    num_minibatches: int = 4
    """Minibatches per epoch; must divide generation_batch_size."""
    clip_eps: float = 0.2
    """Clipping range of the ratio and of the value change (tunable)."""
    vf_coef: float = 0.1
    """Weight of the value loss (tunable)."""
    gamma: float = 1.0
    """Discount over tokens (tunable)."""
    lam: float = 0.95
    """GAE lambda over tokens (tunable)."""

    def __post_init__(self):
        super().__post_init__()
        check_positive_int(self, "num_passes", "num_minibatches")
        if self.generation_batch_size % self.num_minibatches:
            raise invalid("num_minibatches", self.num_minibatches,
                          f"must divide generation_batch_size = {self.generation_batch_size}")
        if self.num_generations != 1:
            raise invalid("num_generations", self.num_generations,
                          "PPO-RLHF samples one completion per prompt: expected 1")
        check_real(self, "kl_coef", 0.0)
        check_real(self, "target_kl", 0.0, low_open=True)
        check_real(self, "horizon", 0.0, low_open=True)
        check_real(self, "clip_eps", 0.0, low_open=True)
        check_real(self, "vf_coef", 0.0)
        check_real(self, "gamma", 0.0, 1.0)
        check_real(self, "lam", 0.0, 1.0)


PRESETS: dict[str, Config] = {
    # PPO against the reward model of benchmarks/rlhf.py, from its SFT start: pass
    # --init-from and --reward-from.
    "addition": Config(total_completions=128_000, generation_batch_size=256, learning_rate=1e-4,
                       kl_coef=0.2, target_kl=1.0, horizon=1_000.0),
}


@struct.dataclass
class HParams:
    learning_rate: jax.Array
    max_grad_norm: jax.Array
    temperature: jax.Array
    target_kl: jax.Array
    horizon: jax.Array
    clip_eps: jax.Array
    vf_coef: jax.Array
    gamma: jax.Array
    lam: jax.Array
    kl_coef: jax.Array  # the initial value; the current one is state.kl_coef


@struct.dataclass
class State:
    params: Any  # the policy's transformer with its value head
    ref_params: Any  # the frozen reference (the start)
    reward_params: Any  # the reward model's transformer (None: the verifier scores)
    opt_state: Any
    hparams: HParams
    key: jax.Array
    kl_coef: jax.Array  # the KL penalty's current weight


class Rollout(struct.PyTreeNode):
    prompts: jax.Array  # [B, P]
    completions: jax.Array  # [B, C]
    mask: jax.Array  # [B, C]
    log_probs: jax.Array  # [B, C] under the sampling policy
    values: jax.Array  # [B, C]
    advantages: jax.Array  # [B, C]
    returns: jax.Array  # [B, C]


def token_advantages(rewards, values, mask, gamma, lam):
    """GAE over one completion's tokens [C]: the last token (and every pad after it) is terminal."""
    last = jnp.maximum(mask.sum().astype(jnp.int32), 1) - 1
    t = jnp.arange(mask.shape[0])
    v_next = jnp.where(t < last, jnp.roll(values, -1), 0.0)
    values = values * mask
    terminated = t >= last
    adv, _ = gae(rewards, values, v_next, terminated, jnp.zeros_like(terminated), gamma, lam)
    return adv * mask


def make(config: Config, env, env_params, loaded: Mapping[str, Any] | None = None) -> Agent:
    """`loaded`: {"init_from": the start run's policy, "reward_from": the reward model run's},
    as the lab passes them."""
    env_params = S.task_params(config, env, env_params)
    S.check_task("ppo_rlhf", config, env, env_params)
    S.check_loaded(config, env, loaded, LOADS)
    model = S.TaskModel(config.model, env, env_params, value_head=True)
    rm_run = (loaded or {}).get("reward_from")
    if config.reward_from and rm_run is not None and rm_run.agent != "reward_model":
        raise invalid("reward_from", config.reward_from,
                      f"expected a run of reward_model, got one of {rm_run.agent}")
    scorer = S.TaskModel(config.model, env, env_params, value_head=True)
    optimizer = make_optimizer()
    b, mb = config.generation_batch_size, config.generation_batch_size // config.num_minibatches

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> State:
        key, key_params, key_rm = jax.random.split(key, 3)
        params = S.initial_params(model, key_params, config, loaded)
        reward_params = (S.initial_params(scorer, key_rm, config, loaded, "reward_from")
                         if config.reward_from else None)
        hp = hparams_from_config(HParams, config, hparams)
        return State(params=params, ref_params=params, reward_params=reward_params,
                     opt_state=optimizer.init(params), hparams=hp, key=key, kl_coef=hp.kl_coef)

    def rollout(state: State, key: jax.Array) -> tuple[Rollout, dict]:
        hp = state.hparams
        key_prompts, key_sample = jax.random.split(key)
        data = env.sample_prompts(key_prompts, env_params, b)
        out = model.generate(state.params, key_sample, data.prompts, temperature=hp.temperature,
                             top_k=config.top_k)
        _, values = model.log_probs(state.params, data.prompts, out.completions, hp.temperature,
                                    with_values=True)
        ref = model.log_probs(state.ref_params, data.prompts, out.completions, hp.temperature)
        verifier = model.rewards(out.completions, data.targets)
        if state.reward_params is None:
            score = verifier
        else:
            score = RM.score(scorer, state.reward_params, data.prompts, out.completions, out.mask)
        log_ratio = (out.log_probs - ref) * out.mask
        last = jnp.maximum(out.mask.sum(1).astype(jnp.int32), 1) - 1
        rewards = -state.kl_coef * log_ratio
        rewards = rewards.at[jnp.arange(b), last].add(score)
        adv = jax.vmap(token_advantages, in_axes=(0, 0, 0, None, None))(
            rewards, values, out.mask, hp.gamma, hp.lam)
        batch = Rollout(data.prompts, out.completions, out.mask, out.log_probs, values * out.mask,
                        adv, adv + values * out.mask)
        metrics = {"reward": verifier.mean(), "score": score.mean(),
                   "sample_kl": log_ratio.sum(1).mean(), "kl_coef": state.kl_coef,
                   "sample_length": out.mask.sum(1).mean()}
        return batch, metrics

    def loss_fn(params, batch: Rollout, hp: HParams):
        log_probs, values = model.log_probs(params, batch.prompts, batch.completions,
                                            hp.temperature, with_values=True)
        mask, n = batch.mask, jnp.maximum(batch.mask.sum(), 1.0)
        ratio = jnp.exp(log_probs - batch.log_probs)
        adv = batch.advantages
        surrogate = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - hp.clip_eps, 1 + hp.clip_eps) * adv)
        clipped_values = batch.values + jnp.clip(values - batch.values, -hp.clip_eps, hp.clip_eps)
        value_loss = 0.5 * jnp.maximum(jnp.square(values - batch.returns),
                                       jnp.square(clipped_values - batch.returns))
        policy_loss = (surrogate * mask).sum() / n
        value_loss = (value_loss * mask).sum() / n
        return policy_loss + hp.vf_coef * value_loss, (policy_loss, value_loss)

    def learn(state: State, batch: Rollout, key: jax.Array):
        hp = state.hparams
        mean = S.weighted_mean(batch.advantages, batch.mask)
        std = jnp.sqrt(S.weighted_mean(jnp.square(batch.advantages - mean), batch.mask))
        batch = batch.replace(advantages=(batch.advantages - mean) / (std + 1e-8) * batch.mask)

        def minibatch_step(carry, index):
            params, opt_state = carry
            minibatch = jax.tree.map(lambda x: x[index], batch)
            (_, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, minibatch, hp)
            updates, opt_state = optimizer.update(grads, opt_state, learning_rate=hp.learning_rate,
                                                  max_grad_norm=hp.max_grad_norm)
            return (jax.tree.map(lambda p, u: p + u, params, updates), opt_state), parts

        def epoch(carry, key):
            order = jax.random.permutation(key, b).reshape(config.num_minibatches, mb)
            return jax.lax.scan(minibatch_step, carry, order)

        (params, opt_state), (policy_loss, value_loss) = jax.lax.scan(
            epoch, (state.params, state.opt_state), jax.random.split(key, config.num_passes))
        return params, opt_state, policy_loss.mean(), value_loss.mean()

    def update(state: State) -> tuple[State, dict]:
        hp = state.hparams
        key, key_rollout, key_learn, key_eval = jax.random.split(state.key, 4)
        batch, metrics = rollout(state, key_rollout)
        params, opt_state, policy_loss, value_loss = learn(state, batch, key_learn)
        kl_coef = state.kl_coef
        if config.adaptive_kl:
            error = jnp.clip(metrics["sample_kl"] / hp.target_kl - 1.0, -0.2, 0.2)
            kl_coef = kl_coef * (1.0 + error * b / hp.horizon)
        state = state.replace(params=params, opt_state=opt_state, key=key, kl_coef=kl_coef)
        metrics = {**metrics, "policy_loss": policy_loss, "value_loss": value_loss,
                   **S.evaluate(model, params, state.ref_params, key_eval, config.eval_batch_size)}
        return state, metrics

    return Agent(init=init, update=update, act=model.act)


def make_train(config: Config, env, env_params, loaded: Mapping[str, Any] | None = None):
    """`train(key) -> (final state, metrics [num_iterations])` in one program."""
    return train_loop(make(config, env, env_params, loaded), config.num_iterations)
