"""Targets and losses of value-based and off-policy agents (DQN, PQN, SAC).

Small pure functions, unbatched: callers vmap over the batch. Ranks are checked first
and the names follow rlax: `q_tm1` values at the state acted in, `a_tm1` the action
taken there, `r_t` the reward received, `discount_t` the discount to the next state,
`q_t` values at the next state.

Episode ends keep termination and truncation apart, as `gae` does: a terminated
episode has no future (discount 0); a truncated one (a time limit) is bootstrapped from
the observation it really reached (`info["final_observation"]`), and no return crosses
into the next episode.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


# --------------------------------------------------------------------------- Q-learning


def q_learning_target(
    r_t: jax.Array, discount_t: jax.Array, q_t_value: jax.Array,
    q_t_selector: jax.Array | None = None,
) -> jax.Array:
    """r_t + discount_t * q_t_value[argmax_a q_t_selector[a]].

    With `q_t_selector=None` the action is chosen by `q_t_value` itself (Mnih et al.
    2015: r + discount * max_a Q_target(s', a)). Double Q-learning (van Hasselt et al.
    2016) passes the online network's values as the selector and the target network's as
    the value: r + discount * Q_target(s', argmax_a Q_online(s', a)).

    Args:
      r_t: reward (for n-step targets, the discounted sum of n rewards) [].
      discount_t: discount to the bootstrap state (gamma**n, 0 past a termination) [].
      q_t_value: values at the bootstrap state [num_actions].
      q_t_selector: values that pick the action [num_actions], or None.

    Returns:
      the target [], with no gradient through it.
    """
    chex.assert_rank([r_t, discount_t, q_t_value], [0, 0, 1])
    if q_t_selector is None:
        q_t_selector = q_t_value
    chex.assert_equal_shape([q_t_value, q_t_selector])
    bootstrap = q_t_value[jnp.argmax(q_t_selector)]
    return jax.lax.stop_gradient(r_t + discount_t * bootstrap)


def td_loss(q_tm1: jax.Array, a_tm1: jax.Array, target: jax.Array, huber: bool = True,
            delta: float = 1.0) -> jax.Array:
    """Huber(q_tm1[a_tm1] - target) or 0.5 * (q_tm1[a_tm1] - target)**2.

    Args:
      q_tm1: values at the state acted in [num_actions].
      a_tm1: the action taken [] (int).
      target: the regression target [] (e.g. `q_learning_target`).
      huber: Huber loss with threshold `delta` (Mnih et al. 2015 clip the TD error to
        [-1, 1], which is this loss's gradient); False: half the squared error.
    """
    chex.assert_rank([q_tm1, a_tm1, target], [1, 0, 0])
    error = q_tm1[a_tm1] - target
    return huber_loss(error, delta) if huber else 0.5 * jnp.square(error)


def huber_loss(x: jax.Array, delta: float = 1.0) -> jax.Array:
    """0.5 x**2 where |x| <= delta, else delta * (|x| - 0.5 delta) (elementwise)."""
    abs_x = jnp.abs(x)
    quadratic = jnp.minimum(abs_x, delta)
    return 0.5 * jnp.square(quadratic) + delta * (abs_x - quadratic)


def polyak(online, target, tau: float | jax.Array):
    """target <- tau * online + (1 - tau) * target, leaf by leaf (tau = 1: a hard copy)."""
    return jax.tree.map(lambda o, t: tau * o + (1.0 - tau) * t, online, target)


# --------------------------------------------------------------------------- n-step returns


def episode_window(terminated_t: jax.Array, truncated_t: jax.Array) -> jax.Array:
    """How many of the n steps an n-step return from the first step uses: up to and
    including the first step that ended an episode, else n. [n] -> [] int32."""
    chex.assert_rank([terminated_t, truncated_t], 1)
    done = jnp.logical_or(terminated_t, truncated_t)
    n = done.shape[0]
    first_end = jnp.argmax(done)  # 0 when no step ended an episode
    return jnp.where(jnp.any(done), first_end + 1, n).astype(jnp.int32)


def n_step_return(
    r_t: jax.Array, terminated_t: jax.Array, truncated_t: jax.Array, gamma: float | jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """The discounted reward sum of an n-step return and the discount of its bootstrap.

    With m = `episode_window(...)` (the window stops at the first episode end):

        G        = sum_{k < m} gamma**k r_{t+k}
        discount = gamma**m * (1 - terminated_{t+m-1})

    The target is then G + discount * Q(bootstrap state), where the bootstrap state is
    the one step m-1 reached: the next episode's first observation is never used, a
    truncated step bootstraps from its final observation, a terminated one not at all.

    Args:
      r_t: rewards of n consecutive steps [n].
      terminated_t: whether each of those steps terminated its episode [n].
      truncated_t: whether each of those steps truncated its episode [n].
      gamma: discount factor.

    Returns:
      (G [], discount []).
    """
    chex.assert_rank([r_t, terminated_t, truncated_t], 1)
    chex.assert_equal_shape([r_t, terminated_t, truncated_t])
    n = r_t.shape[0]
    m = episode_window(terminated_t, truncated_t)
    k = jnp.arange(n)
    powers = jnp.power(gamma, k.astype(r_t.dtype))
    ret = jnp.sum(jnp.where(k < m, powers * r_t, 0.0))
    terminal = terminated_t[m - 1].astype(r_t.dtype)
    discount = jnp.power(gamma, m.astype(r_t.dtype)) * (1.0 - terminal)
    return ret, discount


def q_lambda_targets(
    r_t: jax.Array, q_next_t: jax.Array, terminated_t: jax.Array, truncated_t: jax.Array,
    gamma: float | jax.Array, lambda_: float | jax.Array,
) -> jax.Array:
    """Peng's Q(lambda) targets over a rollout, as PQN uses them (Gallici et al. 2024).

        G_t = r_t + gamma * (1 - terminated_t) * ((1 - mix_t) * q_next_t + mix_t * G_{t+1})
        mix_t = lambda * (1 - done_t),   done = terminated or truncated

    where q_next_t = max_a Q(s reached by step t, a): the next observation, or the final
    observation where the episode ended. So a trace never crosses an episode end, a
    truncated step bootstraps from its final observation, and the last step of the
    rollout bootstraps from q_next_{T-1} alone (G_T := q_next_{T-1}). lambda = 0 gives
    one-step Q-learning targets; lambda = 1, within an episode, the discounted return
    bootstrapped at the rollout's end.

    Args:
      r_t: rewards [T].
      q_next_t: max_a Q at the state each step reached [T].
      terminated_t: the step terminated its episode [T].
      truncated_t: the step truncated its episode [T].
      gamma: discount factor.
      lambda_: trace parameter.

    Returns:
      targets G_t [T], with no gradient through them.
    """
    chex.assert_rank([r_t, q_next_t, terminated_t, truncated_t], 1)
    chex.assert_equal_shape([r_t, q_next_t, terminated_t, truncated_t])
    not_terminated = 1.0 - terminated_t.astype(r_t.dtype)
    mix = lambda_ * (1.0 - jnp.logical_or(terminated_t, truncated_t).astype(r_t.dtype))

    def backward(g_next, inputs):
        r, q_next, live, w = inputs
        g = r + gamma * live * ((1.0 - w) * q_next + w * g_next)
        return g, g

    _, targets = jax.lax.scan(backward, q_next_t[-1], (r_t, q_next_t, not_terminated, mix),
                              reverse=True)
    return jax.lax.stop_gradient(targets)


# --------------------------------------------------------------------------- epsilon-greedy


def linear_epsilon(step: jax.Array, start: jax.Array, end: jax.Array,
                   duration: int | jax.Array) -> jax.Array:
    """start -> end linearly over `duration` steps, then end (Mnih et al. 2015)."""
    fraction = jnp.clip(step / jnp.maximum(duration, 1), 0.0, 1.0)
    return start + fraction * (end - start)


def epsilon_greedy(key: jax.Array, q: jax.Array, epsilon: jax.Array) -> jax.Array:
    """argmax_a q[..., a], replaced by a uniform action with probability epsilon.
    q [..., num_actions] -> actions [...] (int32)."""
    key_explore, key_action = jax.random.split(key)
    greedy = jnp.argmax(q, axis=-1)
    random = jax.random.randint(key_action, greedy.shape, 0, q.shape[-1])
    explore = jax.random.uniform(key_explore, greedy.shape) < epsilon
    return jnp.where(explore, random, greedy).astype(jnp.int32)


# --------------------------------------------------------------------------- SAC


def squashed_gaussian(key: jax.Array, mean: jax.Array, log_std: jax.Array):
    """A sample of tanh(u), u ~ N(mean, exp(log_std)), and its log-density.

    Haarnoja et al. 2018, appendix C: with a = tanh(u),

        log pi(a|s) = sum_i [log N(u_i; mean_i, std_i) - log(1 - tanh(u_i)**2)]

    and log(1 - tanh(u)**2) = 2 (log 2 - u - softplus(-2u)), which stays finite where
    tanh(u) rounds to +-1.

    Args:
      key: the sampling key.
      mean: the Gaussian's mean [..., A].
      log_std: the Gaussian's log standard deviation [..., A].

    Returns:
      (action in (-1, 1) [..., A], log_prob [...]).
    """
    chex.assert_equal_shape([mean, log_std])
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
    return jnp.tanh(u), squashed_log_prob(u, mean, log_std)


def squashed_log_prob(u: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """log pi(tanh(u)) for pre-squash samples u [..., A] -> [...] (see `squashed_gaussian`)."""
    chex.assert_equal_shape([u, mean, log_std])
    z = (u - mean) * jnp.exp(-log_std)
    gaussian = -0.5 * jnp.square(z) - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    log_det = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return jnp.sum(gaussian - log_det, axis=-1)


def sac_critic_target(r_t: jax.Array, discount_t: jax.Array, q_t: jax.Array,
                      log_prob_t: jax.Array, alpha: jax.Array) -> jax.Array:
    """r_t + discount_t * (min_i q_t[i] - alpha * log pi(a_t|s_t)), a_t ~ pi(s_t).

    Args:
      r_t: reward [].
      discount_t: discount (0 past a termination) [].
      q_t: the target critics' values of (s_t, a_t) [num_critics].
      log_prob_t: log pi(a_t|s_t) [].
      alpha: the entropy temperature [].
    """
    chex.assert_rank([r_t, discount_t, q_t, log_prob_t], [0, 0, 1, 0])
    soft_value = jnp.min(q_t) - alpha * log_prob_t
    return jax.lax.stop_gradient(r_t + discount_t * soft_value)


def sac_actor_loss(q: jax.Array, log_prob: jax.Array, alpha: jax.Array) -> jax.Array:
    """alpha * log pi(a|s) - min_i Q_i(s, a), a ~ pi(s) reparameterised.
    q [num_critics], log_prob [] -> []."""
    chex.assert_rank([q, log_prob], [1, 0])
    return jax.lax.stop_gradient(alpha) * log_prob - jnp.min(q)


def temperature_loss(log_alpha: jax.Array, log_prob: jax.Array,
                     target_entropy: float | jax.Array) -> jax.Array:
    """-log_alpha * (log pi(a|s) + target_entropy), the log-prob held fixed.

    Haarnoja et al. 2018b ("SAC: Algorithms and Applications"), eq. 18, with alpha
    parameterised by its log as Stable-Baselines3 does: the gradient raises alpha when
    the policy's entropy (-log pi) falls below the target (-|A| by default) and lowers it
    otherwise. log_alpha [], log_prob [] -> [].
    """
    chex.assert_rank([log_alpha, log_prob], 0)
    return -log_alpha * jax.lax.stop_gradient(log_prob + target_entropy)
