"""Bandits: the environments (regret zero for an oracle, the testbed's and Riquelme et al.'s
problems), the agents' updates on known values and against numpy, Figure 2.2 in small, seed
equivalence, one program per sweep, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
import purejaxrl_lab as lab
from agents import epsilon_greedy, gradient_bandit, lin_ts, linucb, neural_linear, thompson, ucb
from agents.common import bandit as B
from envs import bandits

BANDITS = ["KArmedTestbed-v0", "BernoulliBandit-v0", "LinearContextualBandit-v0", "WheelBandit-v0"]


@pytest.mark.parametrize("env_id", BANDITS)
def test_an_oracle_has_zero_regret(env_id):
    env, params = envs.make(env_id)

    def oracle_round(carry, key):
        state = carry
        means = env.expected_rewards(state.arms, state.context, params)
        action = jnp.argmax(means)
        _, state, _, terminated, truncated, info = env.step(key, state, action, params)
        worst = env.step(key, carry, jnp.argmin(means), params)[5]
        return state, (info["regret"], info["optimal"], terminated | truncated, worst["regret"])

    _, state = env.reset(jax.random.key(0), params)
    _, (regret, optimal, ended, worst) = jax.lax.scan(oracle_round, state,
                                                      jax.random.split(jax.random.key(1), 200))
    assert float(jnp.abs(regret).max()) == 0.0 and bool(optimal.all()) and not bool(ended.any())
    assert float(worst.mean()) > 0.0


def test_the_testbed_and_its_rewards():
    env, params = envs.make("KArmedTestbed-v0")
    keys = jax.random.split(jax.random.key(0), 4000)
    q_star = jax.vmap(lambda k: env.reset(k, params)[1].arms)(keys)  # [4000, 10]
    assert abs(float(q_star.mean())) < 0.02 and abs(float(q_star.std()) - 1.0) < 0.02
    _, state = env.reset(jax.random.key(0), params)
    rewards = jax.vmap(lambda k: env.step(k, state, 3, params)[2])(keys)
    assert abs(float(rewards.mean() - state.arms[3])) < 0.05 and abs(float(rewards.std()) - 1.0) < 0.03
    # Exercise 2.5: equal starts, then independent walks of sd 0.01: after 100 rounds sd 0.1.
    walk = params.replace(walk_stddev=0.01, equal_start=True)
    _, start = env.reset(jax.random.key(0), walk)
    assert (start.arms == 0.0).all()

    def play(state, key):
        return env.step(key, state, 0, walk)[1], None

    end = jax.vmap(lambda k: jax.lax.scan(play, start, jax.random.split(k, 100))[0].arms)(keys[:2000])
    assert abs(float(end.std()) - 0.1) < 0.005


def test_the_contextual_problems():
    env, params = envs.make("LinearContextualBandit-v0")
    _, state = env.reset(jax.random.key(0), params)
    assert state.arms.shape == (10, 8) and state.context.shape == (10,)
    np.testing.assert_allclose(jnp.linalg.norm(state.arms, axis=0), 1.0, rtol=1e-5)
    # The noise of arm j has sd 0.01 (j + 1): arm 7's is 0.08.
    rewards = jax.vmap(lambda k: env.step(k, state, 7, params)[2])(jax.random.split(jax.random.key(1), 4000))
    expected = float(state.context @ state.arms[:, 7])
    assert abs(float(rewards.std()) - 0.08) < 0.004 and abs(float(rewards.mean()) - expected) < 0.005
    wheel, wp = envs.make("WheelBandit-v0", delta=0.5)
    means = lambda x: wheel.expected_rewards(jnp.zeros(0), jnp.array(x), wp)  # noqa: E731
    np.testing.assert_allclose(means([0.1, 0.1]), [1.0, 1.0, 1.0, 1.0, 1.2])  # inside: arm 4
    np.testing.assert_allclose(means([0.6, 0.6]), [50.0, 1.0, 1.0, 1.0, 1.2])  # quadrant 0
    np.testing.assert_allclose(means([0.6, -0.6]), [1.0, 50.0, 1.0, 1.0, 1.2])
    np.testing.assert_allclose(means([-0.6, 0.6]), [1.0, 1.0, 50.0, 1.0, 1.2])
    np.testing.assert_allclose(means([-0.6, -0.6]), [1.0, 1.0, 1.0, 50.0, 1.2])
    contexts = jax.vmap(lambda k: wheel.draw_context(k, wp))(jax.random.split(jax.random.key(2), 20_000))
    radius = jnp.linalg.norm(contexts, axis=1)
    assert float(radius.max()) <= 1.0 and abs(float((radius < 0.5).mean()) - 0.25) < 0.01  # uniform in the disc
    assert envs.is_contextual(wheel) and not envs.is_contextual(envs.make("KArmedTestbed-v0")[0])


def test_ucb_bonus_known_values():
    # ln t = 2 at t = e^2; c = 2: 2 sqrt(2 / 1) = 2.828..., 2 sqrt(2 / 4) = 1.414...; untried: inf.
    bonus = ucb.bonus(jnp.array([1.0, 4.0, 0.0]), jnp.exp(2.0), 2.0)
    np.testing.assert_allclose(bonus[:2], [2 * np.sqrt(2.0), 2 * np.sqrt(0.5)], rtol=1e-6)
    assert bonus[2] == jnp.inf
    params = ucb.Params(q=jnp.array([1.0, 1.5, 0.0]), n=jnp.array([1.0, 4.0, 0.0]), c=jnp.float32(2.0))
    assert int(ucb.act(params, None, jax.random.key(0))) == 2  # the untried arm first
    params = params.replace(n=jnp.array([1.0, 4.0, 2.0]), q=jnp.array([1.0, 1.5, 0.0]))
    # t = 8: 1 + 2 sqrt(ln 8) = 3.88 beats 1.5 + 2 sqrt(ln 8 / 4) = 2.94 and 0 + 2 sqrt(ln 8 / 2) = 2.04.
    assert int(ucb.act(params, None, jax.random.key(0))) == 0
    assert int(ucb.act(params, None, jax.random.key(0), deterministic=True)) == 1


def test_gradient_bandit_preference_update():
    # pi = (1/2, 1/2); A = 0, R = 2, baseline 1, alpha 0.1: H(0) = 0.1 (2 - 1)(1 - 1/2) = 0.05,
    # H(1) = -0.1 (2 - 1)(1/2) = -0.05.
    np.testing.assert_allclose(gradient_bandit.preference_update(jnp.zeros(2), 0, 2.0, 1.0, 0.1),
                               [0.05, -0.05], rtol=1e-6)
    hp = gradient_bandit.HParams(alpha=jnp.float32(0.1), baseline=jnp.float32(1.0))
    p = gradient_bandit.Params(h=jnp.zeros(2), average_reward=jnp.float32(0.0), t=jnp.float32(0.0))
    # The first reward is its own baseline (R_bar_1 = R_1): no change, then R_bar = 2.
    p = gradient_bandit.learn(p, None, 0, 2.0, hp)
    np.testing.assert_allclose(p.h, [0.0, 0.0]) and np.testing.assert_allclose(p.average_reward, 2.0)
    # Next, A = 1, R = 4 against R_bar = 2: H(1) = 0.1 * 2 * 1/2 = 0.1, H(0) = -0.1.
    p = gradient_bandit.learn(p, None, 1, 4.0, hp)
    np.testing.assert_allclose(p.h, [-0.1, 0.1], rtol=1e-6) and np.testing.assert_allclose(p.average_reward, 3.0)


def test_sample_averages_constant_step_and_thompson_updates():
    hp = epsilon_greedy.HParams(epsilon=jnp.float32(0.1), alpha=jnp.float32(0.0),
                                initial_value=jnp.float32(0.0))
    p = epsilon_greedy.Params(q=jnp.zeros(2), n=jnp.zeros(2), epsilon=jnp.float32(0.1))
    for r in (1.0, 2.0, 6.0):
        p = epsilon_greedy.learn(p, None, 1, r, hp)
    assert float(p.q[1]) == pytest.approx(3.0)  # the sample average (1 + 2 + 6) / 3
    p = epsilon_greedy.learn(p.replace(q=jnp.zeros(2)), None, 0, 10.0, hp.replace(alpha=jnp.float32(0.1)))
    assert float(p.q[0]) == pytest.approx(1.0)  # 0 + 0.1 (10 - 0)
    # Gaussian: prior N(0, 1), noise 1, R = 2: precision 1 + 1 = 2, mean (0 * 1 + 2 * 1) / 2 = 1.
    thp = thompson.HParams(prior_alpha=jnp.float32(1), prior_beta=jnp.float32(1), prior_mean=jnp.float32(0),
                           prior_stddev=jnp.float32(1), noise_stddev=jnp.float32(1))
    g = thompson.learn(thompson.Params(first=jnp.zeros(2), second=jnp.ones(2)), None, 0, 2.0, thp)
    np.testing.assert_allclose([g.first[0], g.second[0]], [1.0, 2.0])
    b = thompson.learn(thompson.Params(first=jnp.ones(2), second=jnp.ones(2), bernoulli=True), None, 1, 1.0, thp)
    np.testing.assert_allclose(b.first, [1.0, 2.0]) and np.testing.assert_allclose(b.second, [1.0, 1.0])


def contextual_data(n=40, d=3, k=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, k, n), rng.normal(size=n).astype(np.float32)


def test_linucb_against_numpy():
    xs, actions, rewards = contextual_data()
    hp = linucb.HParams(alpha=jnp.float32(0.7), regularization=jnp.float32(2.0))
    p = linucb.Params(a_inv=jnp.broadcast_to(0.5 * jnp.eye(3), (2, 3, 3)), b=jnp.zeros((2, 3)), alpha=hp.alpha)
    for x, a, r in zip(xs, actions, rewards):
        p = linucb.learn(p, jnp.asarray(x), int(a), float(r), hp)
    x = np.array([0.3, -1.0, 0.5], np.float32)
    mean, width = linucb.scores(p, jnp.asarray(x))
    for arm in range(2):
        rows = actions == arm
        a_mat = 2.0 * np.eye(3) + xs[rows].T @ xs[rows]
        theta = np.linalg.solve(a_mat, xs[rows].T @ rewards[rows])
        np.testing.assert_allclose(p.a_inv[arm], np.linalg.inv(a_mat), rtol=1e-4, atol=1e-6)
        assert float(mean[arm]) == pytest.approx(theta @ x, rel=1e-4, abs=1e-5)
        assert float(width[arm]) == pytest.approx(np.sqrt(x @ np.linalg.solve(a_mat, x)), rel=1e-4)
    best = int(np.argmax(np.asarray(mean) + 0.7 * np.asarray(width)))
    assert int(linucb.act(p, jnp.asarray(x), jax.random.key(0))) == best


def test_linfullpost_posterior_against_numpy():
    xs, actions, rewards = contextual_data(n=60)
    hp = lin_ts.HParams(lambda_prior=jnp.float32(0.25), a0=jnp.float32(6.0), b0=jnp.float32(6.0))
    p = lin_ts.Params(xtx=jnp.zeros((2, 3, 3)), xty=jnp.zeros((2, 3)), yty=jnp.zeros(2), n=jnp.zeros(2),
                      lambda_prior=hp.lambda_prior, a0=hp.a0, b0=hp.b0)
    for x, a, r in zip(xs, actions, rewards):
        p = lin_ts.learn(p, jnp.asarray(x), int(a), float(r), hp)
    post = B.nig_posterior(p.xtx, p.xty, p.yty, p.n, p.lambda_prior, p.a0, p.b0)
    for arm in range(2):
        X, y = xs[actions == arm].astype(np.float64), rewards[actions == arm].astype(np.float64)
        precision = X.T @ X + 0.25 * np.eye(3)
        mu = np.linalg.solve(precision, X.T @ y)
        np.testing.assert_allclose(post.mu[arm], mu, rtol=1e-4, atol=1e-5)
        assert float(post.a[arm]) == pytest.approx(6.0 + len(y) / 2)
        assert float(post.b[arm]) == pytest.approx(6.0 + (y @ y - mu @ precision @ mu) / 2, rel=1e-4)
        np.testing.assert_allclose(post.chol[arm] @ post.chol[arm].T, precision, rtol=1e-4, atol=1e-4)
    # Draws: mean mu; covariance E[sigma^2] Lambda^-1 with E[sigma^2] = b / (a - 1).
    draws = jax.vmap(lambda k: B.nig_sample(post, k))(jax.random.split(jax.random.key(0), 40_000))[:, 0]
    X, y = xs[actions == 0].astype(np.float64), rewards[actions == 0].astype(np.float64)
    cov = float(post.b[0]) / (float(post.a[0]) - 1) * np.linalg.inv(X.T @ X + 0.25 * np.eye(3))
    np.testing.assert_allclose(draws.mean(0), post.mu[0], atol=0.01)
    np.testing.assert_allclose(np.cov(np.asarray(draws).T), cov, atol=0.1 * np.abs(cov).max())


@pytest.fixture(scope="module")
def figure_2_2():
    """Figure 2.2 in small: epsilon 0 (greedy), 0.01 and 0.1 on 300 runs of the testbed, one
    program."""
    return lab.sweep("epsilon_greedy", epsilon_greedy.Config(total_timesteps=500),
                     "KArmedTestbed-v0", grid={"epsilon": [0.0, 0.01, 0.1]}, seeds=300, progress=False)


def test_figure_2_2_in_small(figure_2_2):
    swept = figure_2_2
    assert swept.compilations + swept.cache_hits == 2  # init and the chunk program
    assert swept.metrics["optimal_action"].shape == (3, 300, 500) and swept.unit == "rounds"
    late = swept.metrics["optimal_action"][:, :, -100:].mean(axis=(1, 2))
    reward = swept.metrics["reward"][:, :, -100:].mean(axis=(1, 2))
    # The book at 500 steps: greedy ~35% optimal (~1.05 reward), epsilon 0.1 ~75% (~1.35).
    assert late[0] < 0.45 and late[2] > 0.65 and late[2] > late[1] > late[0]
    assert reward[2] > reward[0] + 0.15
    np.testing.assert_allclose(swept.metrics["cumulative_regret"][..., -1],
                               swept.metrics["regret"].sum(-1), rtol=1e-4)
    assert swept.eval_iterations == []  # a bandit has no episodes to evaluate
    # Setting 2, seed 7 is the plain run with epsilon 0.1 and seed 7.
    plain = lab.run("epsilon_greedy", epsilon_greedy.Config(total_timesteps=500, epsilon=0.1),
                    "KArmedTestbed-v0", seeds=[7], progress=False)
    for name, values in plain.metrics.items():
        np.testing.assert_array_equal(values[0], swept.metrics[name][2, 7], err_msg=name)


@pytest.mark.parametrize("module, env_id, config", [
    (ucb, "KArmedTestbed-v0", {"c": 2.0}),
    (thompson, "BernoulliBandit-v0", {}),
    (gradient_bandit, "KArmedTestbed-v0", {"alpha": 0.1}),
    (linucb, "LinearContextualBandit-v0", {"alpha": 1.0}),
    (lin_ts, "LinearContextualBandit-v0", {}),
])
def test_every_agent_beats_uniform_random(module, env_id, config):
    env, params = envs.make(env_id)
    keys = jax.random.split(jax.random.key(0), 64)
    train = module.make_train(module.Config(total_timesteps=300, **config), env, params)
    uniform = epsilon_greedy.make_train(epsilon_greedy.Config(total_timesteps=300, epsilon=1.0), env, params)
    regret = jax.jit(jax.vmap(train))(keys)[1]["regret"][:, -100:].mean()
    baseline = jax.jit(jax.vmap(uniform))(keys)[1]["regret"][:, -100:].mean()
    assert float(regret) < 0.5 * float(baseline)


def test_neural_linear_learns_the_linear_problem():
    env, params = envs.make("LinearContextualBandit-v0")
    config = neural_linear.Config(total_timesteps=200, hidden_sizes=(16,), train_every=20,
                                  train_steps=20, batch_size=32)
    assert config.num_iterations == 10 and config.units_per_iteration == 20
    keys = jax.random.split(jax.random.key(0), 8)
    state, metrics = jax.jit(jax.vmap(neural_linear.make_train(config, env, params)))(keys)
    assert metrics["regret"].shape == (8, 10) and int(state.data.size[0]) == 200
    # Uniform play has regret ~1.4 per round here; the learnt features do far better.
    assert float(metrics["regret"][:, -3:].mean()) < 0.6 * float(metrics["regret"][:, 0].mean())


def test_bad_input_is_refused_before_compilation():
    with pytest.raises(ValueError, match=r"epsilon=-0.1 is not allowed: expected a finite number in \[0.0, 1.0\]"):
        epsilon_greedy.Config(epsilon=-0.1)
    with pytest.raises(ValueError, match=r"c=-1.0 is not allowed: expected a finite number in \[0.0, inf\]"):
        ucb.Config(c=-1.0)
    with pytest.raises(ValueError, match=r"unknown model 'beta'; closest: 'bernoulli'|unknown model 'beta'"):
        thompson.Config(model="beta")
    with pytest.raises(ValueError, match=r"env: agent linucb needs a contextual bandit, and KArmedTestbed-v0 "
                                         r"is a bandit without context; agents for it: epsilon_greedy, "
                                         r"gradient_bandit, thompson, ucb"):
        lab.prepare("linucb", None, "KArmedTestbed-v0")
    with pytest.raises(ValueError, match=r"env: agent ucb needs a bandit without context or a contextual "
                                         r"bandit, and FrozenLake-v1 is a tabular MDP"):
        lab.prepare("ucb", None, "FrozenLake-v1")
    with pytest.raises(ValueError, match=r"KArmedTestbed-v0 is a bandit without context, which agent ppo is "
                                         r"not made for"):
        lab.prepare("ppo", None, "KArmedTestbed-v0")
    with pytest.raises(ValueError, match=r"eval_every=2 is not allowed: agent ucb plays one never-ending"):
        lab.prepare("ucb", None, "KArmedTestbed-v0", eval_every=2)
    with pytest.raises(ValueError, match=r"num_arms=1 is not allowed: expected an integer >= 2"):
        envs.make("KArmedTestbed-v0", num_arms=1)
    with pytest.raises(ValueError, match=r"delta=1.5 is not allowed"):
        envs.make("WheelBandit-v0", delta=1.5)
    assert bandits.bandit_of(envs.make("CartPole-v1")[0]) is None


def test_the_cpu_cholesky_and_triangular_solves_equal_numpys():
    from agents.common import cpu

    x = jax.random.normal(jax.random.key(0), (3, 4, 12, 12))
    a = x @ jnp.swapaxes(x, -1, -2) + jnp.eye(12)
    b = jax.random.normal(jax.random.key(1), (3, 4, 12))
    factor = jax.jit(cpu.cholesky)(a)
    np.testing.assert_allclose(factor, np.linalg.cholesky(np.asarray(a, np.float64)), atol=1e-4)
    lower, upper = np.asarray(factor, np.float64), np.swapaxes(np.asarray(factor, np.float64), -1, -2)
    np.testing.assert_allclose(cpu.solve_lower(factor, b), np.linalg.solve(lower, np.asarray(b)[..., None])[..., 0],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cpu.solve_upper(factor, b), np.linalg.solve(upper, np.asarray(b)[..., None])[..., 0],
                               rtol=1e-4, atol=1e-4)


def test_beta_draws_follow_the_beta_distribution():
    from scipy import stats

    for a, b in [(1.0, 1.0), (3.0, 7.0), (0.5, 2.0), (40.0, 3.0)]:  # 0.5: the alpha < 1 boost
        draws = np.asarray(jax.jit(B.sample_beta)(jax.random.key(0), jnp.full(20_000, a), jnp.full(20_000, b)))
        assert stats.kstest(draws, stats.beta(a, b).cdf).pvalue > 0.001, (a, b)
        assert abs(draws.mean() - a / (a + b)) < 0.01


def test_the_cli_plots_average_reward_and_optimal_action(tmp_path, capsys):
    from purejaxrl_lab import cli

    out = tmp_path / "ucb"
    assert cli.main(["train", "ucb", "--env", "KArmedTestbed-v0", "--seeds", "50", "--total-timesteps",
                     "100", "--out", str(out)]) == 0
    assert "(and curve_reward.png, curve_optimal_action.png)" in capsys.readouterr().out
    assert all((out / name).is_file() for name in ("curve.png", "curve_reward.png", "curve_optimal_action.png"))
    assert cli.main(["train", "linucb", "--env", "KArmedTestbed-v0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "agent linucb needs a contextual bandit" in err[0]
