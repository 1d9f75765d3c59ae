"""Speed-ups for JAX's CPU backend, in one place; off the CPU backend nothing here is used.

  - `orthogonal`: the orthogonal initialiser through Gram-Schmidt in matrix products instead
    of LAPACK's QR, which XLA-CPU's batched kernels can deadlock on a small thread pool;
  - `dense_dot_general`: Dense layers whose kernel gradient XLA-CPU runs through YNNPACK
    (a custom VJP: reverse-mode differentiation only);
  - `conv`: stride-1 "VALID" convolutions as one matrix product over image patches
    (`PatchConv`): XLA-CPU's convolution and its gradient took 35x longer on MinAtar's grids;
  - `scale_by_adam`: Adam with its bias corrections written as multiplications, so that a
    run computes the same bits on one device as on several;
  - `cholesky`, `solve_lower`, `solve_upper`: Cholesky factors and triangular solves in
    vectorised loops instead of LAPACK's kernels, whose batched triangular solve deadlocked
    in vmapped runs on two CPU devices (50 x 50 systems on a 2-core machine).

`active()` says whether they apply: on the CPU backend, unless turned off with
`use_cpu_speedups(False)` or the environment variable PUREJAXRL_LAB_CPU_SPEEDUPS=0.
Otherwise (GPU, TPU, or turned off) networks are plain flax Dense and Conv layers with
flax's orthogonal initialiser, the optimiser is optax's Adam, and `jax.jvp` and `jax.hessian`
work through every network. Each is decided when a network is traced or an optimiser is
built.

(The lab's other CPU measure, one JAX CPU device per core, is
`purejaxrl_lab.use_cpu_cores()`: it concerns devices, not agents.)
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

_ENABLED = os.environ.get("PUREJAXRL_LAB_CPU_SPEEDUPS", "1") != "0"


def use_cpu_speedups(enabled: bool) -> None:
    """Turns the CPU speed-ups on (the default) or off for agents built from now on."""
    global _ENABLED
    _ENABLED = bool(enabled)


def active() -> bool:
    """Whether agents built now use the CPU speed-ups."""
    return _ENABLED and jax.default_backend() == "cpu"


def dense(features: int, scale: float, name: str | None = None) -> nn.Dense:
    """A Dense layer with orthogonal(scale) kernels and zero biases: the CPU variants when
    `active()`, plain flax otherwise. `name`: flax's (default: automatic, `Dense_<n>`)."""
    if not active():
        return nn.Dense(features, kernel_init=nn.initializers.orthogonal(scale),
                        bias_init=nn.initializers.zeros, name=name)
    return nn.Dense(features, kernel_init=orthogonal(scale), bias_init=nn.initializers.zeros,
                    dot_general=dense_dot_general, name=name)


class PatchConv(nn.Module):
    """A stride-1 "VALID" convolution [..., H, W, C] -> [..., H-kh+1, W-kw+1, features] as one
    matrix product over image patches (im2col), with `nn.Conv`'s parameters (`kernel`
    [kh, kw, C, features], `bias` [features]) drawn the same way.

    On MinAtar's 10x10 grids (batch 128, 3x3 kernel, 16 features) XLA-CPU ran `nn.Conv`'s
    forward and backward pass in 12.6 ms and this product in 0.36 ms.
    """

    features: int
    kernel_size: tuple[int, int]
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        channels = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (kh, kw, channels, self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        h, w = x.shape[-3] - kh + 1, x.shape[-2] - kw + 1
        # Patch features ordered (row offset, column offset, channel), as kernel.reshape reads.
        patches = jnp.concatenate([x[..., i:i + h, j:j + w, :] for i in range(kh)
                                   for j in range(kw)], axis=-1)
        return _matmul(patches, kernel.reshape(kh * kw * channels, self.features)) + bias


def conv(features: int, kernel_size: tuple[int, int], scale: float,
         name: str | None = None) -> nn.Module:
    """A stride-1 "VALID" convolution with orthogonal(scale) kernels and zero biases:
    `PatchConv` when `active()`, flax's `nn.Conv` otherwise (the same parameters)."""
    if not active():
        return nn.Conv(features, kernel_size, padding="VALID",
                       kernel_init=nn.initializers.orthogonal(scale),
                       bias_init=nn.initializers.zeros, name=name)
    return PatchConv(features, tuple(kernel_size), kernel_init=orthogonal(scale), name=name)


def adam(eps: float) -> optax.GradientTransformation:
    """Adam's scaling: `scale_by_adam` when `active()`, else optax's."""
    return scale_by_adam(eps=eps) if active() else optax.scale_by_adam(eps=eps)


def _gram_schmidt(z: jax.Array) -> jax.Array:
    """Q of the QR decomposition of z [n, m] (n >= m) with R's diagonal positive.

    Classical Gram-Schmidt applied twice per column ("twice is enough"), in plain
    matrix products: no LAPACK call.
    """
    m = z.shape[1]

    def column(j, q):
        v = q[:, j]
        earlier = (jnp.arange(m) < j).astype(z.dtype)
        for _ in range(2):
            v = v - q @ ((q.T @ v) * earlier)
        return q.at[:, j].set(v / jnp.sqrt(jnp.sum(v * v)))

    return jax.lax.fori_loop(0, m, column, z)


def orthogonal(scale: float = 1.0):
    """Orthogonal initialiser (Saxe et al. 2014) for Dense kernels [in, out].

    The same distribution and, for the same key, the same matrix (up to rounding)
    as `jax.nn.initializers.orthogonal`: the Gaussian draw is identical and Q is
    that of its QR with R's diagonal made positive (Mezzadri 2007). Q is computed
    with Gram-Schmidt instead of LAPACK's QR because XLA-CPU's batched LAPACK QR
    can deadlock when two run at once on a small thread pool (every vmapped
    `init` on a 2-core machine hung intermittently).
    """

    def init(key, shape, dtype=jnp.float32):
        n_rows, n_cols = math.prod(shape[:-1]), shape[-1]
        z = jax.random.normal(key, (max(n_rows, n_cols), min(n_rows, n_cols)), dtype)
        q = _gram_schmidt(z)
        if n_rows < n_cols:
            q = q.T
        return (scale * q).reshape(shape).astype(dtype)

    return init


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(x: jax.Array, kernel: jax.Array, precision=None) -> jax.Array:
    return jnp.matmul(x, kernel, precision=precision)


def _matmul_fwd(x, kernel, precision):
    return _matmul(x, kernel, precision), (x, kernel)


def _matmul_bwd(precision, residuals, g):
    x, kernel = residuals
    dx = jnp.matmul(g, kernel.T, precision=precision)
    # The kernel's gradient is x^T g, contracted over the batch. Left to itself XLA folds the
    # transpose into the product, and XLA-CPU then runs it through Eigen: YNNPACK only takes
    # products whose left operand is row-major [m, k]. Kept as its own op (the barrier), the
    # transpose costs one small copy and the product runs in YNNPACK, faster
    # (benchmarks/README.md). The same value as autodiff's to float32 rounding.
    x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    dkernel = jnp.matmul(jax.lax.optimization_barrier(x2.T), g2, precision=precision)
    return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def dense_dot_general(x, kernel, dimension_numbers, precision=None, preferred_element_type=None):
    """`nn.Dense`'s product x @ kernel, with a gradient that XLA-CPU runs faster (see
    `_matmul_bwd`). Reverse-mode only: `jax.jvp` through it is not supported."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    if (tuple(lhs_contract) != (x.ndim - 1,) or tuple(rhs_contract) != (0,) or lhs_batch
            or rhs_batch or kernel.ndim != 2 or preferred_element_type is not None):
        return jax.lax.dot_general(x, kernel, dimension_numbers, precision,
                                   preferred_element_type=preferred_element_type)
    return _matmul(x, kernel, precision)


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """`optax.scale_by_adam` (same state, `optax.ScaleByAdamState`), with its bias corrections
    written as multiplications by 1 / (1 - b**t) instead of divisions by (1 - b**t).

    XLA rewrites `x / broadcast(c)` as `x * broadcast(1 / c)` when it compiles for one
    device but not in the SPMD-partitioned program it compiles for several, so optax's form
    made a run's last bits depend on how many devices shared the batch. Written as a
    multiplication, both programs compute the same numbers.
    """

    def init(params):
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32),
                                      mu=jax.tree.map(jnp.zeros_like, params),
                                      nu=jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params
        mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.mu)
        nu = jax.tree.map(lambda g, v: (1 - b2) * (g**2) + b2 * v, updates, state.nu)
        count = optax.safe_increment(state.count)
        inv1, inv2 = 1 / (1 - b1**count), 1 / (1 - b2**count)
        updates = jax.tree.map(
            lambda m, v: (m * inv1.astype(m.dtype)) / (jnp.sqrt(v * inv2.astype(v.dtype)) + eps), mu, nu)
        return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


# --------------------------------------------------------------------------- linear algebra


def cholesky(a: jax.Array) -> jax.Array:
    """L [..., d, d], lower triangular with L L^T = a (symmetric positive definite)."""
    if not active():
        return jnp.linalg.cholesky(a)
    d = a.shape[-1]
    rows = jnp.arange(d)

    def column(j, factor):
        # v_i = a_ij - sum_{k<j} L_ik L_jk (columns >= j of the factor are still 0).
        v = a[..., :, j] - jnp.einsum("...ik,...k->...i", factor, factor[..., j, :])
        pivot = jnp.sqrt(jnp.take(v, j, axis=-1))[..., None]
        return factor.at[..., :, j].set(jnp.where(rows >= j, v / pivot, 0.0))

    return jax.lax.fori_loop(0, d, column, jnp.zeros_like(a))


def solve_lower(factor: jax.Array, b: jax.Array) -> jax.Array:
    """x [..., d] with L x = b, L lower triangular [..., d, d] (forward substitution)."""
    if not active():
        return jax.scipy.linalg.solve_triangular(factor, b[..., None], lower=True)[..., 0]
    d = b.shape[-1]

    def row(i, x):
        value = (jnp.take(b, i, axis=-1) - jnp.einsum("...k,...k->...", factor[..., i, :], x))
        return x.at[..., i].set(value / factor[..., i, i])

    return jax.lax.fori_loop(0, d, row, jnp.zeros_like(b))


def solve_upper(factor: jax.Array, b: jax.Array) -> jax.Array:
    """x [..., d] with L^T x = b, L lower triangular [..., d, d] (backward substitution)."""
    if not active():
        return jax.scipy.linalg.solve_triangular(factor, b[..., None], lower=True, trans="T")[..., 0]
    d = b.shape[-1]

    def row(step, x):
        i = d - 1 - step
        value = (jnp.take(b, i, axis=-1) - jnp.einsum("...k,...k->...", factor[..., :, i], x))
        return x.at[..., i].set(value / factor[..., i, i])

    return jax.lax.fori_loop(0, d, row, jnp.zeros_like(b))
