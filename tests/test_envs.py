import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs


def test_make_and_override():
    env, params = envs.make("CartPole-v1", max_steps_in_episode=7)
    assert params.max_steps_in_episode == 7
    assert "CartPole-v1" in envs.registered() and "Pendulum-v1" in envs.registered()


def test_unknown_id_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown environment id 'CartPole-v2'; closest: 'CartPole-v1'"):
        envs.make("CartPole-v2")


def test_unknown_param_and_offline_only():
    with pytest.raises(ValueError, match="closest: 'max_steps_in_episode'"):
        envs.make("CartPole-v1", max_step_in_episode=3)
    with pytest.raises(ValueError, match="downloads"):
        envs.make("MNISTBandit-bsuite")
    assert "MNISTBandit-bsuite" not in envs.registered()


def rollout(env, params, steps, num_envs, key):
    venv = envs.VecEnv(envs.EpisodeStatistics(env), num_envs)
    obs, state = venv.reset(key, params)

    def step(state, key):
        action = jnp.zeros(num_envs, jnp.int32)
        _, state, reward, term, trunc, info = venv.step(key, state, action, params)
        return state, (reward, term, trunc, info["episode"])

    return jax.lax.scan(step, state, jax.random.split(key, steps))[1]


def test_episode_statistics_count_only_finished_episodes():
    env, params = envs.make("CartPole-v1", max_steps_in_episode=5)
    reward, term, trunc, episode = jax.jit(rollout, static_argnums=(0, 2, 3))(
        env, params, 12, 3, jax.random.key(0))
    done = np.asarray(term | trunc)
    # Reward is 1 per step, so the return of each finished episode equals its length,
    # at most 5 (truncation), and only steps with done=True are counted.
    ret = np.asarray(episode["return"])[done]
    np.testing.assert_array_equal(ret, np.asarray(episode["length"])[done])
    assert ret.max() <= 5 and ret.min() >= 1
    summary = envs.summarize_episodes(episode)
    assert int(summary["episodes"]) == done.sum()
    np.testing.assert_allclose(summary["episode_return"], ret.mean(), rtol=1e-6)
    # No episode ended: NaN, never a placeholder 0.
    none = envs.summarize_episodes(jax.tree.map(lambda x: x[:2], episode))
    assert int(none["episodes"]) == 0 and np.isnan(none["episode_return"])


def test_running_stats_converge_to_data_statistics():
    stats = envs.RunningMeanStd.create((2,))
    x = jax.random.normal(jax.random.key(0), (50, 64, 2)) * jnp.array([2.0, 0.5]) + jnp.array([3.0, -1.0])
    for batch in x:
        stats = envs.update_running_stats(stats, batch)
    flat = x.reshape(-1, 2)
    np.testing.assert_allclose(stats.mean, flat.mean(0), atol=1e-3)
    np.testing.assert_allclose(stats.var, flat.var(0), rtol=1e-3)
    np.testing.assert_allclose(envs.normalize(stats, flat).mean(0), 0.0, atol=1e-3)


def test_normalize_observation_wrapper_shares_statistics_across_envs():
    env, params = envs.make("Pendulum-v1")
    venv = envs.NormalizeObservation(envs.VecEnv(envs.ClipAction(envs.EpisodeStatistics(env)), 8))
    obs, state = venv.reset(jax.random.key(0), params)
    assert obs.shape == (8, 3) and state.obs_stats.mean.shape == (3,)

    def step(state, key):
        obs, state, r, te, tr, info = venv.step(key, state, jnp.ones((8, 1)) * 3.0, params)
        return state, (obs, info["final_observation"])

    state, (obs, final) = jax.jit(lambda s: jax.lax.scan(step, s, jax.random.split(jax.random.key(1), 400)))(state)
    assert float(state.obs_stats.count) > 400 * 8
    late = obs[200:].reshape(-1, 3)
    assert np.all(np.abs(late.mean(0)) < 1.0) and np.all(np.abs(late) <= 10.0)
    assert final.shape == obs.shape


def test_scale_reward_and_flatten():
    env, params = envs.make("Breakout-MinAtar")
    flat = envs.FlattenObservation(env)
    assert flat.observation_space(params).shape == (int(np.prod(env.observation_space(params).shape)),)
    venv = envs.ScaleReward(envs.VecEnv(flat, 2), gamma=0.9)
    obs, state = venv.reset(jax.random.key(0), params)
    assert obs.ndim == 2 and state.discounted_return.shape == (2,)
    obs, state, r, *_ = venv.step(jax.random.key(1), state, jnp.zeros(2, jnp.int32), params)
    assert r.shape == (2,) and np.all(np.isfinite(r))


def test_wrappers_vmap_over_env_params():
    env, params = envs.make("CartPole-v1")
    lengths = jnp.array([0.3, 0.5, 0.9])
    batched = jax.tree.map(lambda x: jnp.broadcast_to(x, (3,)), params).replace(length=lengths)
    wrapped = envs.EpisodeStatistics(env)
    obs, state = jax.vmap(wrapped.reset, in_axes=(None, 0))(jax.random.key(0), batched)
    obs2, *_ = jax.vmap(wrapped.step, in_axes=(None, 0, None, 0))(jax.random.key(1), state, 1, batched)
    # Same start state, different pole lengths: different angular accelerations.
    assert len(set(np.asarray(obs2[:, 3]).round(6))) == 3


class StepOnly(envs.Wrapper):
    """Overrides `step` alone: the stack above it has no `transition`, so VecEnv vmaps the
    wrappers' `step`, each resetting inside gymnax's own `step` (the reference path)."""

    def step(self, key, state, action, params=None):
        return self._env.step(key, state, action, params)


def _two_paths(env_id, wrap, num_envs, steps, action_fn, **overrides):
    """Rollouts of the same actions through VecEnv(wrap(env)) (transitions, resets only when
    an episode ends) and VecEnv(wrap(StepOnly(env))) (gymnax's step, a reset every step)."""
    env, params = envs.make(env_id, **overrides)
    lazy, eager = (envs.VecEnv(wrap(e), num_envs) for e in (env, StepOnly(env)))
    assert envs.has_transition(lazy._env) and not envs.has_transition(eager._env)

    def rollout(venv, key):
        obs, state = venv.reset(key, params)

        def step(carry, key):
            state, obs = carry
            key_act, key_step = jax.random.split(key)
            out = venv.step(key_step, state, action_fn(key_act), params)
            return (out[1], out[0]), (obs, *out[2:5], out[5]["final_observation"], out[5]["episode"])

        return jax.lax.scan(step, (state, obs), jax.random.split(key, steps))

    return jax.jit(lambda k: rollout(lazy, k)), jax.jit(lambda k: rollout(eager, k))


@pytest.mark.parametrize("env_id,wrap,action", [
    ("CartPole-v1", envs.EpisodeStatistics, lambda k: jax.random.randint(k, (4,), 0, 2)),
    ("Pendulum-v1", lambda e: envs.ClipAction(envs.EpisodeStatistics(e)),
     lambda k: jax.random.uniform(k, (4, 1), minval=-3.0, maxval=3.0)),
    ("Catch-bsuite", lambda e: envs.FlattenObservation(envs.EpisodeStatistics(e)),
     lambda k: jax.random.randint(k, (4,), 0, 3)),
])
def test_vec_env_resets_only_ended_episodes_with_gymnax_keys(env_id, wrap, action):
    """Same episodes as vmapping gymnax's `step`: the same resets (same keys), terminations,
    truncations, rewards and statistics; observations to float32 rounding (another program)."""
    lazy, eager = _two_paths(env_id, wrap, 4, 150, action, max_steps_in_episode=20)
    for run in (lambda f: f(jax.random.key(3)),                               # one run
                lambda f: jax.vmap(f)(jax.random.split(jax.random.key(3), 2))):  # a batch of runs
        (_, a), (_, b) = run(lazy), run(eager)
        done = np.asarray(a[2] | a[3])
        assert done.sum() >= 4 * (150 // 20)  # each env truncated every 20 steps at least
        for x, y, name in zip(jax.tree.leaves(a), jax.tree.leaves(b), range(99)):
            if np.issubdtype(np.asarray(x).dtype, np.floating):
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5, err_msg=str(name))
            else:
                np.testing.assert_array_equal(x, y, err_msg=str(name))


def test_vec_env_skips_resets_with_a_cond():
    env, params = envs.make("CartPole-v1")
    venv = envs.VecEnv(envs.EpisodeStatistics(env), 4)
    _, state = venv.reset(jax.random.key(0), params)
    jaxpr = jax.make_jaxpr(venv.step)(jax.random.key(1), state, jnp.zeros(4, jnp.int32), params)
    assert "cond[" in str(jaxpr)
    # A wrapper that only overrides `step` keeps the vmapped `step` (no transition to use).
    eager = envs.VecEnv(envs.EpisodeStatistics(StepOnly(env)), 4)
    assert "cond[" not in str(jax.make_jaxpr(eager.step)(jax.random.key(1), state, jnp.zeros(4, jnp.int32), params))
    with pytest.raises(ValueError, match="EpisodeStatistics has no transition: StepOnly inside it overrides `step` alone"):
        envs.transition(envs.EpisodeStatistics(StepOnly(env)), jax.random.key(1), state, 0, params)
