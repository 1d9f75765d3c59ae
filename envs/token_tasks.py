"""Sequence-generation tasks with verifiable rewards: a prompt, then one token per step.

    env, params = envs.make("Addition-v0", digits=3)   # "<bos>012+345=" -> "357<eos>"
    env, params = envs.make("Sort-v0", length=5)       # "<bos>S31412=" -> "11234<eos>"
    env, params = envs.make("Reverse-v0", length=5)    # "<bos>R31412=" -> "21413<eos>"

Every task shares one character-level vocabulary (`VOCAB`: PAD, BOS, EOS, the ten digits, "+",
"=", "S", "R"), so a model trained on one reads the others. A prompt has a fixed length per
task (`prompt_length`): BOS, the operands (Addition pads each number with leading zeros to
`digits` digits; Sort and Reverse put the operator S or R before `length` digits), then "=".
The answer is written without leading zeros (Addition) and ends with EOS.

As an environment (gymnax 1.0's API): `reset` samples a prompt of the training split; each
`step` appends the action's token; the episode terminates at EOS, at an invalid token (PAD or
BOS: the completion ends unanswered; an id outside the vocabulary is written as PAD) or after
`max_completion_length` tokens, and the reward of the final step is the verifier's
(`reward`): 1 for an exact answer (its digits, then EOS), 0 otherwise, or with
`partial_credit` the fraction of answer positions (EOS included) that are right. The
observation is the whole sequence so far, int32 token ids [prompt_length +
max_completion_length], PAD after its end, so a policy reads its next position from it.

For sequence agents that generate whole completions at once, the task exposes what the step
uses: `sample_prompts` (a batch of prompts with their answers, from either split),
`reward` (the verifier), `preference_score` (the hidden scoring function that labels
preference pairs: partial credit, plus `preference_length_bonus` per completion token, a
preference for long answers to study reward hacking) and `demonstrations` (prompts with
their answers for supervised fine-tuning, a fraction `noise` of them corrupted).

Held-out split: a fixed hash of each prompt puts a fraction `eval_fraction` of all prompts in
the evaluation split; training never samples them (`split=0`), evaluation only them
(`split=1`, what `evaluation_params` sets).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

PAD, BOS, EOS = 0, 1, 2
DIGIT0 = 3  # token of "0"; digit d is DIGIT0 + d
VOCAB: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", *"0123456789", "+", "=", "S", "R")
PLUS, EQUALS, SORT, REVERSE = (VOCAB.index(c) for c in "+=SR")
VOCAB_SIZE = len(VOCAB)
TASKS = ("Addition-v0", "Sort-v0", "Reverse-v0")


def encode(text: str) -> np.ndarray:
    """Token ids of `text`: characters of VOCAB, and `<bos>`, `<eos>`, `<pad>` spelled out."""
    out, i = [], 0
    while i < len(text):
        for special in ("<pad>", "<bos>", "<eos>"):
            if text.startswith(special, i):
                out.append(VOCAB.index(special))
                i += len(special)
                break
        else:
            if text[i] not in VOCAB:
                raise ValueError(f"character {text[i]!r} of {text!r} is not in the vocabulary "
                                 f"({''.join(VOCAB[3:])} and <bos>, <eos>, <pad>)")
            out.append(VOCAB.index(text[i]))
            i += 1
    return np.asarray(out, np.int32)


def decode(tokens, stop_at_eos: bool = True) -> str:
    """Text of token ids; PAD is dropped; with `stop_at_eos` the text ends at the first EOS."""
    out = []
    for t in np.asarray(tokens).tolist():
        if t == PAD:
            continue
        out.append(VOCAB[t])
        if stop_at_eos and t == EOS:
            break
    return "".join(out)


@struct.dataclass
class TaskParams:
    """Parameters every token task has. Those that fix shapes are static (never swept)."""

    max_completion_length: int = struct.field(pytree_node=False, default=0)
    """Tokens a completion may have (EOS included): at least the longest answer plus EOS;
    0: exactly that (`TokenTask.completion_length`)."""
    partial_credit: bool = struct.field(pytree_node=False, default=False)
    """Reward the fraction of right answer positions instead of exact match."""
    eval_fraction: float = struct.field(pytree_node=False, default=0.1)
    """Fraction of all prompts held out for evaluation (by a fixed hash of the prompt)."""
    split: int = 0
    """0: sample training prompts; 1: held-out prompts (evaluation)."""
    preference_length_bonus: float = 0.0
    """Hidden preference scorer: partial credit plus this much per completion token."""


@struct.dataclass
class AdditionParams(TaskParams):
    digits: int = struct.field(pytree_node=False, default=3)
    """Digits of each operand (1 to 4)."""


@struct.dataclass
class ListParams(TaskParams):
    length: int = struct.field(pytree_node=False, default=5)
    """Digits in the list (1 to 8)."""


@struct.dataclass
class TaskState:
    tokens: jax.Array  # [prompt_length + max_completion_length] int32, PAD after the end
    target: jax.Array  # [max_completion_length] int32: the answer's tokens, EOS, then PAD
    time: jax.Array  # tokens generated so far


@struct.dataclass
class Prompts:
    prompts: jax.Array  # [B, prompt_length] int32
    targets: jax.Array  # [B, max_completion_length] int32: answer, EOS, PAD


def _mix32(x: jax.Array) -> jax.Array:
    """murmur3's 32-bit finaliser: a fixed, well-spread hash of an integer."""
    h = x.astype(jnp.uint32)
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


class TokenTask(environment.Environment):
    """A prompt-answer task (see the module docstring); subclasses define the prompt and
    the answer."""

    env_id = "TokenTask"
    size_name = "size"  # the parameter that sets the operands' digits
    max_size = 4
    params_class: type[TaskParams] = TaskParams

    @property
    def name(self) -> str:
        return self.env_id

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return VOCAB

    @property
    def num_actions(self) -> int:
        return VOCAB_SIZE

    @property
    def default_params(self) -> TaskParams:
        return self.params_class()

    # ------------------------------------------------------------------ the task

    def size(self, params: TaskParams) -> int:
        return getattr(params, self.size_name)

    def prompt_length(self, params: TaskParams) -> int:
        raise NotImplementedError

    def completion_length(self, params: TaskParams) -> int:
        """Tokens a completion may have: `max_completion_length`, or when 0 the longest
        answer plus EOS."""
        return params.max_completion_length or self.answer_length(self.size(params)) + 1

    def answer_length(self, size: int) -> int:
        """Digits of the longest answer."""
        raise NotImplementedError

    def num_digits(self, params: TaskParams) -> int:
        """Digits of a prompt's operands in all."""
        return self.size(params)

    def encode_prompt(self, digits: jax.Array, params: TaskParams) -> jax.Array:
        raise NotImplementedError

    def answer_digits(self, digits: jax.Array, params: TaskParams) -> tuple[jax.Array, jax.Array]:
        """(answer digits [answer_length], how many of them are the answer)."""
        raise NotImplementedError

    def check_params(self, params: TaskParams) -> None:
        """Raises a ValueError naming a parameter whose value is not allowed."""
        size = self.size(params)
        if (isinstance(size, bool) or not isinstance(size, (int, np.integer))
                or not 1 <= size <= self.max_size):
            raise ValueError(f"{self.size_name}: {size!r} is not allowed: expected an integer in "
                             f"[1, {self.max_size}] (a prompt's index must fit 32 bits)")
        need = self.answer_length(size) + 1
        mcl = params.max_completion_length
        if isinstance(mcl, bool) or not isinstance(mcl, (int, np.integer)) or 0 < mcl < need or mcl < 0:
            raise ValueError(f"max_completion_length: {mcl!r} is not allowed: {self.env_id} with "
                             f"{self.size_name}={size} has answers of up to {need - 1} digits "
                             f"plus EOS; expected an integer >= {need} (0: {need})")
        if not 0.0 < params.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction: {params.eval_fraction!r} is not allowed: expected a "
                             f"number in (0, 1)")
        if not isinstance(params.split, jax.Array) and params.split not in (0, 1):
            raise ValueError(f"split: {params.split!r} is not allowed: 0 (training prompts) or 1 "
                             f"(held-out prompts)")

    def evaluation_params(self, params: TaskParams) -> TaskParams:
        """The parameters evaluations use: the held-out split."""
        return params.replace(split=1)

    def is_held_out(self, index: jax.Array, params: TaskParams) -> jax.Array:
        """Whether the prompt of this index (its digits read as one number) is held out."""
        return (_mix32(index) % 10_000) < int(round(params.eval_fraction * 10_000))

    def sample_prompt(self, key: jax.Array, params: TaskParams) -> tuple[jax.Array, jax.Array]:
        """(prompt [prompt_length], target [max_completion_length]) of one prompt of
        `params.split`, uniform over that split."""
        n = self.num_digits(params)

        def wrong_split(carry):
            _, index = carry
            return self.is_held_out(index, params) != (params.split == 1)

        def draw(carry):
            key, _ = carry
            key, key_index = jax.random.split(key)
            return key, jax.random.randint(key_index, (), 0, 10 ** n, jnp.int32)

        _, index = jax.lax.while_loop(wrong_split, draw, draw((key, jnp.int32(0))))
        digits = (index // 10 ** jnp.arange(n - 1, -1, -1, dtype=jnp.int32)) % 10
        answer, length = self.answer_digits(digits, params)
        c = self.completion_length(params)
        positions = jnp.arange(c)
        padded = jnp.zeros(c, jnp.int32).at[: answer.shape[0]].set(answer + DIGIT0)
        target = jnp.where(positions < length, padded, jnp.where(positions == length, EOS, PAD))
        return self.encode_prompt(digits, params), target.astype(jnp.int32)

    def parse_prompt(self, text: str, params: TaskParams) -> tuple[np.ndarray, np.ndarray]:
        """(prompt [prompt_length], target [completion_length]) of a prompt typed as text:
        Addition "12+34=" (the "=" optional, operands of up to `digits` digits), Sort and
        Reverse the list's digits ("31412", or the prompt as shown, "S31412="). Raises a
        ValueError saying what is expected."""
        digits = self.parse_digits(text.strip().removesuffix("="), params)
        prompt, target = self.encode_prompt(jnp.asarray(digits), params), None
        answer, length = self.answer_digits(jnp.asarray(digits), params)
        c = self.completion_length(params)
        target = np.full(c, PAD, np.int32)
        target[: int(length)] = np.asarray(answer)[: int(length)] + DIGIT0
        target[int(length)] = EOS
        return np.asarray(prompt), target

    def parse_digits(self, text: str, params: TaskParams) -> list[int]:
        raise NotImplementedError

    def sample_prompts(self, key: jax.Array, params: TaskParams, batch_size: int) -> Prompts:
        """A batch of prompts of `params.split` with their targets."""
        prompts, targets = jax.vmap(self.sample_prompt, in_axes=(0, None))(
            jax.random.split(key, batch_size), params)
        return Prompts(prompts, targets)

    # ------------------------------------------------------------------ verifier and scorers

    @staticmethod
    def completion_mask(completion: jax.Array) -> jax.Array:
        """[C] bool: the completion's tokens, up to and including its first EOS (or an invalid
        token, PAD or BOS, which ends it)."""
        ends = (completion == EOS) | (completion == PAD) | (completion == BOS)
        before = jnp.cumsum(ends) - ends  # ends strictly before each position
        return (before == 0) & (completion != PAD)

    def reward(self, completion: jax.Array, target: jax.Array, params: TaskParams) -> jax.Array:
        """The verifier: 1.0 if `completion` [C] is the answer then EOS (PAD after), else 0.0;
        with `params.partial_credit` the fraction of the answer's positions, EOS included,
        that the completion has right."""
        exact, partial = self.correctness(completion, target)
        return partial if params.partial_credit else exact

    def correctness(self, completion: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(exact match 0/1, fraction of answer positions right) of one completion [C]."""
        kept = jnp.where(self.completion_mask(completion), completion, PAD)
        exact = jnp.all(kept == target).astype(jnp.float32)
        answer = target != PAD  # the answer's digits and its EOS
        right = jnp.sum((kept == target) & answer) / jnp.sum(answer)
        return exact, right.astype(jnp.float32)

    def preference_score(self, completion: jax.Array, target: jax.Array,
                         params: TaskParams) -> jax.Array:
        """The hidden scorer that labels preference pairs: partial credit plus
        `preference_length_bonus` x the completion's length (EOS included)."""
        _, partial = self.correctness(completion, target)
        length = jnp.sum(self.completion_mask(completion))
        return partial + params.preference_length_bonus * length

    def demonstrations(self, key: jax.Array, params: TaskParams, num: int,
                       noise: float = 0.0) -> Prompts:
        """`num` training prompts with their answers; a fraction `noise` (each independently)
        has one answer digit replaced by a different random digit."""
        key_prompts, key_noisy, key_where, key_shift = jax.random.split(key, 4)
        data = self.sample_prompts(key_prompts, params, num)
        lengths = jnp.sum(data.targets != PAD, axis=1) - 1  # answer digits, EOS excluded
        noisy = jax.random.uniform(key_noisy, (num,)) < noise
        where = jnp.floor(jax.random.uniform(key_where, (num,)) * lengths).astype(jnp.int32)
        shift = jax.random.randint(key_shift, (num,), 1, 10)
        rows = jnp.arange(num)
        digit = data.targets[rows, where] - DIGIT0
        corrupted = data.targets.at[rows, where].set(DIGIT0 + (digit + shift) % 10)
        return Prompts(data.prompts, jnp.where(noisy[:, None], corrupted, data.targets))

    # ------------------------------------------------------------------ environment API

    def sequence_length(self, params: TaskParams) -> int:
        return self.prompt_length(params) + self.completion_length(params)

    def action_space(self, params: TaskParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(VOCAB_SIZE)

    def observation_space(self, params: TaskParams | None = None) -> spaces.Box:
        params = self.default_params if params is None else params
        return spaces.Box(0, VOCAB_SIZE - 1, (self.sequence_length(params),), jnp.int32)

    def reset_env(self, key: jax.Array, params: TaskParams):
        prompt, target = self.sample_prompt(key, params)
        tokens = jnp.concatenate([prompt, jnp.full(self.completion_length(params), PAD, jnp.int32)])
        state = TaskState(tokens=tokens, target=target, time=jnp.int32(0))
        return state.tokens, state

    def step_env(self, key: jax.Array, state: TaskState, action, params: TaskParams):
        del key
        action = jnp.asarray(action, jnp.int32)
        action = jnp.where((action >= 0) & (action < VOCAB_SIZE), action, PAD)  # not a token: invalid
        p = self.prompt_length(params)
        tokens = state.tokens.at[p + state.time].set(action)
        time = state.time + 1
        ended = ((action == EOS) | (action == PAD) | (action == BOS)
                 | (time >= self.completion_length(params)))
        state = TaskState(tokens=tokens, target=state.target, time=time)
        reward = jnp.where(ended, self.reward(tokens[p:], state.target, params), 0.0)
        return tokens, state, reward.astype(jnp.float32), ended, {}

    def is_truncated(self, state: TaskState, params: TaskParams) -> jax.Array:
        return jnp.bool_(False)  # every end is the task's: a terminal reward, nothing after

    def is_terminal(self, state: TaskState, params: TaskParams) -> jax.Array:
        return state.time >= self.completion_length(params)

    def get_obs(self, state: TaskState, params=None, key=None) -> jax.Array:
        return state.tokens


class Addition(TokenTask):
    """Two numbers of up to `digits` digits (zero-padded in the prompt): answer their sum."""

    env_id, size_name, params_class = "Addition-v0", "digits", AdditionParams

    def num_digits(self, params):
        return 2 * params.digits

    def prompt_length(self, params):
        return 2 * params.digits + 3  # BOS a + b =

    def answer_length(self, size):
        return size + 1

    def encode_prompt(self, digits, params):
        a, b = digits[: params.digits] + DIGIT0, digits[params.digits:] + DIGIT0
        return jnp.concatenate([jnp.array([BOS]), a, jnp.array([PLUS]), b,
                                jnp.array([EQUALS])]).astype(jnp.int32)

    def parse_digits(self, text, params):
        a, plus, b = text.partition("+")
        limit = 10 ** params.digits
        if not (plus and a.isdigit() and b.isdigit() and int(a) < limit and int(b) < limit):
            raise ValueError(f"prompt {text!r} is not allowed: expected A+B= with A and B of up "
                             f"to {params.digits} digits, e.g. {'1' * params.digits}+{'2' * params.digits}=")
        width = params.digits
        return [int(c) for c in f"{int(a):0{width}d}{int(b):0{width}d}"]

    def answer_digits(self, digits, params):
        size, n = params.digits, params.digits + 1
        powers = 10 ** jnp.arange(size - 1, -1, -1, dtype=jnp.int32)
        total = jnp.sum(digits[:size] * powers) + jnp.sum(digits[size:] * powers)
        full = (total // 10 ** jnp.arange(n - 1, -1, -1, dtype=jnp.int32)) % 10  # zero-padded
        leading_zeros = jnp.sum(jnp.cumprod(full == 0))
        length = jnp.maximum(1, n - leading_zeros)
        index = n - length + jnp.arange(n)  # the answer's digits first, zeros after
        out = jnp.where(index < n, full[jnp.minimum(index, n - 1)], 0)
        return out.astype(jnp.int32), length.astype(jnp.int32)


class Sort(TokenTask):
    """A list of `length` digits: answer it sorted in ascending order."""

    env_id, size_name, params_class, max_size = "Sort-v0", "length", ListParams, 8
    operator = SORT

    def prompt_length(self, params):
        return params.length + 3  # BOS S digits =

    def answer_length(self, size):
        return size

    def encode_prompt(self, digits, params):
        return jnp.concatenate([jnp.array([BOS, self.operator]), digits + DIGIT0,
                                jnp.array([EQUALS])]).astype(jnp.int32)

    def parse_digits(self, text, params):
        text = text.removeprefix(VOCAB[self.operator])
        if not (text.isdigit() and len(text) == params.length):
            raise ValueError(f"prompt {text!r} is not allowed: expected {params.length} digits, "
                             f"e.g. {'31415926'[: params.length]}")
        return [int(c) for c in text]

    def answer_digits(self, digits, params):
        return jnp.sort(digits), jnp.int32(params.length)


class Reverse(Sort):
    """A list of `length` digits: answer it reversed."""

    env_id, operator = "Reverse-v0", REVERSE

    def answer_digits(self, digits, params):
        return digits[::-1], jnp.int32(params.length)


TASK_CLASSES: dict[str, type[TokenTask]] = {"Addition-v0": Addition, "Sort-v0": Sort,
                                            "Reverse-v0": Reverse}


def is_token_task(env: Any) -> bool:
    return isinstance(env, TokenTask)
