"""The losses of RL on sequences on known values (arithmetic written out), under jit and vmap."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.common import bradley_terry_loss, dpo_loss, group_advantages, grpo_loss
from agents.common.sequence_losses import k3_kl

log_sigmoid = lambda x: -math.log1p(math.exp(-x))  # noqa: E731


def test_group_advantages_known_values():
    # One group [1, 2, 3]: mean 2, std with Bessel's correction sqrt(((1)^2 + 0 + 1^2) / 2) = 1.
    np.testing.assert_allclose(group_advantages(jnp.array([1.0, 2.0, 3.0]), 3),
                               np.array([-1, 0, 1]) / (1 + 1e-4), rtol=1e-6)
    # Two groups of 2: [0, 1] (mean 0.5, std sqrt(0.5)) and [5, 5] (std 0: advantages 0).
    r = jnp.array([0.0, 1.0, 5.0, 5.0])
    s = math.sqrt(0.5)
    np.testing.assert_allclose(group_advantages(r, 2), [-0.5 / (s + 1e-4), 0.5 / (s + 1e-4), 0, 0],
                               rtol=1e-6)
    # "none": only the group mean subtracted; "batch": divided by the std of all four rewards.
    np.testing.assert_allclose(group_advantages(r, 2, scale="none"), [-0.5, 0.5, 0, 0])
    batch_std = np.std([0, 1, 5, 5], ddof=1)
    np.testing.assert_allclose(group_advantages(r, 2, scale="batch"),
                               np.array([-0.5, 0.5, 0, 0]) / (batch_std + 1e-4), rtol=1e-6)


def test_group_advantages_bad_input():
    with pytest.raises(ValueError, match="group_size=3 is not allowed.*dividing the batch of 4"):
        group_advantages(jnp.zeros(4), 3)
    with pytest.raises(ValueError, match="group_size=1 is not allowed"):
        group_advantages(jnp.zeros(4), 1)
    with pytest.raises(ValueError, match="unknown scale 'groups'; closest: 'group'"):
        group_advantages(jnp.zeros(4), 2, scale="groups")
    with pytest.raises(AssertionError):  # rank checked
        group_advantages(jnp.zeros((2, 2)), 2)


def grpo_case():
    # Two sequences of three tokens; the second has two real tokens.
    logp = jnp.log(jnp.array([[0.5, 0.5, 0.5], [0.2, 0.9, 0.9]]))
    old = jnp.log(jnp.array([[0.25, 0.5, 0.5], [0.4, 0.9, 0.5]]))
    ref = jnp.log(jnp.array([[0.5, 0.25, 0.5], [0.2, 0.9, 0.9]]))
    adv = jnp.array([1.0, -1.0])
    mask = jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    return logp, old, ref, adv, mask


def test_grpo_loss_known_values():
    logp, old, ref, adv, mask = grpo_case()
    # Ratios: [[2, 1, 1], [0.5, 1, 1.8]]. With epsilon 0.2, A = +1 for row 0:
    #   -min(2 * 1, 1.2 * 1) = -1.2; -1; -1.   Row 1, A = -1:
    #   -min(0.5 * -1, 0.8 * -1) = 0.8; -min(-1, -1) = 1; (masked).
    per_token = np.array([[-1.2, -1.0, -1.0], [0.8, 1.0, 0.0]])
    m = np.asarray(mask)
    # dapo / bnpo: masked sum / masked count = (-3.2 + 1.8) / 5.
    assert float(grpo_loss(logp, old, ref, adv, mask)) == pytest.approx(-1.4 / 5, rel=1e-6)
    assert float(grpo_loss(logp, old, ref, adv, mask, loss_type="bnpo")) == pytest.approx(-1.4 / 5, rel=1e-6)
    # grpo: mean of per-sequence means = (-3.2 / 3 + 1.8 / 2) / 2.
    assert float(grpo_loss(logp, old, ref, adv, mask, loss_type="grpo")) == pytest.approx(
        (-3.2 / 3 + 1.8 / 2) / 2, rel=1e-6)
    # dr_grpo: masked sum / (B x max_completion_length) = -1.4 / (2 x 4).
    assert float(grpo_loss(logp, old, ref, adv, mask, loss_type="dr_grpo",
                           max_completion_length=4)) == pytest.approx(-1.4 / 8, rel=1e-6)
    # epsilon_high 1.5 lets the first token's ratio 2 count up to 2.5: -min(2, 2.5) = -2.
    high = float(grpo_loss(logp, old, ref, adv, mask, epsilon_high=1.5))
    assert high == pytest.approx((-1.4 - 0.8) / 5, rel=1e-6)
    # beta: k3 on row 0 token 1, ref - logp = log(0.5): 0.5 - log 0.5 - 1 = log 2 - 0.5; others 0.
    k3 = math.log(2) - 0.5
    assert float(grpo_loss(logp, old, ref, adv, mask, beta=0.1)) == pytest.approx(
        (-1.4 + 0.1 * k3) / 5, rel=1e-6)
    assert (np.asarray(per_token) * m).sum() == pytest.approx(-1.4)


def test_grpo_loss_jit_vmap_and_bad_input():
    logp, old, ref, adv, mask = grpo_case()
    f = lambda *a: grpo_loss(*a, beta=0.04, loss_type="grpo")  # noqa: E731
    eager = f(logp, old, ref, adv, mask)
    assert float(jax.jit(f)(logp, old, ref, adv, mask)) == pytest.approx(float(eager), rel=1e-6)
    batched = jax.vmap(f)(*(jnp.stack([x, x]) for x in (logp, old, ref, adv, mask)))
    np.testing.assert_allclose(batched, [eager, eager], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown loss_type 'drgrpo'; closest: 'dr_grpo'"):
        grpo_loss(logp, old, ref, adv, mask, loss_type="drgrpo")
    with pytest.raises(AssertionError):
        grpo_loss(logp[0], old, ref, adv, mask)


def test_k3_is_zero_at_the_reference_and_positive_elsewhere():
    logp = jnp.log(jnp.array([0.5, 0.25]))
    np.testing.assert_allclose(k3_kl(logp, logp), [0.0, 0.0], atol=1e-7)
    # ref / p = 2: 2 - log 2 - 1.
    assert float(k3_kl(jnp.log(0.25), jnp.log(0.5))) == pytest.approx(1 - math.log(2), rel=1e-6)


def test_dpo_loss_known_values():
    # d = (-1 - -2) - (-3 - -2.5) = 1 + 0.5 = 1.5
    c, r, rc, rr = (jnp.array([v]) for v in (-1.0, -3.0, -2.0, -2.5))
    beta, s = 0.5, 0.1
    sig = dpo_loss(c, r, rc, rr, beta=beta)
    assert float(sig[0]) == pytest.approx(-log_sigmoid(0.75), rel=1e-6)
    smooth = dpo_loss(c, r, rc, rr, beta=beta, label_smoothing=s)
    assert float(smooth[0]) == pytest.approx(-(1 - s) * log_sigmoid(0.75) - s * log_sigmoid(-0.75),
                                             rel=1e-6)
    # ipo: (1.5 - 1 / (2 x 0.5))^2 = 0.25
    assert float(dpo_loss(c, r, rc, rr, beta=beta, loss_type="ipo")[0]) == pytest.approx(0.25)
    # hinge: relu(1 - 0.75) = 0.25
    assert float(dpo_loss(c, r, rc, rr, beta=beta, loss_type="hinge")[0]) == pytest.approx(0.25)
    robust = dpo_loss(c, r, rc, rr, beta=beta, loss_type="robust", label_smoothing=s)
    assert float(robust[0]) == pytest.approx(
        (-(1 - s) * log_sigmoid(0.75) + s * log_sigmoid(-0.75)) / (1 - 2 * s), rel=1e-6)
    # per pair, under jit and vmap
    pairs = [jnp.array([-1.0, -2.0]), jnp.array([-3.0, -1.0]), jnp.array([-2.0, -2.0]),
             jnp.array([-2.5, -2.0])]
    out = jax.jit(lambda *a: dpo_loss(*a, beta=beta))(*pairs)
    assert out.shape == (2,) and float(out[1]) == pytest.approx(-log_sigmoid(-0.5), rel=1e-6)
    v = jax.vmap(lambda *a: dpo_loss(*a, beta=beta))(*(x[:, None] for x in pairs))
    np.testing.assert_allclose(v[:, 0], out, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown loss_type 'sigmod'.*'sigmoid'"):
        dpo_loss(c, r, rc, rr, loss_type="sigmod")


def test_bradley_terry_loss_known_values():
    chosen, rejected = jnp.array([2.0, 0.0]), jnp.array([1.0, 1.0])
    # diffs 1 and -1: mean(-log sigmoid(1), -log sigmoid(-1))
    expected = (-log_sigmoid(1.0) - log_sigmoid(-1.0)) / 2
    assert float(bradley_terry_loss(chosen, rejected)) == pytest.approx(expected, rel=1e-6)
    # margin 0.5: diffs 0.5 and -1.5
    expected_margin = (-log_sigmoid(0.5) - log_sigmoid(-1.5)) / 2
    assert float(bradley_terry_loss(chosen, rejected, margin=0.5)) == pytest.approx(expected_margin, rel=1e-6)
    # centring: mean((2 + 1)^2, (0 + 1)^2) = 5, times 0.01
    assert float(bradley_terry_loss(chosen, rejected, center_coef=0.01)) == pytest.approx(
        expected + 0.05, rel=1e-6)
    assert float(jax.jit(bradley_terry_loss)(chosen, rejected)) == pytest.approx(expected, rel=1e-6)
