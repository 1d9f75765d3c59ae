"""The agent contract: what an agent module declares, so that the lab can run any family.

An agent is a module (`agents/ppo.py` is the example) with these names:

    Config       a frozen dataclass, one docstring per field; it may nest (sub-dataclasses
                 such as `network` or `search`). Every field has a default. Properties:
                   num_iterations       iterations of `update` in a run;
                   units_per_iteration  how many units one iteration consumes;
                   unit                 what those units are: "env steps", "rounds", "tokens",
                                        "examples" (the x-axis of curves and of throughput).
                 Optional class attribute SHAPE_FIELDS: the (dotted) names of fields that fix
                 array shapes, so that errors can say so.
    PRESETS      name -> Config: named configurations (may be empty).
    HParams      the dataclass of tunable hyperparameters, held as arrays in `state.hparams`
                 (float or int fields, each named like the top-level Config field it comes
                 from). A vmap over states with different values sweeps them in one program;
                 every other config field is fixed when the program is built.
    SCORE        `Score(metric, higher_is_better, ...)`: the metric that results summarise as
                 the final score, rank sweeps by, and show in progress bars, tables and plots.
    NAN_METRICS  metric names that may be NaN by design (e.g. no episode ended this
                 iteration); other non-finite metrics are reported as a problem.
    ACT_INPUT    what `act` takes as `x`: "observation" (an environment observation, batched
                 or not) or "env_state" (the environment's state, e.g. for a search agent; a
                 prompt for a sequence model is its environment's observation).
    make(config, env, env_params) -> Agent(init, update, act)
    make_train(config, env, env_params) -> train(key) -> (final state, metrics [iteration])

Optional names:

    ACTION_SPACES  the kinds of action space the agent handles: "discrete", "continuous",
                   "tokens" (a token task); default: any.
    ENV_KINDS      the kinds of environment the agent is made for: "bandit",
                   "contextual_bandit", "tabular" (`purejaxrl_lab.plan.env_kind`); default:
                   (None,), every environment that is none of these.
    EPISODIC       False for an agent that plays one never-ending problem per run (a
                   bandit): the lab runs no episode evaluations of it. Default True.
    LOADS          config fields that name saved runs to start from (`init_from`).
    PLOT_METRICS   metrics the CLI plots besides the score (curve_<metric>.png), with
                   PLOT_STATISTIC across seeds ("mean", "median" or "iqm", the default).

The functions of `Agent` (`agents.common.types`):

    init(key, hparams=None) -> state       a dataclass; state.params: everything `act`
                                           needs; state.hparams: an `HParams` of arrays.
                                           `hparams` maps some HParams field names to values
                                           (arrays of the fields' dtypes inside a sweep) that
                                           replace the config's from the start.
    update(state) -> (state, metrics)      one iteration; metrics: a flat dict of scalars,
                                           reduced in the graph, among them SCORE's metric
                                           (and its weight); no name starts with "eval_"
                                           (the lab's evaluations).
    act(params, x, key, deterministic=False) -> action
    init_carry = None                      (the default: a stateless policy)

A recurrent policy (e.g. `ppo.Config(recurrent=True)`) carries a memory from step to step.
Its `Agent` has `init_carry` and a carry in and out of `act`:

    init_carry(batch_shape) -> carry       its memory before an episode's first step: a
                                           pytree, leaves [*batch_shape, ...]
    act(params, x, key, deterministic=False, carry=None) -> (action, carry)
                                           carry: the one the previous step returned, or
                                           init_carry's where x is an episode's first
                                           input (None: init_carry of x's batch shape)

The lab's evaluation (`run_episodes`, `evaluate`) and `Policy` run such a policy with its
carry, initialised at every reset and re-initialised where an episode ended
(`agents.common.types.reset_carry`); state.params still holds everything it needs.

`check_agent_module(module)` checks the names above; the lab calls it whenever it resolves
an agent, checks the state when it prepares a run and the metrics before it compiles, and
raises `ContractError` naming what is missing. Nested configs call `normalize_fields` in
their own `__post_init__` too.
"""

from __future__ import annotations

import dataclasses
import inspect
from types import ModuleType
from typing import Any, Callable, Protocol, runtime_checkable

ACT_INPUTS = ("observation", "env_state")


class ContractError(ValueError):
    """An agent module does not follow the contract."""


@dataclasses.dataclass(frozen=True)
class Score:
    """What an agent's results are judged by.

    Attributes:
      metric: the name of a per-iteration metric of `update`.
      higher_is_better: False for a cost such as regret or loss.
      weight: optional name of a per-iteration count metric (e.g. "episodes") that says how
        many events the iteration's value averages; the final score then weights each
        iteration by it, so every event counts the same.
      label: how tables and plots name the score ("return"); default: the metric's name.
    """

    metric: str
    higher_is_better: bool = True
    weight: str | None = None
    label: str | None = None

    @property
    def name(self) -> str:
        return self.label or self.metric.replace("_", " ")


@runtime_checkable
class AgentModule(Protocol):
    """The names an agent module declares (see the module docstring)."""

    Config: type
    PRESETS: dict
    HParams: type
    SCORE: Score
    NAN_METRICS: tuple
    ACT_INPUT: str
    make: Callable[..., Any]
    make_train: Callable[..., Any]


_DESCRIPTIONS = {  # what each name of `AgentModule` must be
    "Config": "a frozen dataclass of settings",
    "PRESETS": "a dict of named Configs (may be empty)",
    "HParams": "the dataclass of tunable hyperparameters held in state.hparams",
    "SCORE": "agents.common.Score(metric, higher_is_better)",
    "NAN_METRICS": "a tuple of metric names that may be NaN by design (may be empty)",
    "ACT_INPUT": f"what act takes: one of {ACT_INPUTS}",
    "make": "make(config, env, env_params) -> Agent(init, update, act)",
    "make_train": "make_train(config, env, env_params) -> train(key)",
}
CONFIG_PROPERTIES = ("num_iterations", "units_per_iteration", "unit")


def check_agent_module(module: ModuleType) -> None:
    """Raises a ValueError naming everything `module` lacks of the agent contract."""
    name = getattr(module, "__name__", repr(module))
    problems = [f"{attr} ({_DESCRIPTIONS[attr]})" for attr in AgentModule.__annotations__
                if not hasattr(module, attr)]
    if not problems:
        problems += _check_values(module)
    if problems:
        raise ContractError(f"agent module {name!r} does not follow the agent contract "
                         f"(agents.common.contract): missing or wrong: " + "; ".join(problems))


def _check_values(module) -> list[str]:
    out = []
    config_cls = module.Config
    if not (inspect.isclass(config_cls) and dataclasses.is_dataclass(config_cls)):
        return [f"Config ({_DESCRIPTIONS['Config']}), got {config_cls!r}"]
    try:
        config = config_cls()
    except Exception as e:  # noqa: BLE001 - reported, whatever it is
        return [f"Config() (every field needs a default): {type(e).__name__}: {e}"]
    for prop in CONFIG_PROPERTIES:
        if not hasattr(config, prop):
            out.append(f"Config.{prop} (a property)")
    if hasattr(config, "unit") and not isinstance(config.unit, str):
        out.append(f"Config.unit (a string such as 'env steps'), got {config.unit!r}")
    if not isinstance(module.PRESETS, dict) or not all(
            isinstance(p, config_cls) for p in module.PRESETS.values()):
        out.append(f"PRESETS ({_DESCRIPTIONS['PRESETS']})")
    if not (inspect.isclass(module.HParams) and dataclasses.is_dataclass(module.HParams)):
        out.append(f"HParams ({_DESCRIPTIONS['HParams']})")
    if not isinstance(module.SCORE, Score):
        out.append(f"SCORE ({_DESCRIPTIONS['SCORE']}), got {module.SCORE!r}")
    nan = module.NAN_METRICS
    if isinstance(nan, str) or not isinstance(nan, (tuple, list, frozenset, set)):
        out.append(f"NAN_METRICS ({_DESCRIPTIONS['NAN_METRICS']}), got {nan!r}")
    if module.ACT_INPUT not in ACT_INPUTS:
        out.append(f"ACT_INPUT ({_DESCRIPTIONS['ACT_INPUT']}), got {module.ACT_INPUT!r}")
    for fn in ("make", "make_train"):
        if not callable(getattr(module, fn)):
            out.append(f"{fn} ({_DESCRIPTIONS[fn]})")
    return out


def shape_fields(config) -> frozenset[str]:
    """The dotted names of fields that fix array shapes, from the SHAPE_FIELDS of the config
    class and of its nested configs."""
    out = set(getattr(type(config), "SHAPE_FIELDS", ()))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out |= {f"{f.name}.{n}" for n in shape_fields(value)}
    return frozenset(out)
