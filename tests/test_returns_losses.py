import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.common import (approx_kl, clip_fraction, clipped_surrogate_loss, discounted_returns,
                           gae, value_loss)


def gae_reference(r, v, v_next, term, trunc, gamma, lam):
    """Plain-Python GAE, one step at a time from the end."""
    adv = np.zeros_like(r)
    running = 0.0
    for t in reversed(range(len(r))):
        delta = r[t] + gamma * (0.0 if term[t] else v_next[t]) - v[t]
        done = term[t] or trunc[t]
        running = delta + gamma * lam * (0.0 if done else running)
        adv[t] = running
    return adv


def test_gae_matches_python_loop_with_termination_and_truncation():
    rng = np.random.default_rng(0)
    T = 12
    r = rng.normal(size=T).astype(np.float32)
    v = rng.normal(size=T).astype(np.float32)
    v_next = np.append(v[1:], 0.7).astype(np.float32)
    term = np.zeros(T, bool)
    trunc = np.zeros(T, bool)
    term[3] = True  # episode ends in a terminal state: no bootstrap
    trunc[7] = True  # time limit: bootstrap from the final observation's value
    v_next[3] = 123.0  # must be ignored (terminated)
    v_next[7] = 5.0  # V(final observation) of the truncated episode
    adv, target = gae(jnp.array(r), jnp.array(v), jnp.array(v_next), jnp.array(term),
                      jnp.array(trunc), 0.9, 0.8)
    expected = gae_reference(r, v, v_next, term, trunc, 0.9, 0.8)
    np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(target, expected + v, rtol=1e-5, atol=1e-5)
    # Step 7 by hand: delta = r7 + 0.9 * 5.0 - v7, and no trace from step 8 crosses the boundary.
    np.testing.assert_allclose(adv[7], r[7] + 0.9 * 5.0 - v[7], rtol=1e-5)
    # Step 3: delta = r3 - v3 (terminated), no trace from step 4.
    np.testing.assert_allclose(adv[3], r[3] - v[3], rtol=1e-5)


def test_gae_lambda_one_is_discounted_return():
    r = jnp.array([1.0, 0.0, 2.0, 1.0])
    v = jnp.array([0.5, -1.0, 3.0, 0.2])
    v_next = jnp.array([-1.0, 3.0, 0.2, 4.0])
    no = jnp.zeros(4, bool)
    _, target = gae(r, v, v_next, no, no, 0.5, 1.0)
    # G_3 = 1 + 0.5*4 = 3; G_2 = 2 + 0.5*3 = 3.5; G_1 = 0 + 0.5*3.5 = 1.75; G_0 = 1 + 0.5*1.75 = 1.875
    np.testing.assert_allclose(target, [1.875, 1.75, 3.5, 3.0], rtol=1e-6)
    np.testing.assert_allclose(target, discounted_returns(r, jnp.full(4, 0.5), 4.0), rtol=1e-6)


def test_gae_jit_and_vmap_agree_with_eager():
    key = jax.random.key(0)
    r, v, vn = jax.random.normal(key, (3, 16, 5))
    term = jax.random.bernoulli(jax.random.key(1), 0.1, (16, 5))
    trunc = jax.random.bernoulli(jax.random.key(2), 0.1, (16, 5))
    batched = jax.jit(jax.vmap(gae, in_axes=(1, 1, 1, 1, 1, None, None), out_axes=1))
    adv, _ = batched(r, v, vn, term, trunc, 0.99, 0.95)
    for e in range(5):
        eager, _ = gae(r[:, e], v[:, e], vn[:, e], term[:, e], trunc[:, e], 0.99, 0.95)
        np.testing.assert_allclose(adv[:, e], eager, rtol=1e-5, atol=1e-6)


def test_gae_checks_ranks():
    with pytest.raises(AssertionError):
        gae(jnp.zeros((2, 3)), jnp.zeros(3), jnp.zeros(3), jnp.zeros(3, bool), jnp.zeros(3, bool), 0.9, 0.9)


def test_clipped_surrogate_known_values():
    log_ratio = jnp.log(jnp.array([1.5, 0.5, 1.1]))
    adv = jnp.array([1.0, 1.0, -2.0])
    # ratio 1.5, A=+1: min(1.5, 1.2) = 1.2;  ratio 0.5, A=+1: min(0.5, 0.8) = 0.5
    # ratio 1.1, A=-2: min(-2.2, -2.2) = -2.2  -> loss = -(1.2 + 0.5 - 2.2) / 3 = 0.5 / 3
    np.testing.assert_allclose(clipped_surrogate_loss(log_ratio, adv, 0.2), 0.5 / 3, rtol=1e-6)


def test_value_loss_known_values():
    v = jnp.array([2.0, 0.0])
    v_old = jnp.array([1.0, 0.0])
    target = jnp.array([1.0, 1.0])
    # unclipped: (2-1)^2 = 1, (0-1)^2 = 1 -> 0.5 * mean = 0.5
    np.testing.assert_allclose(value_loss(v, v_old, target, 0.2, clip=False), 0.5)
    # clipped: v_c = [1.2, 0.0]; max(1, 0.04) = 1, max(1, 1) = 1 -> 0.5
    np.testing.assert_allclose(value_loss(v, v_old, target, 0.2), 0.5)
    # target 2.0 for the first: unclipped 0, clipped (1.2-2)^2 = 0.64 -> 0.5 * (0.64 + 1) / 2 = 0.41
    np.testing.assert_allclose(value_loss(v, v_old, jnp.array([2.0, 1.0]), 0.2), 0.41, rtol=1e-6)


def test_kl_and_clip_fraction():
    log_ratio = jnp.log(jnp.array([1.0, 1.5]))
    # (rho - 1) - log rho: 0 and 0.5 - log 1.5
    np.testing.assert_allclose(approx_kl(log_ratio), (0.5 - np.log(1.5)) / 2, rtol=1e-6)
    np.testing.assert_allclose(clip_fraction(log_ratio, 0.2), 0.5)


def test_adam_matches_optax():
    """Our Adam (bias corrections as multiplications by 1 / (1 - b**t)) is optax's Adam to
    float32 rounding, with optax's state, over several steps with per-leaf shapes."""
    import optax

    from agents.common.cpu import scale_by_adam

    params = {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)}
    ours, theirs = scale_by_adam(eps=1e-5), optax.scale_by_adam(eps=1e-5)
    s1, s2 = ours.init(params), theirs.init(params)
    assert jax.tree.structure(s1) == jax.tree.structure(s2)
    update1, update2 = jax.jit(ours.update), jax.jit(theirs.update)  # as in training
    key = jax.random.key(0)
    for _ in range(5):
        key, k = jax.random.split(key)
        grads = jax.tree.map(lambda p: jax.random.normal(k, p.shape), params)
        u1, s1 = update1(grads, s1)
        u2, s2 = update2(grads, s2)
        for a, b in zip(jax.tree.leaves((u1, s1)), jax.tree.leaves((u2, s2))):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # Step 1 by hand: mu = 0.1 g and nu = 0.001 g^2, bias-corrected by 1 - 0.9 and 1 - 0.999
    # (in float32: 0.100000024 and 0.0009999871), so the update is mu_hat / (sqrt(nu_hat) +
    # 1e-5), about sign(g): 0.9999883 for g = 2 and -0.9999733 for g = -0.5.
    f = np.float32
    g = {"w": jnp.full((3, 4), 2.0), "b": jnp.full(4, -0.5)}
    u, _ = update1(g, ours.init(params))
    for name, value in (("w", f(2.0)), ("b", f(-0.5))):
        mu_hat = f(0.1) * value / (f(1) - f(0.9))
        nu_hat = f(0.001) * value * value / (f(1) - f(0.999))
        np.testing.assert_allclose(u[name], mu_hat / (np.sqrt(nu_hat) + f(1e-5)), rtol=1e-6)
