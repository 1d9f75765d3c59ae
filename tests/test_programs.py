"""The program cache: which runs it keeps, what its key sees, and that a loaded program
computes the same numbers as a traced one."""

import dataclasses
import importlib
import sys
import types
import warnings

import jax
import numpy as np
import pytest

import envs
import purejaxrl_lab as lab
from agents import ppo
from purejaxrl_lab import programs, runner, runtime
from tests.conftest import SMALL


@pytest.fixture
def cache_dir(tmp_path):
    programs.set_directory(tmp_path / "programs")
    yield tmp_path / "programs"
    programs.set_directory(None)


def key_of(agent="ppo", config=SMALL, env="CartPole-v1", seeds=2, **kw):
    plan = runner.prepare(agent, config, env, seeds, **kw)
    return programs.key(plan, runtime.Layout(plan.batch, plan.devices), 3, False)


def test_only_runs_whose_code_the_key_sees_are_cached(cache_dir):
    assert key_of() is not None
    # An (env, params) pair of the caller's, even of a gymnax env, may carry state: traced.
    assert key_of(env=envs.make("CartPole-v1")) is None
    # An agent module of the caller's: traced.
    mine = types.ModuleType("my_agent")
    mine.Config, mine.make = ppo.Config, ppo.make
    assert key_of(agent=mine) is None
    # An environment a user registered: traced.
    envs.register("MyCartPole-v9", lambda: envs.make("CartPole-v1")[0])
    try:
        assert not envs.is_builtin("MyCartPole-v9") and envs.is_builtin("CartPole-v1")
        assert key_of(env="MyCartPole-v9") is None
    finally:
        envs.registry._OWN.pop("MyCartPole-v9")
    # The cache off: nothing is keyed.
    programs.set_directory(None)
    assert key_of() is None


def test_key_changes_with_what_decides_the_program(cache_dir, tmp_path, monkeypatch):
    base = key_of()
    assert key_of() == base
    # Seeds and swept values are inputs of the programs, not part of them.
    assert key_of(seeds=[5, 9]) == base
    assert (key_of(grid={"learning_rate": [1e-3, 3e-4]})
            == key_of(grid={"learning_rate": [1e-2, 1e-4]}))
    # Everything else that shapes or fills the program is.
    changed = {
        key_of(seeds=3),
        key_of(config=dataclasses.replace(SMALL, learning_rate=1e-3)),
        key_of(env="Acrobot-v1"),
        key_of(grid={"learning_rate": [1e-3, 3e-4]}),
        key_of(grid={"ent_coef": [0.0, 0.01]}),
    }
    assert base not in changed and len(changed) == 5
    # Editing (or upgrading) a loaded module of a dependency misses.
    monkeypatch.setattr(programs, "DEPENDENCIES", programs.DEPENDENCIES | {"pjl_dep_probe"})
    (tmp_path / "pjl_dep_probe.py").write_text("X = 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module("pjl_dep_probe")
        before = key_of()
        (tmp_path / "pjl_dep_probe.py").write_text("X = 12\n")
        assert key_of() != before
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("pjl_dep_probe")


def test_damaged_or_unwritable_entries_are_misses(cache_dir, tmp_path):
    name = key_of()
    cache_dir.mkdir(parents=True)
    (cache_dir / (name + programs.SUFFIX)).write_bytes(b"not a program")
    assert programs.load(name) is None
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    programs.set_directory(blocked)
    serializable = types.SimpleNamespace(serialize=lambda: b"program")
    fake = programs.Programs(init=serializable, chunk=serializable, state_tree=None)
    with pytest.warns(RuntimeWarning, match="program cache: could not store"):
        programs.save(name, fake)


def test_loaded_programs_compute_the_traced_numbers(cache_dir):
    """Cache off (traced) == first cached run (exported, stored) == second (loaded, no tracing)."""
    programs.set_directory(None)
    traced = lab.run("ppo", SMALL, "CartPole-v1", seeds=2, num_chunks=2, progress=False)
    programs.set_directory(cache_dir)
    first = lab.run("ppo", SMALL, "CartPole-v1", seeds=2, num_chunks=2, progress=False)
    assert len(list(cache_dir.glob("*" + programs.SUFFIX))) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = lab.run("ppo", SMALL, "CartPole-v1", seeds=2, num_chunks=2, progress=False)
    assert (traced.programs_cached, first.programs_cached, second.programs_cached) == (False, False, True)
    for r in (first, second):
        for k, v in traced.metrics.items():
            np.testing.assert_array_equal(r.metrics[k], v, err_msg=k)
        for a, b in zip(jax.tree.leaves(traced.final_state.params),
                        jax.tree.leaves(r.final_state.params)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
