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
