import dataclasses
import json
import os

import jax
import numpy as np
import pytest

import envs
import purejaxrl_lab as lab
from agents import ppo
from agents.common import ONLY_DISCRETE, check_action_space
from purejaxrl_lab import checkpoint as ckpt
from purejaxrl_lab import calls
from tests.conftest import SMALL, assert_same


@pytest.fixture(scope="module")
def results():
    return lab.run("ppo", SMALL, "CartPole-v1", seeds=[0, 5], num_chunks=4, progress=False)


def test_run_shapes_and_records(results):
    n = SMALL.num_iterations
    assert results.metrics["loss"].shape == (2, n)
    assert results.seeds == [0, 5]
    np.testing.assert_array_equal(results.units, SMALL.batch_size * np.arange(1, n + 1))
    assert results.unit == "env steps" and results.score == ppo.SCORE
    assert results.final_return.shape == (2,)
    np.testing.assert_array_equal(results.final_return, results.final_score)
    assert results.compile_time > 0 and results.run_time > 0 and results.throughput > 0
    # The state of one run, in bytes: 4 CartPole copies, the networks and Adam's moments.
    leaves = jax.tree.leaves(ckpt.to_storable(results.final_state))
    assert results.state_bytes == sum(x.nbytes for x in leaves) // 2
    assert results.config["num_envs"] == SMALL.num_envs
    assert {"jax", "flax", "gymnax", "python"} <= set(results.versions)
    assert results.device["platform"] == jax.devices()[0].platform
    assert results.device["cpu_model"] == lab.runtime.cpu_model() != ""
    assert results.device["cpu_cores"] == lab.runtime.cpu_cores() >= 1


def test_run_seed_equals_single_train(results):
    # Chunked (4 chunks of 2 iterations, the last one partly skipped) == one plain scan.
    train = jax.jit(ppo.make_train(SMALL, *envs.make("CartPole-v1")))
    for row, seed in enumerate(results.seeds):
        _, single = train(jax.random.key(seed))
        for k in ("loss", "entropy", "episode_return"):
            np.testing.assert_allclose(results.metrics[k][row], single[k], rtol=2e-5, atol=1e-6, err_msg=k)


def test_one_run_per_device_is_unbatched_and_equal(results):
    """A device with one run calls the agent unbatched (no vmap); its numbers are the same
    run's, to float32 rounding (other kernels), with the same episodes."""
    one = lab.run("ppo", SMALL, "CartPole-v1", seeds=[5], num_chunks=4, progress=False)
    assert one.metrics["loss"].shape == (1, SMALL.num_iterations)
    for k in ("loss", "entropy"):
        np.testing.assert_allclose(one.metrics[k][0], results.metrics[k][1], rtol=2e-5, atol=1e-6, err_msg=k)
    np.testing.assert_array_equal(one.metrics["episode_return"][0], results.metrics["episode_return"][1])
    layout = lab.runtime.Layout(1, jax.devices()[:1])
    added = layout.over_runs(lambda x, y: x + y, (0, None))(np.ones((1, 3)), np.arange(3.0))
    np.testing.assert_array_equal(added, [[1.0, 2.0, 3.0]])


def test_call_sizes():
    # chunks_per_call: at most MAX_CHUNKS_PER_CALL (4), at most the run's chunks, and at most
    # MAX_CALL_METRIC_ENTRIES (2^24) [run, iteration] entries per metric in one call.
    assert calls.MAX_CHUNKS_PER_CALL == 4 and calls.MAX_CALL_METRIC_ENTRIES == 2**24
    assert calls.chunks_per_call(976, 61, 1) == 4          # 16 chunks of 61: the cap
    assert calls.chunks_per_call(6, 3, 2) == 2             # the run has 2 chunks
    assert calls.chunks_per_call(100, 10, 2**19) == 3      # 2^24 // (2^19 * 10) = 32 // 10 = 3
    assert calls.chunks_per_call(100, 10, 2**22) == 1      # 2^24 // (2^22 * 10) = 0 -> at least 1
    # next_call_chunks: one chunk before any measurement, then CALL_SECONDS (1 s) worth.
    assert calls.CALL_SECONDS == 1.0
    assert calls.next_call_chunks(4, None) == 1
    assert calls.next_call_chunks(4, 0.3) == 3             # int(1 / 0.3) = 3
    assert calls.next_call_chunks(4, 0.1) == 4             # 10, capped at the limit
    assert calls.next_call_chunks(2, 0.1) == 2
    assert calls.next_call_chunks(4, 2.0) == 1             # int(0.5) = 0 -> at least 1


def _recording_call_sizes(monkeypatch, call_seconds):
    """Sets CALL_SECONDS and records how many chunks each call of `execute` runs."""
    monkeypatch.setattr(calls, "CALL_SECONDS", call_seconds)
    counts, original = [], calls.next_call_chunks

    def recording(limit, seconds_per_chunk):
        counts.append(original(limit, seconds_per_chunk))
        return counts[-1]

    monkeypatch.setattr(calls, "next_call_chunks", recording)
    return counts


def test_grouping_chunks_into_calls_changes_no_number(monkeypatch):
    """The same program runs 1 to 4 chunks per call; how they are grouped changes no bit."""
    def run():
        return lab.run("ppo", SMALL, "CartPole-v1", seeds=[0, 5], num_chunks=6, progress=False,
                       eval_every=0)

    grouped_counts = _recording_call_sizes(monkeypatch, 1e9)
    grouped = run()
    # 6 chunks of 1 iteration: the first two calls are dispatched before any call has been
    # measured (one chunk each), the third runs the remaining 4 (the cap).
    assert grouped_counts == [1, 1, 4]
    single_counts = _recording_call_sizes(monkeypatch, 0.0)
    single = run()
    assert single_counts == [1] * 6
    assert_same(grouped, single)  # every metric and the whole final state, bit for bit
    # Against the plain single-seed training loop, to float32 rounding (another program).
    train = jax.jit(ppo.make_train(SMALL, *envs.make("CartPole-v1")))
    _, plain = train(jax.random.key(5))
    np.testing.assert_allclose(grouped.metrics["loss"][1], plain["loss"], rtol=2e-5, atol=1e-6)


def test_a_call_ends_where_a_checkpoint_or_an_evaluation_is_due(monkeypatch, tmp_path):
    counts = _recording_call_sizes(monkeypatch, 1e9)
    d = tmp_path / "ckpt"
    r = lab.run("ppo", SMALL, "CartPole-v1", seeds=2, num_chunks=6, progress=False, checkpoint_dir=d,
                checkpoint_every=2, eval_every=3)
    # 6 chunks of 1 iteration, checkpoints after chunks 2, 4, 6 and evaluations after 3 and 6:
    # calls of 1, 1 (no measurement yet), then 1 (to the evaluation), 1 (to the checkpoint), 2.
    assert counts == [1, 1, 1, 1, 2]
    assert r.eval_iterations == [3, 6]
    store = ckpt.Checkpoints(d)
    assert store.manager.all_steps() == [4, 6]  # the newest two are kept
    assert store.meta(4)["done"] == 4 and store.meta(4)["eval_iterations"] == [3]
    store.close()


def test_final_score_definition():
    metrics = {"episode_return": np.array([[1.0, np.nan, 10.0, 20.0] * 5]),
               "episodes": np.array([[1, 0, 1, 3] * 5])}
    r = lab.Results(agent="ppo", env="X", config={}, seeds=[0], metrics=metrics, score=ppo.SCORE,
                    unit="env steps", units_per_iteration=10, compile_time=1.0, run_time=1.0,
                    versions={}, device={})
    # last 10% of 20 iterations = iterations 18, 19: returns 10 (1 episode) and 20 (3 episodes)
    np.testing.assert_allclose(r.final_score, [(10 + 3 * 20) / 4])
    # Unweighted: the mean of the finite values in the window; NaN where there is none.
    from purejaxrl_lab.results import area_under_curve, final_scores

    np.testing.assert_allclose(final_scores(np.array([[5.0, 1.0, np.nan, 3.0]] * 2)), [3.0, 3.0])
    assert np.isnan(final_scores(np.full((1, 4), np.nan)))[0]
    # Area under the curve: NaN iterations carry the last value (2, 2, 4, 4 -> 3).
    np.testing.assert_allclose(area_under_curve(np.array([2.0, np.nan, 4.0, np.nan])), 3.0)


def test_save_load_roundtrip_and_no_overwrite(results, tmp_path):
    out = results.save(tmp_path / "run")
    assert {p.name for p in out.iterdir()} == {"summary.json", "metrics.jsonl", "metrics.npz",
                                               "params.npz"}
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o666 & ~umask}
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 * SMALL.num_iterations
    assert set(json.loads(lines[0])) >= {"seed", "iteration", "env_steps", "loss", "episode_return"}
    # The evaluation made after an iteration is in that iteration's row.
    last = json.loads(lines[SMALL.num_iterations - 1])
    assert last["eval_return"] == pytest.approx(float(results.metrics["eval_return"][0, -1]))
    loaded = lab.load(out)
    for k, v in results.metrics.items():
        np.testing.assert_array_equal(loaded.metrics[k], v)
    np.testing.assert_array_equal(loaded.final_return, results.final_return)
    assert loaded.config == json.loads(json.dumps(results.config))
    before = (out / "summary.json").read_text()
    with pytest.raises(FileExistsError):
        results.save(out)
    assert (out / "summary.json").read_text() == before
    # The saved params are the final params: the loaded policy acts as the in-memory one.
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_array_equal(lab.load_policy(out, seed=5)(obs), results.policy(5)(obs))
    np.testing.assert_array_equal(loaded.policy(5)(obs), results.policy(5)(obs))


def test_bad_input_errors_before_compilation():
    def err(match, **kw):
        args = {"agent": "ppo", "config": SMALL, "env": "CartPole-v1", "seeds": 1, **kw}
        with pytest.raises(ValueError, match=match):
            lab.run(args.pop("agent"), args.pop("config"), args.pop("env"), args.pop("seeds"),
                    progress=False, **args)

    err(r"unknown agent 'ppp'; closest: 'ppo'", agent="ppp")
    err(r"unknown environment id 'Cartpole-v0'", env="Cartpole-v0")
    err(r"seeds=0 is not allowed", seeds=0)
    err(r"seeds=\[1, 1\].*distinct", seeds=[1, 1])
    err(r"unknown config field of Config 'lerning_rate'; closest: 'learning_rate'",
        config={"lerning_rate": 1e-3})
    err(r"num_chunks=0", num_chunks=0)
    err(r"log_std_init=1.0 is not allowed: this option applies to continuous",
        config=dataclasses.replace(SMALL, log_std_init=1.0))
    with pytest.raises(ValueError, match=r"num_envs=0 is not allowed: expected an integer >= 1"):
        ppo.Config(num_envs=0)
    with pytest.raises(ValueError, match=r"num_minibatches=3 .* must divide .* 512"):
        ppo.Config(num_minibatches=3)
    with pytest.raises(ValueError, match=r"learning_rate=-1.0"):
        ppo.Config(learning_rate=-1.0)
    with pytest.raises(ValueError, match=r"total_timesteps=100 .* at least one batch"):
        ppo.Config(total_timesteps=100)


def test_discrete_only_option_on_continuous_env_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Cfg:
        double_q: bool = dataclasses.field(default=False, metadata=ONLY_DISCRETE)

    check_action_space(Cfg(double_q=True), discrete=True, env_name="CartPole-v1")
    with pytest.raises(ValueError, match=r"double_q=True .* discrete action spaces only, and Pendulum-v1 has continuous"):
        check_action_space(Cfg(double_q=True), discrete=False, env_name="Pendulum-v1")


def test_divergence_names_runs_and_iterations_and_stop_on_nan_stops(tmp_path):
    """A sweep whose second setting pushes the cart with a force of 3e38: its losses are NaN
    from the first iteration. The warning, `divergence()` and the summary name exactly those
    runs; the finite setting is not named. With stop_on_nan the sweep stops early, its results
    and a checkpoint where it stopped are saved, and they load back."""
    env = envs.make("CartPole-v1")
    config = dataclasses.replace(SMALL, total_timesteps=SMALL.total_timesteps * 4)  # 24 iterations
    grid = {"env.force_mag": [10.0, 3e38]}  # the second overflows the cart's state at once
    with pytest.warns(RuntimeWarning, match=r"non-finite values in metrics: setting 1 seed 0 from "
                                            r"iteration 0 \(.*loss.*\); setting 1 seed 1 from iteration 0"):
        r = lab.sweep("ppo", config, env, grid=grid, seeds=2, num_chunks=12, progress=False, eval_every=0)
    assert [(d["setting"], d["seed"], d["iteration"]) for d in r.divergence()] == [(1, 0, 0), (1, 1, 0)]
    assert "loss" in r.divergence()[0]["metrics"] and r.stopped is None and r.num_iterations == 24
    assert "non-finite (2 of 4 runs): setting 1 seed 0 from iteration 0" in r.table()
    stopped = lab.sweep("ppo", config, env, grid=grid, seeds=2, num_chunks=12, progress=False,
                        eval_every=0, stop_on_nan=True, checkpoint_dir=tmp_path / "run" / "checkpoints",
                        checkpoint_every=100)
    done = stopped.num_iterations
    assert stopped.stopped == {"iteration": done, "of": 24, "reason": "non-finite metrics (stop_on_nan)"}
    # Chunks of 2 iterations, one per call: chunk 1's NaNs are read while chunk 2 runs, after
    # which the sweep stops.
    assert done == 4
    # The finite setting trained exactly as in the full sweep up to there.
    np.testing.assert_array_equal(stopped.metrics["loss"][0], r.metrics["loss"][0, :, :done])
    store = ckpt.Checkpoints(tmp_path / "run" / "checkpoints")
    assert store.latest() == done
    store.close()
    stopped.save(tmp_path / "run")
    loaded = lab.load(tmp_path / "run")
    assert loaded.stopped == stopped.stopped and loaded.divergence() == stopped.divergence()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped"]["iteration"] == done and summary["divergence"][0]["setting"] == 1
    with pytest.raises(ValueError, match="stop_on_nan='yes' is not allowed: expected True or False"):
        lab.run("ppo", SMALL, "CartPole-v1", stop_on_nan="yes")


def test_evaluation_changes_no_training_number(results):
    """Evaluations draw keys of their own: a run without them trains bit for bit the same."""
    plain = lab.run("ppo", SMALL, "CartPole-v1", seeds=[0, 5], num_chunks=4, progress=False,
                    eval_every=0)
    assert "eval_return" not in plain.metrics and plain.eval_iterations == []
    for k, v in plain.metrics.items():
        np.testing.assert_array_equal(results.metrics[k], v, err_msg=k)
    # About ten evaluations per run by default: here 3 chunks of 2 iterations, one after each.
    assert results.eval_iterations == [2, 4, 6] and results.metrics["eval_return"].shape == (2, 3)
    lengths = results.metrics["eval_length"]
    assert np.all(lengths >= 8) and np.all(lengths <= 500)  # CartPole episodes: 8 to 500 steps
    # CartPole pays 1 per step: a return equals the length (means over the 10 episodes).
    np.testing.assert_allclose(results.metrics["eval_return"], lengths, rtol=1e-6)
