"""What every agent on token tasks shares: the settings, the model bound to a task, starting
from a saved run, the held-out evaluation, preference data, and the sampling loop of the
policy-gradient agents (GRPO, REINFORCE).

A sequence agent's `state.params` are the transformer's variables: `act` reads an
observation of the task (the tokens so far) and returns the next token. Its reference policy
(`state.ref_params`) is frozen at the start: the run it started from (`init_from`), or its
own initial weights.

Every `update` ends with an evaluation on `eval_batch_size` fresh held-out prompts
(`evaluate`): `accuracy` (exact-match of greedy completions, the score), `verifier_reward`,
`kl` (the exact KL to the reference summed over the greedy completion's tokens) and
`completion_length`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import struct

import envs
from agents.common import sequence_losses as L
from agents.common import transformer as T
from agents.common.config import (
    check_positive_int,
    check_real,
    hparams_from_config,
    invalid,
    normalize_fields,
)
from agents.common.contract import Score
from agents.common.optim import make_optimizer
from agents.common.types import Agent
from envs import token_tasks

SCORE = Score(metric="accuracy", higher_is_better=True, label="accuracy")
"""Sequence agents are judged by the exact-match accuracy of greedy completions of held-out
prompts."""
NAN_METRICS: tuple[str, ...] = ()
ACT_INPUT = "observation"
"""`act` takes a task's observation: the tokens so far [prompt + completion length]."""
LOADS = ("init_from",)
"""Config fields that name saved runs whose params the lab loads and passes to `make`."""
ACTION_SPACES = ("tokens",)
"""Sequence agents run on token tasks only (the lab names the agents that fit other tasks)."""
EVAL_METRICS = ("accuracy", "verifier_reward", "kl", "completion_length")


@dataclasses.dataclass(frozen=True)
class SequenceConfig:
    """Settings every sequence agent has."""

    SHAPE_FIELDS: ClassVar[frozenset[str]] = frozenset({"eval_batch_size"})

    model: T.ModelConfig = T.ModelConfig()
    """The transformer's sizes."""
    learning_rate: float = 1e-3
    """Adam step size (tunable)."""
    max_grad_norm: float = 1.0
    """Global gradient norm clip (tunable)."""
    eval_batch_size: int = 64
    """Held-out prompts of the evaluation after every iteration (greedy completions)."""
    init_from: str = ""
    """A saved run (results directory) to start from: its params become the policy's start and
    the frozen reference (a value or reward head the run lacks starts fresh). Empty: random."""
    init_from_seed: int = 0
    """Which seed of the `init_from` run."""

    def __post_init__(self):
        normalize_fields(self)
        check_positive_int(self, "eval_batch_size")
        check_real(self, "learning_rate", 0.0, low_open=True)
        check_real(self, "max_grad_norm", 0.0, low_open=True)
        if isinstance(self.init_from_seed, bool) or self.init_from_seed < 0:
            raise invalid("init_from_seed", self.init_from_seed, "expected an integer >= 0")


def check_task(agent: str, config: SequenceConfig, env, env_params) -> None:
    """A sequence agent runs on a token task whose sequences fit the model."""
    if not token_tasks.is_token_task(env):
        name = getattr(env, "name", type(env).__name__)
        raise ValueError(f"env: {agent} generates token sequences and needs a token task "
                         f"({', '.join(token_tasks.TASKS)}), not {name}")
    need = env.sequence_length(env_params)
    if config.model.max_length < need:
        raise invalid("model.max_length", config.model.max_length,
                      f"{env.name}'s prompts and completions need {need} positions")


# --------------------------------------------------------------------------- the model of a task


class TaskModel:
    """The transformer bound to a token task: generation, log-probs, KL and `act`, with PAD and
    BOS never generated."""

    def __init__(self, model_config: T.ModelConfig, env, env_params, value_head: bool = False):
        self.env, self.env_params = env, env_params
        self.net = T.Transformer(token_tasks.VOCAB_SIZE, model_config, value_head)
        self.prompt_length = env.prompt_length(env_params)
        self.completion_length = env.completion_length(env_params)
        self.banned = (token_tasks.PAD, token_tasks.BOS)

    def init(self, key: jax.Array):
        return T.init_params(self.net, key)

    def generate(self, params, key, prompts, *, temperature=1.0, top_k: int = 0, greedy=False,
                 use_cache: bool = True) -> T.Generation:
        return T.generate(self.net, params, key, prompts, self.completion_length,
                          eos=token_tasks.EOS, pad=token_tasks.PAD, banned=self.banned,
                          temperature=temperature, top_k=top_k, greedy=greedy, use_cache=use_cache)

    def log_probs(self, params, prompts, completions, temperature=1.0, with_values=False):
        return T.completion_log_probs(self.net, params, prompts, completions, banned=self.banned,
                                      temperature=temperature, with_values=with_values)

    def kl(self, params, ref_params, prompts, completions, mask) -> jax.Array:
        return T.token_kl(self.net, params, ref_params, prompts, completions, mask,
                          banned=self.banned)

    def rewards(self, completions, targets) -> jax.Array:
        """The verifier's reward of each completion [B]."""
        return jax.vmap(self.env.reward, in_axes=(0, 0, None))(completions, targets, self.env_params)

    def act(self, params, obs: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
        """The next token after `obs` (the tokens so far, PAD after their end), one sequence
        [L] or a batch [N, L]."""
        if obs.ndim == 2:
            keys = jax.random.split(key, obs.shape[0])
            return jax.vmap(self.act, in_axes=(None, 0, 0, None))(params, obs, keys, deterministic)
        last = jnp.sum(obs != token_tasks.PAD) - 1
        logits = self.net.apply(params, obs[None])[0][0, last]
        logits = T.masked_logits(logits, self.banned)
        return T.sample_token(key, logits[None], deterministic)[0]


def initial_params(model: TaskModel, key: jax.Array, config: SequenceConfig,
                   loaded: Mapping[str, Any] | None, field: str = "init_from"):
    """Fresh params, with those of the saved run `loaded[field]` copied in where its model has
    them (a value head it lacks stays fresh)."""
    fresh = model.init(key)
    run = (loaded or {}).get(field)
    if run is None:
        return fresh
    return _merge(fresh, run.params)


def _merge(fresh, saved):
    if isinstance(fresh, Mapping):
        return {k: _merge(v, saved[k]) if k in saved else v for k, v in fresh.items()}
    return jnp.asarray(saved, fresh.dtype)


def check_loaded(config: SequenceConfig, env, loaded: Mapping[str, Any] | None,
                 fields: tuple[str, ...] = LOADS) -> None:
    """The saved runs a config names have the same model sizes and task vocabulary.

    `loaded`: field -> the saved run's policy (`.params`, `.config`, `.env`), as the lab's
    `load_policy` gives it."""
    for field in fields:
        path = getattr(config, field)
        run = (loaded or {}).get(field)
        if not path or run is None:
            continue
        saved_model = getattr(run.config, "model", None)
        if not isinstance(saved_model, T.ModelConfig):
            raise ValueError(f"{field}={path!r} is not allowed: that run's agent has no "
                             f"transformer (model) to start from")
        for f in dataclasses.fields(T.ModelConfig):
            mine, theirs = getattr(config.model, f.name), getattr(saved_model, f.name)
            if mine != theirs:
                raise ValueError(f"{field}={path!r} is not allowed: that run has "
                                 f"model.{f.name}={theirs!r}, this one model.{f.name}={mine!r}")
        saved_env = envs.make(run.env)[0]
        theirs = getattr(saved_env, "vocabulary", None)
        if theirs != env.vocabulary:
            raise ValueError(f"{field}={path!r} is not allowed: that run's task {run.env} has "
                             f"another vocabulary than {env.name}")


# --------------------------------------------------------------------------- evaluation


def evaluate(model: TaskModel, params, ref_params, key: jax.Array, batch_size: int) -> dict:
    """Greedy completions of `batch_size` fresh held-out prompts: `accuracy` (exact match),
    `verifier_reward` (the task's reward, partial credit if it gives it), `kl` (to the
    reference, summed over each completion's tokens) and `completion_length` (tokens, EOS
    included), each the batch mean."""
    env, env_params = model.env, model.env_params
    data = env.sample_prompts(key, env.evaluation_params(env_params), batch_size)
    out = model.generate(params, key, data.prompts, greedy=True)
    exact, _ = jax.vmap(env.correctness)(out.completions, data.targets)
    kl = model.kl(params, ref_params, data.prompts, out.completions, out.mask)
    return {"accuracy": exact.mean(), "verifier_reward": model.rewards(out.completions, data.targets).mean(),
            "kl": kl.mean(), "completion_length": out.mask.sum(1).mean()}


# --------------------------------------------------------------------------- preference data


@struct.dataclass
class Pairs:
    """Preference pairs: two completions of each prompt, the hidden scorer's preferred first."""

    prompts: jax.Array  # [N, P]
    chosen: jax.Array  # [N, C]
    rejected: jax.Array  # [N, C]
    chosen_mask: jax.Array  # [N, C] float32
    rejected_mask: jax.Array  # [N, C] float32
    valid: jax.Array  # [N] float32: 0 where no two candidates scored differently


GENERATION_CHUNK = 4096
"""Sequences generated at once when a run makes its preference pairs."""


def generate_in_chunks(model: TaskModel, params, key: jax.Array, prompts: jax.Array, temperature,
                       chunk: int = GENERATION_CHUNK):
    """`model.generate` of many prompts, at most `chunk` at a time (`lax.map`), so that the
    memory of one generation stays bounded; one call when they fit in one chunk."""
    n = prompts.shape[0]
    if n <= chunk:
        return model.generate(params, key, prompts, temperature=temperature)
    count = -(-n // chunk)
    padded = jnp.concatenate([prompts, jnp.repeat(prompts[:1], count * chunk - n, axis=0)])
    out = jax.lax.map(lambda a: model.generate(params, a[1], a[0], temperature=temperature),
                      (padded.reshape(count, chunk, -1), jax.random.split(key, count)))
    return jax.tree.map(lambda x: x.reshape(count * chunk, *x.shape[2:])[:n], out)


def preference_pairs(model: TaskModel, params, key: jax.Array, num_pairs: int,
                     num_candidates: int, temperature, split: int = 0) -> Pairs:
    """`num_pairs` pairs from the model's samples: `num_candidates` completions of each of
    2 x num_pairs prompts of `split`, the best and the worst by the task's hidden scorer
    (`preference_score`); prompts whose candidates all score the same are skipped, the first
    `num_pairs` others kept (marked `valid` 0 where too few)."""
    env = model.env
    params_split = model.env_params.replace(split=split)
    n = 2 * num_pairs
    key_prompts, key_sample = jax.random.split(key)
    data = env.sample_prompts(key_prompts, params_split, n)
    prompts = jnp.repeat(data.prompts, num_candidates, axis=0)
    out = generate_in_chunks(model, params, key_sample, prompts, temperature)
    scores = jax.vmap(env.preference_score, in_axes=(0, 0, None))(
        out.completions, jnp.repeat(data.targets, num_candidates, axis=0), params_split)
    scores = scores.reshape(n, num_candidates)
    best, worst = jnp.argmax(scores, axis=1), jnp.argmin(scores, axis=1)
    valid = scores.max(1) > scores.min(1)
    keep = jnp.argsort(~valid, stable=True)[:num_pairs]  # valid prompts first, in order
    rows = keep * num_candidates
    pick = lambda x, which: x[rows + which[keep]]  # noqa: E731
    return Pairs(data.prompts[keep], pick(out.completions, best), pick(out.completions, worst),
                 pick(out.mask, best), pick(out.mask, worst), valid[keep].astype(jnp.float32))


def sequence_log_probs(model: TaskModel, params, prompts, completions, mask,
                       average: bool = False) -> jax.Array:
    """Per sequence [B]: the sum (or with `average` the mean) of the completion's token
    log-probs."""
    log_probs = model.log_probs(params, prompts, completions) * mask
    total = log_probs.sum(1)
    return total / jnp.maximum(mask.sum(1), 1.0) if average else total


# --------------------------------------------------------------------------- the sampling loop


@dataclasses.dataclass(frozen=True)
class SamplingConfig(SequenceConfig):
    """Settings of the agents that learn from their own samples (GRPO, REINFORCE)."""

    SHAPE_FIELDS: ClassVar[frozenset[str]] = SequenceConfig.SHAPE_FIELDS | frozenset(
        {"total_completions", "generation_batch_size", "top_k", "max_completion_length"})

    total_completions: int = 64_000
    """Completions sampled in the whole run."""
    generation_batch_size: int = 256
    """Completions sampled per iteration: generation_batch_size // num_generations prompts,
    each num_generations times."""
    num_generations: int = 8
    """Completions per prompt, G (tunable: the batch of completions stays the same)."""
    temperature: float = 1.0
    """Sampling temperature; log-probs are of the tempered policy, as in trl (tunable)."""
    top_k: int = 0
    """Sample from the k most likely tokens (0: all)."""
    beta: float = 0.0
    """Weight of the KL penalty to the reference policy (k3 estimator; tunable)."""
    max_completion_length: int = 0
    """Tokens a completion may have (EOS included); 0: the task's `max_completion_length`."""

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.max_completion_length, bool) or self.max_completion_length < 0:
            raise invalid("max_completion_length", self.max_completion_length,
                          "expected an integer >= 0 (0: the task's)")
        check_positive_int(self, "total_completions", "generation_batch_size", "num_generations")
        check_generation(self)
        check_real(self, "temperature", 0.0, low_open=True)
        check_real(self, "beta", 0.0)
        if isinstance(self.top_k, bool) or self.top_k < 0:
            raise invalid("top_k", self.top_k, "expected an integer >= 0 (0: no top-k)")

    @property
    def num_iterations(self) -> int:
        return self.total_completions // self.generation_batch_size

    @property
    def units_per_iteration(self) -> int:
        return self.generation_batch_size

    @property
    def unit(self) -> str:
        return "completions"


def task_params(config, env, env_params):
    """The task's parameters with the config's `max_completion_length` (when set), checked."""
    length = getattr(config, "max_completion_length", 0)
    if length:
        env_params = env_params.replace(max_completion_length=length)
        env.check_params(env_params)
    return env_params


def check_generation(config, minimum: int = 1) -> None:
    g, b = config.num_generations, config.generation_batch_size
    if g < minimum:
        raise invalid("num_generations", g, f"expected a group of at least {minimum} completions")
    if b % g:
        raise invalid("generation_batch_size", b,
                      f"must be divisible into groups of num_generations = {g}")


def group_ids(batch_size: int, group_size) -> jax.Array:
    """[B] the group of each completion (consecutive groups of `group_size`, which may be traced)."""
    return jnp.arange(batch_size) // group_size


def group_mean(values: jax.Array, group_size) -> jax.Array:
    """[B] the mean of each completion's group (group_size may be traced)."""
    ids = group_ids(values.shape[0], group_size)
    sums = jax.ops.segment_sum(values, ids, num_segments=values.shape[0])
    return sums[ids] / group_size


@struct.dataclass
class SamplingState:
    params: Any  # the policy's transformer variables
    ref_params: Any  # the frozen reference policy
    opt_state: Any
    hparams: Any
    key: jax.Array
    baseline: jax.Array  # a running mean of the reward (REINFORCE's moving-average baseline)


class Batch(struct.PyTreeNode):
    prompts: jax.Array  # [B, P]
    completions: jax.Array  # [B, C]
    mask: jax.Array  # [B, C]
    old_log_probs: jax.Array  # [B, C] under the sampling policy
    ref_log_probs: jax.Array  # [B, C] under the reference
    advantages: jax.Array  # [B]


def make_sampling_agent(name: str, config: SamplingConfig, env, env_params, make_hparams: Callable,
                        advantages: Callable, loss: Callable, passes: int = 1,
                        loaded: Mapping[str, Any] | None = None) -> Agent:
    """The loop of GRPO and REINFORCE. One iteration:

      1. sample generation_batch_size // G training prompts, each G times, from the policy;
      2. score the completions with the verifier; `advantages(rewards, hp, baseline) ->
         (advantages [B], new baseline)`;
      3. `passes` gradient steps on `loss(log_probs, batch, hp)` over the whole batch;
      4. evaluate on held-out prompts (`evaluate`).

    `make_hparams(config, overrides) -> HParams`: the tunable hyperparameters as arrays
    (learning_rate, max_grad_norm, temperature, num_generations among them).
    """
    env_params = task_params(config, env, env_params)
    check_task(name, config, env, env_params)
    check_loaded(config, env, loaded)
    model = TaskModel(config.model, env, env_params)
    optimizer = make_optimizer()
    b = config.generation_batch_size

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> SamplingState:
        key, key_params = jax.random.split(key)
        params = initial_params(model, key_params, config, loaded)
        hp = make_hparams(config, hparams)
        return SamplingState(params=params, ref_params=params, opt_state=optimizer.init(params),
                             hparams=hp, key=key, baseline=jnp.float32(0.0))

    def sample(state: SamplingState, key: jax.Array) -> tuple[Batch, dict, jax.Array]:
        hp = state.hparams
        key_prompts, key_sample = jax.random.split(key)
        data = env.sample_prompts(key_prompts, env_params, b)  # completion i answers prompt i // G
        prompt_of = group_ids(b, hp.num_generations)
        prompts, targets = data.prompts[prompt_of], data.targets[prompt_of]
        out = model.generate(state.params, key_sample, prompts, temperature=hp.temperature,
                             top_k=config.top_k)
        rewards = model.rewards(out.completions, targets)
        adv, baseline = advantages(rewards, hp, state.baseline)
        ref = model.log_probs(state.ref_params, prompts, out.completions, hp.temperature)
        batch = Batch(prompts, out.completions, out.mask, out.log_probs, ref, adv)
        exact, _ = jax.vmap(env.correctness)(out.completions, targets)
        metrics = {"reward": rewards.mean(), "sample_accuracy": exact.mean(),
                   "sample_length": out.mask.sum(1).mean(),
                   "sample_kl": (L.k3_kl(out.log_probs, ref) * out.mask).sum(1).mean()}
        return batch, metrics, baseline

    def loss_fn(params, batch: Batch, hp):
        log_probs = model.log_probs(params, batch.prompts, batch.completions, hp.temperature)
        return loss(log_probs, batch, hp)

    def learn(state: SamplingState, batch: Batch):
        hp = state.hparams

        def step(carry, _):
            params, opt_state = carry
            value, grads = jax.value_and_grad(loss_fn)(params, batch, hp)
            updates, opt_state = optimizer.update(grads, opt_state, learning_rate=hp.learning_rate,
                                                  max_grad_norm=hp.max_grad_norm)
            params = jax.tree.map(lambda p, u: p + u, params, updates)
            return (params, opt_state), value

        (params, opt_state), losses = jax.lax.scan(step, (state.params, state.opt_state), None,
                                                   passes)
        return params, opt_state, losses.mean()

    def update(state: SamplingState) -> tuple[SamplingState, dict]:
        key, key_sample, key_eval = jax.random.split(state.key, 3)
        batch, metrics, baseline = sample(state, key_sample)
        params, opt_state, loss_value = learn(state, batch)
        state = state.replace(params=params, opt_state=opt_state, key=key, baseline=baseline)
        metrics = {**metrics, "loss": loss_value,
                   **evaluate(model, params, state.ref_params, key_eval, config.eval_batch_size)}
        return state, metrics

    return Agent(init=init, update=update, act=model.act)


# --------------------------------------------------------------------------- learning from pairs


@dataclasses.dataclass(frozen=True)
class PreferenceConfig(SequenceConfig):
    """Settings of the agents that learn from preference pairs (reward model, DPO). The pairs
    are made when the run starts from the samples of the start model (`init_from`, else the
    random one) and labelled by the task's hidden scorer (`preference_pairs`)."""

    SHAPE_FIELDS: ClassVar[frozenset[str]] = SequenceConfig.SHAPE_FIELDS | frozenset(
        {"total_pairs", "batch_size", "num_pairs", "num_eval_pairs", "num_candidates"})

    total_pairs: int = 64_000
    """Pairs drawn in the whole run (with repetition): iterations x batch_size."""
    batch_size: int = 64
    """Pairs per gradient step."""
    num_pairs: int = 4_000
    """Training pairs (from training prompts)."""
    num_eval_pairs: int = 256
    """Held-out pairs (from held-out prompts), for the pairwise accuracy after each step."""
    num_candidates: int = 4
    """Completions sampled per prompt; the pair is the best and the worst of them."""
    sample_temperature: float = 1.0
    """Temperature of the samples the pairs are made of."""

    def __post_init__(self):
        super().__post_init__()
        check_positive_int(self, "total_pairs", "batch_size", "num_pairs", "num_eval_pairs")
        if isinstance(self.num_candidates, bool) or self.num_candidates < 2:
            raise invalid("num_candidates", self.num_candidates, "expected an integer >= 2")
        check_real(self, "sample_temperature", 0.0, low_open=True)

    @property
    def num_iterations(self) -> int:
        return self.total_pairs // self.batch_size

    @property
    def units_per_iteration(self) -> int:
        return self.batch_size

    @property
    def unit(self) -> str:
        return "pairs"


@struct.dataclass
class PreferenceData:
    train: Pairs  # [num_pairs, ...]
    held_out: Pairs  # [num_eval_pairs, ...]


def preference_data(config: PreferenceConfig, model: TaskModel, params, key: jax.Array) -> PreferenceData:
    """The training and held-out pairs of a run, from `params`' samples."""
    key_train, key_eval = jax.random.split(key)
    return PreferenceData(
        preference_pairs(model, params, key_train, config.num_pairs, config.num_candidates,
                         config.sample_temperature, split=0),
        preference_pairs(model, params, key_eval, config.num_eval_pairs, config.num_candidates,
                         config.sample_temperature, split=1))


def draw_pairs(key: jax.Array, pairs: Pairs, batch_size: int) -> Pairs:
    """`batch_size` pairs drawn uniformly (with replacement) among the valid ones."""
    weights = pairs.valid / jnp.maximum(pairs.valid.sum(), 1.0)
    index = jax.random.choice(key, pairs.valid.shape[0], (batch_size,), p=jnp.where(
        pairs.valid.sum() > 0, weights, 1.0 / pairs.valid.shape[0]))
    return jax.tree.map(lambda x: x[index], pairs)


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    return (values * weights).sum() / jnp.maximum(weights.sum(), 1.0)
