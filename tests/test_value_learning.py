"""Targets and losses of the value-based and off-policy agents, against known values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents.common import (
    epsilon_greedy,
    huber_loss,
    linear_epsilon,
    n_step_return,
    polyak,
    q_lambda_targets,
    q_learning_target,
    sac_actor_loss,
    sac_critic_target,
    squashed_gaussian,
    squashed_log_prob,
    td_loss,
    temperature_loss,
)

F, T = False, True


def test_double_q_target_known_values():
    q_online = jnp.array([1.0, 3.0, 2.0])  # picks action 1
    q_target = jnp.array([10.0, 4.0, 7.0])  # values action 1 at 4 (its own max is 10)
    # double: 0.5 + 0.9 * q_target[argmax q_online] = 0.5 + 0.9 * 4 = 4.1
    assert float(q_learning_target(jnp.float32(0.5), jnp.float32(0.9), q_target, q_online)) == (
        pytest.approx(4.1))
    # plain DQN: 0.5 + 0.9 * max q_target = 0.5 + 9 = 9.5
    assert float(q_learning_target(jnp.float32(0.5), jnp.float32(0.9), q_target)) == (
        pytest.approx(9.5))
    # past a termination (discount 0) the target is the reward alone
    assert float(q_learning_target(jnp.float32(0.5), jnp.float32(0.0), q_target)) == 0.5


def test_target_functions_check_ranks():
    with pytest.raises(AssertionError):
        q_learning_target(jnp.zeros(2), jnp.float32(0.9), jnp.zeros(3))
    with pytest.raises(AssertionError):
        n_step_return(jnp.zeros((2, 3)), jnp.zeros((2, 3), bool), jnp.zeros((2, 3), bool), 0.9)


def test_n_step_return_within_an_episode():
    r = jnp.array([1.0, 2.0, 3.0])
    ret, discount = n_step_return(r, jnp.array([F, F, F]), jnp.array([F, F, F]), 0.5)
    # 1 + 0.5 * 2 + 0.25 * 3 = 2.75, bootstrapped with 0.5**3 = 0.125
    assert float(ret) == pytest.approx(2.75) and float(discount) == pytest.approx(0.125)


def test_n_step_return_stops_at_a_termination():
    r = jnp.array([1.0, 2.0, 3.0])
    ret, discount = n_step_return(r, jnp.array([F, T, F]), jnp.array([F, F, F]), 0.5)
    # the episode ends at the second step: 1 + 0.5 * 2 = 2, nothing bootstrapped, the third
    # reward (next episode) unused
    assert float(ret) == pytest.approx(2.0) and float(discount) == 0.0


def test_n_step_return_bootstraps_at_a_truncation():
    r = jnp.array([1.0, 2.0, 3.0])
    ret, discount = n_step_return(r, jnp.array([F, F, F]), jnp.array([F, T, F]), 0.5)
    # cut by a time limit at the second step: 1 + 0.5 * 2 = 2, bootstrapped with 0.5**2 from
    # the final observation of that step (the replay buffer's next_obs)
    assert float(ret) == pytest.approx(2.0) and float(discount) == pytest.approx(0.25)
    one, d1 = n_step_return(r[:1], jnp.array([T]), jnp.array([F]), 0.5)
    assert float(one) == 1.0 and float(d1) == 0.0


def test_huber_polyak_and_td_loss():
    x = jnp.array([-3.0, -0.5, 0.0, 0.2, 2.0])
    np.testing.assert_allclose(huber_loss(x), optax.huber_loss(x, delta=1.0), rtol=1e-6)
    # 0.5 * 0.5**2 = 0.125 inside the threshold; 1 * (3 - 0.5) = 2.5 outside
    np.testing.assert_allclose(huber_loss(jnp.array([0.5, 3.0])), [0.125, 2.5])
    q = jnp.array([1.0, 4.0])
    assert float(td_loss(q, jnp.int32(1), jnp.float32(1.0), huber=False)) == 4.5  # 0.5 * 3**2
    assert float(td_loss(q, jnp.int32(1), jnp.float32(1.0), huber=True)) == 2.5  # 3 - 0.5
    online, target = {"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([3.0, 6.0])}
    # 0.25 * 1 + 0.75 * 3 = 2.5; 0.25 * 2 + 0.75 * 6 = 5
    np.testing.assert_allclose(polyak(online, target, 0.25)["w"], [2.5, 5.0])
    np.testing.assert_array_equal(polyak(online, target, 1.0)["w"], online["w"])


def _q_lambda_loop(r, q_next, terminated, truncated, gamma, lam):
    """Plain-Python recursion of the Q(lambda) targets, written from the definition."""
    n = len(r)
    targets = [0.0] * n
    following = q_next[-1]
    for t in reversed(range(n)):
        if terminated[t]:
            g = r[t]
        elif truncated[t] or t == n - 1:
            g = r[t] + gamma * q_next[t]
        else:
            g = r[t] + gamma * ((1 - lam) * q_next[t] + lam * following)
        targets[t] = g
        following = g
    return targets


@pytest.mark.parametrize("lam", [0.0, 0.65, 1.0])
def test_q_lambda_targets_match_a_python_loop(lam):
    rng = np.random.default_rng(0)
    n = 12
    r = rng.normal(size=n).astype(np.float32)
    q_next = rng.normal(size=n).astype(np.float32)
    terminated = np.zeros(n, bool); terminated[4] = True
    truncated = np.zeros(n, bool); truncated[8] = True
    ours = q_lambda_targets(jnp.asarray(r), jnp.asarray(q_next), jnp.asarray(terminated),
                            jnp.asarray(truncated), 0.9, lam)
    expected = _q_lambda_loop(r, q_next, terminated, truncated, 0.9, lam)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    if lam == 0.0:  # one-step Q-learning targets
        np.testing.assert_allclose(ours, r + 0.9 * (1 - terminated) * q_next, rtol=1e-6)


def test_q_lambda_one_is_the_discounted_return_within_an_episode():
    r = jnp.array([1.0, 1.0, 1.0])
    q_next = jnp.array([5.0, 6.0, 7.0])
    flags = jnp.zeros(3, bool)
    # 1 + 0.5 * (1 + 0.5 * (1 + 0.5 * 7)) = 1 + 0.5 + 0.25 + 0.125 * 7 = 2.625
    assert float(q_lambda_targets(r, q_next, flags, flags, 0.5, 1.0)[0]) == pytest.approx(2.625)


def test_epsilon_schedule_and_greedy():
    assert float(linear_epsilon(0, 1.0, 0.05, 100)) == 1.0
    assert float(linear_epsilon(50, 1.0, 0.05, 100)) == pytest.approx(0.525)  # halfway
    assert float(linear_epsilon(500, 1.0, 0.05, 100)) == pytest.approx(0.05)
    q = jnp.tile(jnp.array([0.0, 1.0, 0.5]), (4000, 1))
    np.testing.assert_array_equal(epsilon_greedy(jax.random.key(0), q, 0.0), 1)
    actions = epsilon_greedy(jax.random.key(0), q, 0.3)
    # P(action 1) = 0.7 + 0.3 / 3 = 0.8; P(action 0) = 0.1
    assert abs(float((actions == 1).mean()) - 0.8) < 0.03
    assert abs(float((actions == 0).mean()) - 0.1) < 0.03


def test_squashed_log_prob_against_a_direct_computation():
    mean = jnp.array([[0.3, -1.2], [2.0, 0.0]])
    log_std = jnp.array([[-0.5, 0.1], [0.0, -2.0]])
    action, log_prob = squashed_gaussian(jax.random.key(1), mean, log_std)
    # Invert the squash and compute the density directly: N(u) / prod(1 - tanh(u)^2).
    u = jnp.arctanh(action)
    std = np.exp(np.asarray(log_std))
    z = (np.asarray(u) - np.asarray(mean)) / std
    gaussian = -0.5 * z**2 - np.log(std) - 0.5 * math.log(2 * math.pi)
    direct = (gaussian - np.log(1 - np.tanh(np.asarray(u)) ** 2)).sum(-1)
    np.testing.assert_allclose(log_prob, direct, rtol=1e-4, atol=1e-4)
    assert np.all(np.abs(action) < 1)
    # Finite where tanh(u) rounds to 1 (the stable form of log(1 - tanh^2)).
    assert np.isfinite(float(squashed_log_prob(jnp.array([30.0]), jnp.array([30.0]),
                                               jnp.array([0.0]))))


def test_sac_losses_known_values():
    # target: r + discount * (min(q) - alpha * log_prob) = 1 + 0.9 * (2 - 0.2 * (-1.5)) = 3.07
    target = sac_critic_target(jnp.float32(1.0), jnp.float32(0.9), jnp.array([2.0, 3.0]),
                               jnp.float32(-1.5), jnp.float32(0.2))
    assert float(target) == pytest.approx(3.07)
    # actor: alpha * log_prob - min(q) = 0.2 * (-1.5) - 2 = -2.3
    assert float(sac_actor_loss(jnp.array([2.0, 3.0]), jnp.float32(-1.5), jnp.float32(0.2))) == (
        pytest.approx(-2.3))
    # temperature: -log_alpha * (log_prob + target_entropy) = -(-1) * (-1.5 + -1) = -2.5; its
    # gradient in log_alpha is -(log_prob + target_entropy) = 2.5 > 0: gradient descent lowers
    # alpha while the entropy 1.5 is above the target -1, and raises it below.
    log_alpha = jnp.float32(-1.0)
    assert float(temperature_loss(log_alpha, jnp.float32(-1.5), -1.0)) == pytest.approx(-2.5)
    assert float(jax.grad(temperature_loss)(log_alpha, jnp.float32(-1.5), -1.0)) == (
        pytest.approx(2.5))
    assert float(jax.grad(temperature_loss)(log_alpha, jnp.float32(3.0), -1.0)) < 0
