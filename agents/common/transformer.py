"""A small decoder-only transformer for token tasks: causal self-attention, pre-LayerNorm,
learned or rotary positions, an optional value head; batched generation in `lax.scan` with a
key-value cache; per-token log-probs of given completions.

    model = Transformer(vocab_size=17, config=ModelConfig())
    params = model.init(key, jnp.zeros((1, 8), jnp.int32))
    logits, values, _ = model.apply(params, tokens)                 # [B, T, V], [B, T]
    out = generate(model, params, key, prompts, 5, temperature=1.0) # Generation [B, 5]
    logp = completion_log_probs(model, params, prompts, out.completions)

Vaswani et al. 2017 (attention), Radford et al. 2019 (pre-LayerNorm decoder), Su et al. 2021
(rotary positions).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from agents.common.config import check_choice, check_positive_int, invalid, normalize_fields

POSITIONS = ("learned", "rotary")
NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of the transformer (all fix shapes)."""

    SHAPE_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"num_layers", "num_heads", "d_model", "d_ff", "max_length", "positions"})

    num_layers: int = 2
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads; must divide d_model."""
    d_model: int = 64
    """Width of the residual stream."""
    d_ff: int = 256
    """Hidden width of each block's MLP."""
    max_length: int = 32
    """Longest sequence (prompt and completion) the model reads: the size of the learned
    position table and of the key-value cache."""
    positions: str = "learned"
    """Position encoding: learned (an embedding table) or rotary (rotations of queries and keys)."""

    def __post_init__(self):
        normalize_fields(self)
        check_positive_int(self, "num_layers", "num_heads", "d_model", "d_ff", "max_length")
        check_choice(self, "positions", POSITIONS)
        if self.d_model % self.num_heads:
            raise invalid("model.num_heads", self.num_heads,
                          f"must divide model.d_model = {self.d_model}")
        if self.positions == "rotary" and (self.d_model // self.num_heads) % 2:
            raise invalid("model.d_model", self.d_model, "rotary positions need an even width per head")


class Cache(NamedTuple):
    keys: jax.Array  # [num_layers, B, max_length, H, head_dim]
    values: jax.Array  # [num_layers, B, max_length, H, head_dim]


def init_cache(config: ModelConfig, batch_size: int) -> Cache:
    """An empty key-value cache for `batch_size` sequences."""
    shape = (config.num_layers, batch_size, config.max_length, config.num_heads,
             config.d_model // config.num_heads)
    return Cache(jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32))


def rotate(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rotary position encoding of x [B, T, H, D] at positions [T] (Su et al. 2021): each pair
    of features (i, i + D/2) rotated by the angle position / 10000^(2i/D)."""
    half = x.shape[-1] // 2
    freq = 1.0 / (10_000.0 ** (jnp.arange(half) / half))
    angle = positions[:, None].astype(jnp.float32) * freq  # [T, D/2]
    cos, sin = jnp.cos(angle)[None, :, None], jnp.sin(angle)[None, :, None]
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


class Block(nn.Module):
    """x + attention(LayerNorm(x)), then x + MLP(LayerNorm(x))."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x, positions, keys, values, index):
        """x [B, T, d]; positions [T]; keys/values [B, S, H, Dh]: the cache of this layer, or
        None (S = T: attend within x). Returns (x, keys, values)."""
        c = self.config
        b, t, _ = x.shape
        head_dim = c.d_model // c.num_heads
        h = nn.LayerNorm()(x)
        qkv = nn.Dense(3 * c.d_model, name="qkv")(h).reshape(b, t, 3, c.num_heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if c.positions == "rotary":
            q, k = rotate(q, positions), rotate(k, positions)
        if keys is None:
            keys, values = k, v
            key_positions = positions
        else:
            keys = jax.lax.dynamic_update_slice_in_dim(keys, k, index, axis=1)
            values = jax.lax.dynamic_update_slice_in_dim(values, v, index, axis=1)
            key_positions = jnp.arange(keys.shape[1])
        scores = jnp.einsum("bthd,bshd->bhts", q, keys) / jnp.sqrt(head_dim)
        causal = key_positions[None, :] <= positions[:, None]  # [T, S]
        weights = jax.nn.softmax(jnp.where(causal, scores, NEG_INF), axis=-1)
        attended = jnp.einsum("bhts,bshd->bthd", weights, values).reshape(b, t, c.d_model)
        x = x + nn.Dense(c.d_model, name="out")(attended)
        h = nn.LayerNorm()(x)
        x = x + nn.Dense(c.d_model)(nn.gelu(nn.Dense(c.d_ff)(h)))
        return x, keys, values


class Transformer(nn.Module):
    """Decoder-only transformer: `apply(params, tokens [B, T], cache=None, index=0) ->
    (logits [B, T, V], values [B, T] or None, cache)`.

    Without a cache the tokens are positions 0..T-1 and attend causally among themselves.
    With a cache they are positions index..index+T-1: their keys and values are written into
    the cache, and they attend to every cached position up to their own.
    """

    vocab_size: int
    config: ModelConfig
    value_head: bool = False

    @nn.compact
    def __call__(self, tokens, cache: Cache | None = None, index=0):
        c = self.config
        positions = index + jnp.arange(tokens.shape[1])
        x = nn.Embed(self.vocab_size, c.d_model, name="embed")(tokens)
        if c.positions == "learned":
            x = x + nn.Embed(c.max_length, c.d_model, name="position")(positions)[None]
        new_keys, new_values = [], []
        for layer in range(c.num_layers):
            keys = None if cache is None else cache.keys[layer]
            values = None if cache is None else cache.values[layer]
            x, keys, values = Block(c, name=f"block_{layer}")(x, positions, keys, values, index)
            new_keys.append(keys)
            new_values.append(values)
        h = nn.LayerNorm(name="final_norm")(x)
        logits = nn.Dense(self.vocab_size, name="logits")(h)
        value = nn.Dense(1, name="value")(h)[..., 0] if self.value_head else None
        cache = None if cache is None else Cache(jnp.stack(new_keys), jnp.stack(new_values))
        return logits, value, cache


def init_params(model: Transformer, key: jax.Array):
    return model.init(key, jnp.zeros((1, 2), jnp.int32))


def masked_logits(logits: jax.Array, banned: tuple[int, ...], temperature=1.0) -> jax.Array:
    """Logits / temperature with the `banned` tokens (e.g. PAD, BOS) impossible."""
    logits = logits / temperature
    if banned:
        logits = logits.at[..., jnp.asarray(banned)].set(NEG_INF)
    return logits


def sample_token(key: jax.Array, logits: jax.Array, greedy, top_k: int = 0) -> jax.Array:
    """A token per row of logits [B, V]: the most likely (`greedy`), else sampled from the
    `top_k` most likely (0: all)."""
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, NEG_INF, logits)
    sampled = jax.random.categorical(key, logits)
    return jnp.where(greedy, jnp.argmax(logits, axis=-1), sampled).astype(jnp.int32)


class Generation(NamedTuple):
    completions: jax.Array  # [B, C] int32: tokens up to and including EOS, PAD after
    log_probs: jax.Array  # [B, C] log-probs of the tokens under the tempered policy (0 past the end)
    mask: jax.Array  # [B, C] float32: 1 for the completion's tokens (EOS included)


def generate(model: Transformer, params, key: jax.Array, prompts: jax.Array, length: int, *,
             eos: int, pad: int, banned: tuple[int, ...] = (), temperature=1.0, top_k: int = 0,
             greedy=False, use_cache: bool = True) -> Generation:
    """Completions of `prompts` [B, P] of at most `length` tokens, in one `lax.scan`.

    With `use_cache` the prompt is read once (its keys and values cached) and each step reads
    one token; without, each step reruns the whole sequence so far (the same tokens and
    log-probs, slower: a check of the cache). A completion ends at its first `eos`; the
    positions after it hold `pad` and log-prob 0. `greedy` may be a traced bool.
    """
    b, p = prompts.shape
    config = model.config
    if p + length > config.max_length:
        raise ValueError(f"model.max_length={config.max_length} is too short: prompts of {p} "
                         f"tokens and completions of {length} need {p + length}")
    tokens = jnp.concatenate([prompts, jnp.full((b, length), pad, jnp.int32)], axis=1)
    if use_cache:
        logits, _, cache = model.apply(params, prompts, init_cache(config, b), 0)
        last = logits[:, -1]
    else:
        cache, last = None, model.apply(params, prompts)[0][:, -1]

    def step(carry, key):
        tokens, cache, last, t, ended = carry
        logits = masked_logits(last, banned, temperature)
        token = sample_token(key, logits, greedy, top_k)
        log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), token[:, None], axis=1)[:, 0]
        live = ~ended
        token = jnp.where(live, token, pad)
        tokens = jax.lax.dynamic_update_slice_in_dim(tokens, token[:, None], p + t, axis=1)
        if use_cache:
            logits, _, cache = model.apply(params, token[:, None], cache, p + t)
            last = logits[:, 0]
        else:  # the whole sequence again; causal attention ignores the padding after p + t
            last = jnp.take(model.apply(params, tokens)[0], p + t, axis=1)
        out = (token, jnp.where(live, log_prob, 0.0), live.astype(jnp.float32))
        return (tokens, cache, last, t + 1, ended | (token == eos)), out

    init = (tokens, cache, last, jnp.int32(0), jnp.zeros(b, bool))
    _, (completions, log_probs, mask) = jax.lax.scan(step, init, jax.random.split(key, length))
    return Generation(completions.T, log_probs.T, mask.T)


def completion_log_probs(model: Transformer, params, prompts: jax.Array, completions: jax.Array, *,
                         banned: tuple[int, ...] = (), temperature=1.0,
                         with_values: bool = False):
    """Per-token log-probs [B, C] of `completions` [B, C] after `prompts` [B, P] under the
    tempered policy (one forward pass over [B, P + C]); the caller masks positions past the
    end. With `with_values` also the value head's values [B, C] of the states the tokens were
    chosen in (positions P - 1 .. P + C - 2)."""
    p, c = prompts.shape[1], completions.shape[1]
    logits, values, _ = model.apply(params, jnp.concatenate([prompts, completions], axis=1))
    logits = masked_logits(logits[:, p - 1: p + c - 1], banned, temperature)
    log_probs = jnp.take_along_axis(jax.nn.log_softmax(logits), completions[..., None], axis=-1)[..., 0]
    if with_values:
        return log_probs, values[:, p - 1: p + c - 1]
    return log_probs


def token_kl(model: Transformer, params, ref_params, prompts: jax.Array, completions: jax.Array,
             mask: jax.Array, *, banned: tuple[int, ...] = ()) -> jax.Array:
    """Per sequence [B]: the sum over the completion's positions of the exact KL(pi(.|prefix)
    || pi_ref(.|prefix)) between the two models' next-token distributions."""
    tokens = jnp.concatenate([prompts, completions], axis=1)
    p, c = prompts.shape[1], completions.shape[1]

    def log_dist(params):
        logits = model.apply(params, tokens)[0][:, p - 1: p + c - 1]
        return jax.nn.log_softmax(masked_logits(logits, banned))

    log_pi, log_ref = log_dist(params), log_dist(ref_params)
    kl = jnp.sum(jnp.exp(log_pi) * jnp.where(jnp.exp(log_pi) > 0, log_pi - log_ref, 0.0), axis=-1)
    return jnp.sum(kl * mask, axis=-1)
