"""Resolving and checking a run before anything compiles: `prepare` -> `Plan`.

Every input of `run` and `sweep` is checked here, and bad input raises a ValueError naming
the field, the value and what is allowed. What the lab knows of an agent is what the agent
module declares (`agents.common.contract`), checked when the agent is resolved; what only
the traced programs reveal (the metrics `update` returns) is checked before they compile.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import numpy as np

import agents
import envs
from agents.common import check_agent_module, with_overrides
from agents.common.config import flatten
from agents.common.contract import ContractError, shape_fields
from purejaxrl_lab import calls, runtime
from purejaxrl_lab import checkpoint as ckpt
from purejaxrl_lab import grid as grid_lib

# Evaluations per run when `eval_every` is left to the lab.
EVALUATIONS_PER_RUN = 10


# --------------------------------------------------------------------------- resolving inputs


def resolve_agent(agent: str | ModuleType) -> tuple[str, ModuleType]:
    """-> (name, module): a registered name, an importable module path, or a module."""
    if isinstance(agent, str):
        return agent, agents.get(agent)
    if isinstance(agent, ModuleType):
        check_agent_module(agent)
        return agents.name_of(agent), agent
    raise ValueError(f"agent={agent!r} is not allowed: expected a name from "
                     f"{agents.available()}, a module path, or an agent module")


def module_of(name: str, module_path: str | None = None) -> ModuleType:
    """The agent module a saved run names: registered, else by its recorded module path."""
    try:
        return agents.get(name)
    except ValueError:
        if module_path is None:
            raise
        check_agent_module(module := importlib.import_module(module_path))
        return module


def resolve_config(module: ModuleType, config: Any):
    """None (defaults), a Config, a mapping of (dotted) field overrides, or a preset's name."""
    if config is None:
        return module.Config()
    if isinstance(config, module.Config):
        return config
    if isinstance(config, str):
        if config not in module.PRESETS:
            raise envs.unknown_name_error(f"preset of {module.__name__}", config, list(module.PRESETS))
        return module.PRESETS[config]
    if isinstance(config, Mapping):
        return with_overrides(module.Config(), config)
    raise ValueError(f"config={config!r} is not allowed: expected None, a "
                     f"{module.__name__}.Config, a mapping of field overrides or a preset name "
                     f"({', '.join(module.PRESETS) or 'none'})")


def resolve_env(env: Any):
    """-> (env id or name, env, env_params) from an id or an (env, env_params) pair."""
    if isinstance(env, str):
        return (env, *envs.make(env))
    if isinstance(env, tuple) and len(env) == 2:
        env_obj, env_params = env
        if isinstance(env_obj, str):
            raise ValueError(f"env=({env_obj!r}, ...) is not allowed: pass the id alone "
                             f"(env={env_obj!r}) or an environment object with its parameters "
                             f"(envs.make({env_obj!r}))")
        missing = [m for m in ("reset", "step", "action_space", "observation_space")
                   if not callable(getattr(env_obj, m, None))]
        if missing:
            raise ValueError(f"env=({env_obj!r}, ...) is not allowed: expected a gymnax "
                             f"environment (it has no {', '.join(missing)})")
        if not dataclasses.is_dataclass(env_params) or isinstance(env_params, type):
            raise ValueError(f"env=(..., {env_params!r}) is not allowed: expected the "
                             f"environment's parameters (env.default_params), a dataclass")
        return (getattr(env_obj, "name", type(env_obj).__name__), env_obj, env_params)
    raise ValueError(f"env={env!r} is not allowed: expected an environment id "
                     f"(see envs.registered()) or an (env, env_params) pair")


def resolve_seeds(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, bool):
        raise ValueError(f"seeds={seeds!r} is not allowed: expected an integer >= 1 or a list of integers")
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ValueError(f"seeds={seeds!r} is not allowed: expected an integer >= 1")
        return list(range(int(seeds)))
    if isinstance(seeds, Sequence) and seeds and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in seeds
    ):
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds={list(seeds)!r} is not allowed: seeds must be distinct")
        return [int(s) for s in seeds]
    raise ValueError(f"seeds={seeds!r} is not allowed: expected an integer >= 1 or a "
                     f"non-empty list of distinct non-negative integers")


def _positive_int(name: str, value: Any, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}={value!r} is not allowed: expected an integer >= {low}")
    return int(value)


def seed_key_data(seeds: Sequence[int]) -> np.ndarray:
    """Key data [num_seeds, ...] of `jax.random.key(seed)`: seed i of a batched run is the
    single run with that key."""
    return np.stack([np.asarray(jax.random.key_data(jax.random.key(s))) for s in seeds])


def tunables(abstract_state) -> dict[str, np.dtype]:
    """The agent's tunable hyperparameters, the fields of its `state.hparams`, with their dtypes."""
    hparams = getattr(abstract_state, "hparams", None)
    if hparams is None:
        return {}
    return {f.name: np.dtype(getattr(hparams, f.name).dtype) for f in dataclasses.fields(hparams)}


# --------------------------------------------------------------------------- the plan


@dataclasses.dataclass(frozen=True)
class Plan:
    """A validated run or sweep, built without compiling anything (see `prepare`)."""

    name: str
    module: ModuleType
    config: Any
    env_id: str
    env: Any
    env_params: Any
    seeds: list[int]
    settings: list[dict] | None  # None for a plain run
    swept_dtypes: dict[str, np.dtype]  # swept name -> dtype of its array in the program
    num_chunks: int
    devices: list
    agent: Any  # the Agent `module.make` built for the base config
    eval_every: int = 0  # chunks between evaluations (and one after the last); 0: none
    eval_episodes: int = 10
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 5
    resume_step: int | None = None  # the checkpoint to continue from
    loaded: dict | None = None  # config field -> the Policy of the saved run it names (LOADS)
    stop_on_nan: bool = False  # stop within a chunk of a metric going non-finite

    @property
    def num_settings(self) -> int:
        return 1 if self.settings is None else len(self.settings)

    @property
    def batch(self) -> int:
        """Runs trained together: settings x seeds."""
        return self.num_settings * len(self.seeds)

    @property
    def chunk_length(self) -> int:
        """Iterations per chunk (`calls.chunk_length`)."""
        return calls.chunk_length(self.config.num_iterations, self.num_chunks)[0]

    @property
    def total_chunks(self) -> int:
        return calls.total_chunks(self.config.num_iterations, self.num_chunks)

    @property
    def eval_interval(self) -> int:
        """Iterations between evaluations (0: none)."""
        return self.eval_every * self.chunk_length

    def meta(self) -> dict[str, Any]:
        """What identifies this run in its checkpoints."""
        return {
            "format": ckpt.FORMAT, "agent": self.name, "agent_module": self.module.__name__,
            "env": self.env_id, "config": ckpt.json_ready(dataclasses.asdict(self.config)),
            "env_params": ckpt.env_params_dict(self.env_params),
            "seeds": list(self.seeds), "settings": ckpt.json_ready(self.settings),
            "num_chunks": self.num_chunks,
            "evaluation": {"every_iterations": self.eval_interval, "episodes": self.eval_episodes},
        }

    def env_params_for(self, setting: Mapping[str, Any]):
        """The environment parameters of a run: env.* values of `setting` (arrays inside a
        trace) replace the base ones."""
        env_values = grid_lib.split(setting)[1]
        return self.env_params.replace(**env_values) if env_values else self.env_params

    def make_agent(self, setting: Mapping[str, Any]):
        """The agent of one run (its environment parameters set by `setting`)."""
        if not grid_lib.split(setting)[1]:
            return self.agent
        return make_agent(self.module, self.config, self.env, self.env_params_for(setting),
                          self.loaded)

    def init_one(self, key_data: jax.Array, setting: Mapping[str, jax.Array]):
        hparams = grid_lib.split(setting)[0]
        agent = self.make_agent(setting)
        key = jax.random.wrap_key_data(key_data)
        return agent.init(key, hparams) if hparams else agent.init(key)

    def update_one(self, state, setting: Mapping[str, jax.Array]):
        return self.make_agent(setting).update(state)

    def inputs(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Host arrays [batch, ...]: each run's key data and setting values."""
        n = len(self.seeds)
        key_data = np.tile(seed_key_data(self.seeds), (self.num_settings, 1))
        settings = {name: np.repeat(np.array([s[name] for s in self.settings], dtype), n)
                    for name, dtype in self.swept_dtypes.items()}
        return key_data, settings


# --------------------------------------------------------------------------- checks


def load_runs(module: ModuleType, config) -> dict | None:
    """The saved runs the config names in the fields the module lists in `LOADS` (e.g. a
    sequence agent's `init_from`): field -> `Policy` of seed `<field>_seed` (when the config
    has it) or of the run's first seed. None when it names none."""
    loaded = {}
    for field in getattr(module, "LOADS", ()):
        path = getattr(config, field, "")
        if not path:
            continue
        try:
            seeds = ckpt.run_record(Path(path))[0]["seeds"]
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{field}={path!r} is not allowed: {e}") from None
        seed = getattr(config, f"{field}_seed", None)
        if seed is None:
            seed = seeds[0]
        elif seed not in seeds:
            raise ValueError(f"{field}_seed={seed} is not allowed: the run {path!r} has seeds {seeds}")
        try:
            loaded[field] = ckpt.load_policy(path, seed=seed)
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{field}={path!r} is not allowed: {e}") from None
    return loaded or None


def make_agent(module: ModuleType, config, env_obj, env_params, loaded: dict | None = None):
    """`module.make`, passing the loaded runs (`load_runs`) to an agent that takes them."""
    if loaded:
        return module.make(config, env_obj, env_params, loaded=loaded)
    return module.make(config, env_obj, env_params)


def _check_env_sweep(plan: Plan) -> None:
    """Traces (does not compile) one update with the env.* values as arrays: an environment
    that needs one of them as a Python value (a shape, a branch) is refused by name."""
    names = [n for n in plan.swept_dtypes if n.startswith(grid_lib.ENV_PREFIX)]
    if not names:
        return
    key_data, settings = plan.inputs()
    spec = lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype)  # noqa: E731
    try:
        state = jax.eval_shape(plan.init_one, spec(key_data), {k: spec(v) for k, v in settings.items()})
        jax.eval_shape(plan.update_one, state, {k: spec(v) for k, v in settings.items()})
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
            jax.errors.TracerIntegerConversionError, TypeError) as e:
        raise ValueError(
            f"{', '.join(names)} cannot be swept in one compiled program: {plan.env_id} uses "
            f"it as a Python value (a shape or a branch), not an array "
            f"({type(e).__name__}). Run one sweep per value instead") from None


def _resume_meta(resume, checkpoint_dir) -> tuple[Path, int, dict]:
    """(checkpoint directory, newest complete step, its meta) of `resume`."""
    if not Path(resume).is_dir():
        raise ValueError(f"resume={str(resume)!r} is not allowed: no such directory")
    directory = ckpt.directory_of(resume).absolute()
    if checkpoint_dir is not None and Path(checkpoint_dir).absolute() != directory:
        raise ValueError(f"checkpoint_dir={str(checkpoint_dir)!r} is not allowed with "
                         f"resume={str(resume)!r}: a resumed run keeps checkpointing where it was")
    store = ckpt.Checkpoints(directory)
    try:
        step = store.latest()
        if step is None:
            raise ValueError(f"resume={str(resume)!r} is not allowed: it holds no complete checkpoint")
        return directory, step, store.meta(step)
    finally:
        store.close()


def _check_checkpoint_dir(checkpoint_dir) -> Path | None:
    if checkpoint_dir is None:
        return None
    directory = Path(checkpoint_dir).absolute()
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"checkpoint_dir={str(checkpoint_dir)!r} is not allowed: it is a file")
    if ckpt.holds_checkpoints(directory):
        raise ValueError(f"checkpoint_dir={str(checkpoint_dir)!r} already holds checkpoints; "
                         f"pass resume={str(checkpoint_dir)!r} to continue that run, or choose a "
                         f"new directory")
    return directory


def _check_state(module: ModuleType, config, abstract_state) -> None:
    """The state has `params`, and every field of `state.hparams` names a config field."""
    where = f"agent module {module.__name__!r}"
    if not (dataclasses.is_dataclass(abstract_state) and hasattr(abstract_state, "params")):
        raise ContractError(f"{where}: init must return a dataclass with a `params` field "
                            f"(agents.common.contract), got {type(abstract_state).__name__}")
    names = flatten(config)
    for name in tunables(abstract_state):
        if name not in names:
            raise ContractError(f"{where}: state.hparams.{name} names no field of its Config "
                                f"(agents.common.contract: each tunable hyperparameter is named "
                                f"like the config field it comes from)")


def action_kind(env_obj, env_params) -> str:
    """"discrete" or "continuous": the kind of the environment's action space."""
    from gymnax.environments import spaces

    space = env_obj.action_space(env_params)
    return "discrete" if isinstance(space, spaces.Discrete) else "continuous"


def agents_for(kind: str) -> list[str]:
    """Registered agents whose ACTION_SPACES include `kind` (agents that declare none fit any)."""
    return [n for n in agents.available()
            if kind in getattr(agents.get(n), "ACTION_SPACES", ("discrete", "continuous"))
            and None in getattr(agents.get(n), "ENV_KINDS", (None,))]  # not bandit/tabular


def _check_action_space(name: str, module: ModuleType, env_id: str, env_obj, env_params) -> None:
    """An agent that declares ACTION_SPACES only runs on environments with those actions; "tokens"
    names the token tasks (discrete actions that extend a sequence)."""
    from envs import token_tasks

    kinds = getattr(module, "ACTION_SPACES", None)
    if kinds is None:
        return
    kind = action_kind(env_obj, env_params)
    if "tokens" in kinds and token_tasks.is_token_task(env_obj):
        return
    if kind not in kinds:
        if "tokens" in kinds:
            raise ValueError(f"env: agent {name} generates token sequences and needs a token task "
                             f"({', '.join(token_tasks.TASKS)}), not {env_id}; agents for "
                             f"{kind} actions: {', '.join(agents_for(kind))}")
        raise ValueError(f"env: agent {name} acts in {' or '.join(kinds)} action spaces, and "
                         f"{env_id} has {kind} actions ({env_obj.action_space(env_params)}); "
                         f"agents for {kind} actions: {', '.join(agents_for(kind))}")


ENV_KIND_NAMES = {"bandit": "a bandit without context", "contextual_bandit": "a contextual bandit",
                  "tabular": "a tabular MDP"}


def env_kind(env_obj) -> str | None:
    """"contextual_bandit", "bandit", "tabular", or None for any other environment."""
    if envs.is_bandit(env_obj):
        return "contextual_bandit" if envs.is_contextual(env_obj) else "bandit"
    return "tabular" if envs.is_tabular(env_obj) else None


def agents_for_env_kind(kind: str | None) -> list[str]:
    """Registered agents that run on environments of `kind` (`ENV_KINDS`; None: agents that
    declare none, which run on every other environment)."""
    return [n for n in agents.available() if kind in getattr(agents.get(n), "ENV_KINDS", (None,))]


def _check_env_kind(name: str, module: ModuleType, env_id: str, env_obj) -> None:
    """Bandit and tabular agents (ENV_KINDS) run only on their kind of environment, and the
    other agents never on a bandit or a tabular MDP."""
    kinds = getattr(module, "ENV_KINDS", (None,))
    kind = env_kind(env_obj)
    if kind in kinds:
        return
    if kind is None:
        wanted = " or ".join(ENV_KIND_NAMES[k] for k in kinds)
        raise ValueError(f"env: agent {name} needs {wanted}, and {env_id} is none; environments "
                         f"for it: {', '.join(_env_ids_of(kinds))}")
    fitting = ", ".join(agents_for_env_kind(kind))
    if kinds == (None,):
        raise ValueError(f"env: {env_id} is {ENV_KIND_NAMES[kind]}, which agent {name} is not "
                         f"made for; agents for it: {fitting}")
    wanted = " or ".join(ENV_KIND_NAMES[k] for k in kinds)
    raise ValueError(f"env: agent {name} needs {wanted}, and {env_id} is {ENV_KIND_NAMES[kind]}; "
                     f"agents for it: {fitting}")


def _env_ids_of(kinds) -> list[str]:
    from envs import bandits, tabular

    ids = []
    if "bandit" in kinds:
        ids += [i for i, cls in bandits.ENVIRONMENTS.items() if not cls.contextual]
    if "bandit" in kinds or "contextual_bandit" in kinds:
        ids += [i for i, cls in bandits.ENVIRONMENTS.items() if cls.contextual]
    if "tabular" in kinds:
        ids += list(tabular.ENVIRONMENTS)
    return ids


def state_nbytes(abstract_state) -> int:
    """Bytes of one run's state, from its shapes (keys counted as their key data)."""
    def nbytes(a):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a = jax.eval_shape(jax.random.key_data, a)
        return math.prod(a.shape) * np.dtype(a.dtype).itemsize

    return sum(nbytes(a) for a in jax.tree.leaves(abstract_state))


def memory_limit(device: jax.Device) -> int | None:
    """Bytes `device` can hold: what JAX reports for an accelerator (`memory_stats`), the
    machine's physical memory for the CPU backend, None where neither is known."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - a backend that cannot say
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    if device.platform == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def check_memory(abstract_state, batch: int, devices: Sequence[jax.Device],
                 limit: int | None = None) -> None:
    """Refuses, before anything compiles, a batch of runs whose states (replay buffers
    included) would not fit the memory of a device: the CPU devices of a process share the
    machine's memory; each accelerator holds its share of the runs. `limit`: bytes per device (default
    `memory_limit`)."""
    per_run = state_nbytes(abstract_state)
    cpu = devices[0].platform == "cpu"
    runs = math.ceil(batch / (jax.process_count() if cpu else len(devices)))
    local = [d for d in devices if d.process_index == jax.process_index()] or devices
    limit = memory_limit(local[0]) if limit is None else limit
    if limit is None or per_run * runs <= limit:
        return
    fields = {f.name: state_nbytes(getattr(abstract_state, f.name))
              for f in dataclasses.fields(abstract_state)}
    largest = max(fields, key=fields.get)
    where = "this machine's memory" if cpu else f"the memory {devices[0].platform} reports free"
    raise ValueError(
        f"config: {runs} run(s) of {_gib(per_run)} each ({_gib(fields[largest])} of it in "
        f"state.{largest}) need {_gib(per_run * runs)}, more than {where} ({_gib(limit)}); "
        f"use fewer seeds or settings, more devices, or smaller buffers (e.g. buffer_size)")


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**27 else f"{n / 2**20:.3g} MiB"


def prepare(agent: str | ModuleType, config: Any = None, env: Any = "CartPole-v1",
            seeds: int | Sequence[int] = 1, *, grid: Mapping | None = None,
            settings: Sequence | Mapping | None = None, sweep: bool = False, num_chunks: int = 20,
            devices: int | None = None, checkpoint_dir: str | Path | None = None,
            checkpoint_every: int = 5, resume: str | Path | None = None,
            eval_every: int | None = None, eval_episodes: int = 10,
            stop_on_nan: bool = False) -> Plan:
    """Resolves and checks every input of `run` / `sweep`; raises ValueError, compiles nothing.

    `eval_every=None` evaluates about `EVALUATIONS_PER_RUN` times per run; 0 never. A resumed
    run keeps the chunking of its checkpoint (`num_chunks` is taken from it).
    """
    if not isinstance(stop_on_nan, (bool, np.bool_)):
        raise ValueError(f"stop_on_nan={stop_on_nan!r} is not allowed: expected True or False")
    name, module = resolve_agent(agent)
    config = resolve_config(module, config)
    if config.num_iterations >= 2**31:  # iteration counters are int32 arrays
        raise ValueError(f"config: {config.num_iterations:.3g} iterations of {config.units_per_iteration} "
                         f"{config.unit} are not allowed: at most 2**31 - 1 fit the programs' counters")
    env_id, env_obj, env_params = resolve_env(env)
    seed_list = resolve_seeds(seeds)
    num_chunks = _positive_int("num_chunks", num_chunks)
    eval_episodes = _positive_int("eval_episodes", eval_episodes)
    checkpoint_every = _positive_int("checkpoint_every", checkpoint_every)
    resumed = None if resume is None else _resume_meta(resume, checkpoint_dir)
    if resumed is not None:
        num_chunks = resumed[2].get("num_chunks", num_chunks)
    total = calls.total_chunks(config.num_iterations, num_chunks)
    episodic = getattr(module, "EPISODIC", True)
    if eval_every is None:
        eval_every = max(1, round(total / EVALUATIONS_PER_RUN)) if episodic else 0
    else:
        eval_every = _positive_int("eval_every", eval_every, allow_zero=True)
        if eval_every and not episodic:
            raise ValueError(f"eval_every={eval_every} is not allowed: agent {name} plays one "
                             f"never-ending problem per run (a bandit), with no episodes to "
                             f"evaluate; its metrics are per round. Leave eval_every at 0")
    _check_env_kind(name, module, env_id, env_obj)
    _check_action_space(name, module, env_id, env_obj, env_params)
    loaded = load_runs(module, config)
    built = make_agent(module, config, env_obj, env_params, loaded)  # checks config against env
    abstract = jax.eval_shape(built.init, jax.random.key(0))  # traces only
    _check_state(module, config, abstract)
    tunable = tunables(abstract)
    shapes = shape_fields(config)
    swept, swept_dtypes = None, {}
    if sweep or grid is not None or settings is not None:
        swept = grid_lib.expand(grid, settings)
        swept_dtypes = grid_lib.check(swept, name, config, tunable, shapes, env_params)
    batch = len(seed_list) * (1 if swept is None else len(swept))
    device_list = runtime.resolve_devices(devices, batch)
    check_memory(abstract, batch, device_list)
    plan = Plan(name, module, config, env_id, env_obj, env_params, seed_list, swept, swept_dtypes,
                num_chunks, device_list, built,
                eval_every=eval_every, eval_episodes=eval_episodes, checkpoint_every=checkpoint_every,
                loaded=loaded, stop_on_nan=stop_on_nan)
    _check_env_sweep(plan)
    if resumed is not None:
        directory, step, meta = resumed
        ckpt.check_resume(meta, plan.meta(), shapes, Path(resume))
        return dataclasses.replace(plan, checkpoint_dir=directory, resume_step=step)
    return dataclasses.replace(plan, checkpoint_dir=_check_checkpoint_dir(checkpoint_dir))
