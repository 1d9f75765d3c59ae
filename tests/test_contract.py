"""The agent contract (agents.common.contract), nested configs, and bad Python-API input refused
before anything compiles."""

import dataclasses
import types

import jax
import pytest

import agents
import envs
import purejaxrl_lab as lab
from agents import ppo
from agents.common import Score, check_agent_module, with_overrides
from agents.common.config import config_from_dict, flatten
from agents.common.contract import shape_fields
from purejaxrl_lab import cli
from tests import toy_agent


def agent_like(**changes) -> types.ModuleType:
    """A copy of the toy agent's module with some names changed (None: removed)."""
    module = types.ModuleType("my_agent")
    for name in ("Config", "PRESETS", "HParams", "SCORE", "NAN_METRICS", "ACT_INPUT", "make",
                 "make_train"):
        setattr(module, name, getattr(toy_agent, name))
    for name, value in changes.items():
        if value is None:
            delattr(module, name)
        else:
            setattr(module, name, value)
    return module


def test_shipped_agents_follow_the_contract():
    for name in agents.available():
        check_agent_module(agents.get(name))
    check_agent_module(toy_agent)
    assert ppo.SCORE == Score("episode_return", True, weight="episodes", label="return")
    assert ppo.Config().unit == "env steps" and toy_agent.Config().unit == "rounds"
    assert shape_fields(ppo.Config()) >= {"num_envs", "hidden_sizes"}


@pytest.mark.parametrize("changes, message", [
    ({"SCORE": None}, r"missing or wrong: SCORE \(agents.common.Score\(metric, higher_is_better\)\)"),
    ({"SCORE": "regret"}, r"SCORE .* got 'regret'"),
    ({"ACT_INPUT": "pixels"}, r"ACT_INPUT \(what act takes: one of \('observation', 'env_state'\)\), got 'pixels'"),
    ({"NAN_METRICS": "episode_return"}, r"NAN_METRICS .* got 'episode_return'"),
    ({"make_train": None, "HParams": None}, r"HParams \(.*\); make_train \(make_train"),
    ({"Config": dataclasses.make_dataclass("C", [("x", int)])}, r"Config\(\) \(every field needs a default\)"),
    ({"Config": dataclasses.make_dataclass("C", [("x", int, 1)])}, r"Config.num_iterations \(a property\)"),
])
def test_contract_violations_are_named(changes, message):
    module = agent_like(**changes)
    with pytest.raises(ValueError, match=r"agent module 'my_agent' does not follow the agent contract "
                                         r"\(agents.common.contract\): .*" + message):
        check_agent_module(module)
    with pytest.raises(ValueError, match="does not follow the agent contract"):
        lab.prepare(module, None, "BernoulliBandit-misc")


def test_a_module_path_and_a_registered_name_reach_the_same_agent():
    assert agents.get("tests.toy_agent") is toy_agent
    agents.register("toy", "tests.toy_agent")
    try:
        assert agents.get("toy") is toy_agent and agents.name_of(toy_agent) == "toy"
        with pytest.raises(ValueError, match="already registered for tests.toy_agent"):
            agents.register("toy", "agents.ppo")
    finally:
        agents._AGENTS.pop("toy")
    assert agents.name_of(toy_agent) == "tests.toy_agent"
    with pytest.raises(ValueError, match="unknown agent 'ppp'; closest: 'ppo'"):
        agents.get("ppp")


def test_nested_configs():
    config = toy_agent.Config()
    assert flatten(config) == {"total_rounds": 1536, "num_envs": 8, "rounds_per_env": 16,
                               "step_size": 0.1, "decay_rounds": 512,
                               "exploration.epsilon_start": 1.0, "exploration.epsilon_end": 0.05}
    dotted = with_overrides(config, {"exploration.epsilon_end": 0.01, "decay_rounds": 64})
    nested = with_overrides(config, {"exploration": {"epsilon_end": 0.01}, "decay_rounds": 64})
    assert dotted == nested and dotted.exploration.epsilon_end == 0.01
    assert dotted.exploration.epsilon_start == 1.0  # untouched
    # The JSON round trip of checkpoints and summaries.
    assert config_from_dict(toy_agent.Config, dataclasses.asdict(dotted)) == dotted
    with pytest.raises(ValueError, match=r"unknown config field of Config 'exploration.epsilon_ned'; "
                                         r"closest: 'exploration.epsilon_end'"):
        with_overrides(config, {"exploration.epsilon_ned": 0.1})
    with pytest.raises(ValueError, match="unknown config field of Config 'step_size.x'"):
        with_overrides(config, {"step_size.x": 0.1})


def test_config_values_are_brought_to_their_types():
    # Integral floats are integers (1e5), lists tuples; anything else is refused by name.
    config = ppo.Config(total_timesteps=1e5, hidden_sizes=[32, 32.0], learning_rate=1)
    assert config.total_timesteps == 100_000 and isinstance(config.total_timesteps, int)
    assert config.hidden_sizes == (32, 32) and isinstance(config.learning_rate, float)
    for kwargs, message in [({"hidden_sizes": 64}, r"hidden_sizes=64 is not allowed: expected a tuple"),
                            ({"total_timesteps": 1.5e5 + 0.5}, r"total_timesteps=150000.5 .* an integer"),
                            ({"num_envs": True}, r"num_envs=True .* an integer"),
                            ({"anneal_lr": 1}, r"anneal_lr=1 .* True or False"),
                            ({"hidden_sizes": ("a",)}, r"hidden_sizes='a' .* an integer")]:
        with pytest.raises(ValueError, match=message):
            ppo.Config(**kwargs)
    assert toy_agent.Config(exploration={"epsilon_end": 0.2}).exploration == toy_agent.Exploration(1.0, 0.2)


def test_bad_python_input_is_refused_before_compilation():
    env, params = envs.make("CartPole-v1")
    env.action_space(params), jax.random.key(0)  # eager ops compiled once, outside the count

    def refused(match, *args, **kwargs):
        before = lab.runtime.compile_counts()["programs"]
        with pytest.raises(ValueError, match=match):
            lab.run(*args, progress=False, **kwargs)
        assert lab.runtime.compile_counts()["programs"] == before

    refused(r"hidden_sizes=64 is not allowed: expected a tuple", "ppo", {"hidden_sizes": 64})
    refused(r"env=\(..., None\) is not allowed: expected the environment's parameters", "ppo",
            None, (env, None))
    refused(r"env=\('CartPole-v1', ...\) is not allowed: pass the id alone", "ppo", None,
            ("CartPole-v1", params))
    refused(r"unknown preset of agents.ppo 'pendullum'; closest: 'pendulum'", "ppo", "pendullum")
    refused(r"eval_every=-1 is not allowed", "ppo", None, eval_every=-1)
    assert lab.prepare("ppo", "pendulum", "Pendulum-v1").config == ppo.PRESETS["pendulum"]
    assert lab.prepare("ppo", {"total_timesteps": 1e5}).config.total_timesteps == 100_000


def test_cli_refuses_config_fields_that_collide_with_its_options(capsys):
    Clash = dataclasses.make_dataclass("Config", [("seeds", int, 3)], bases=(toy_agent.Config,),
                                       frozen=True)
    module = agent_like(Config=Clash, PRESETS={})
    module.__name__ = "tests.clashing_agent"
    import sys

    sys.modules["tests.clashing_agent"] = module
    try:
        assert cli.main(["train", "tests.clashing_agent"]) == 2
    finally:
        sys.modules.pop("tests.clashing_agent")
    err = capsys.readouterr().err
    assert "the agent's Config has field(s) seeds, which the CLI uses for its own options" in err
