"""Checkpoints of a whole batched run (orbax `CheckpointManager`), exact resume, `load_policy`.

A checkpoint holds three items:
  state:   the batched agent state [padded batch, ...]: parameters, optimiser state,
           environment state, RNG keys (as key data), normalisation statistics,
           step counters and the tunable hyperparameters;
  history: the per-iteration metrics so far, name -> [batch, iterations done];
  meta:    JSON: agent, environment and its parameters, config, seeds, settings,
           iterations done, chunk length.
orbax writes each checkpoint into a temporary directory and renames it when
complete, so a process killed during a save leaves the previous checkpoint
intact; `latest()` only ever sees complete ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = 1
KEEP = 2  # checkpoints kept: the newest, and the one before it while the newest is written


def _is_key(x) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_storable(state):
    """Typed PRNG keys -> their uint32 key data (orbax stores plain arrays)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)


def storable_template(abstract_state):
    """Host zeros shaped like `to_storable(state)`, the target orbax restores into."""
    def leaf(x):
        if _is_key(x):
            x = jax.eval_shape(jax.random.key_data, x)
        return np.zeros(x.shape, x.dtype)

    return jax.tree.map(leaf, abstract_state)


def from_storable(stored, abstract_state):
    """Inverse of `to_storable`, given the state's abstract structure."""
    return jax.tree.map(
        lambda a, x: jax.random.wrap_key_data(x) if _is_key(a) else x,  # the default impl, as the seeds
        abstract_state, stored)


def env_params_dict(env_params) -> dict[str, Any]:
    """The environment parameters as JSON values (field -> number)."""
    out = {}
    for f in dataclasses.fields(env_params):
        v = np.asarray(getattr(env_params, f.name))
        out[f.name] = v.item() if v.ndim == 0 else v.tolist()
    return out


def directory_of(path: str | Path) -> Path:
    """A results directory's `checkpoints/` subdirectory, or `path` itself."""
    path = Path(path)
    return path / "checkpoints" if (path / "checkpoints").is_dir() else path


class Checkpoints:
    """The checkpoints of one run, in `directory` (created on first save)."""

    def __init__(self, directory: str | Path):
        import orbax.checkpoint as ocp

        self.directory = Path(directory).absolute()
        self._ocp = ocp
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=KEEP, create=True,
                                                 enable_async_checkpointing=False),
        )

    def latest(self) -> int | None:
        """The newest complete checkpoint's step (iterations done), or None."""
        self.manager.reload()
        return self.manager.latest_step()

    def meta(self, step: int) -> dict[str, Any]:
        ocp = self._ocp
        return dict(self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore())).meta)

    def save(self, step: int, states, history: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Writes checkpoint `step` and waits until it is complete on disk (all processes)."""
        ocp = self._ocp
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(to_storable(states)),
            history=ocp.args.StandardSave({k: np.asarray(v) for k, v in history.items()}),
            meta=ocp.args.JsonSave(meta),
        ), force=True)
        self.manager.wait_until_finished()

    def restore(self, step: int, abstract_state) -> tuple[Any, dict[str, np.ndarray]]:
        """(state as host arrays, history) of checkpoint `step`; keys come back typed."""
        ocp = self._ocp
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(storable_template(abstract_state)),
            history=ocp.args.StandardRestore(),
        ))
        history = {k: np.asarray(v) for k, v in restored.history.items()}
        return restored.state, history

    def close(self) -> None:
        self.manager.close()


def check_resume(meta: dict[str, Any], expected: dict[str, Any], shape_fields: set[str],
                 directory: Path) -> None:
    """Refuses to resume a checkpoint made by a different run, naming what differs."""
    where = f"resume={str(directory)!r}"
    if meta.get("format") != FORMAT:
        raise ValueError(f"{where} holds a checkpoint in format {meta.get('format')!r}; "
                         f"this version reads format {FORMAT}")
    if meta["agent"] != expected["agent"]:
        raise ValueError(f"{where} holds a checkpoint of agent {meta['agent']!r}, not "
                         f"{expected['agent']!r}")
    if meta["env"] != expected["env"]:
        raise ValueError(f"{where} holds a checkpoint on env {meta['env']!r}, not {expected['env']!r}")
    differ = [(name, expected["config"].get(name), saved) for name, saved in meta["config"].items()
              if json_ready(expected["config"].get(name)) != json_ready(saved)]
    if differ:
        differ.sort(key=lambda d: d[0] not in shape_fields)  # shape-fixing fields first
        detail = "; ".join(
            f"{name}={now!r} differs from the checkpoint's {saved!r} ("
            + ("it fixes array shapes" if name in shape_fields else "a resumed run continues the "
               "saved one exactly; pass the same config") + ")"
            for name, now, saved in differ)
        raise ValueError(f"{where}: config field {detail}")
    for name in ("env_params", "seeds", "settings"):
        if json_ready(meta[name]) != json_ready(expected[name]):
            raise ValueError(f"{where}: {name}={expected[name]!r} differs from the checkpoint's "
                             f"{meta[name]!r}")


def json_ready(v):
    """Tuples -> lists and NumPy scalars -> Python numbers, recursively: the form a value has
    after a JSON round trip, so saved and current values compare equal."""
    if isinstance(v, (tuple, list)):
        return [json_ready(x) for x in v]
    if isinstance(v, dict):
        return {k: json_ready(x) for k, x in v.items()}
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return v


# --------------------------------------------------------------------------- policies


@dataclasses.dataclass
class Policy:
    """A trained policy: `policy(obs)` acts greedily, `policy(obs, key)` samples.

    Attributes:
      params: the agent's `state.params` (network weights and any observation statistics).
      act: the agent's `act(params, obs, key, deterministic)`.
      seed: the seed it was trained with; setting: its sweep setting ({} for a run).
    """

    params: Any
    act: Callable
    seed: int
    setting: dict[str, Any]
    agent: str
    env: str

    def __call__(self, obs, key: jax.Array | None = None, deterministic: bool | None = None):
        deterministic = key is None if deterministic is None else deterministic
        if key is None:
            if not deterministic:
                raise ValueError("deterministic=False needs a key: policy(obs, key)")
            key = jax.random.key(0)  # unused by a deterministic policy
        return self.act(self.params, jnp.asarray(obs), key, deterministic)


def load_policy(directory: str | Path, seed: int = 0, setting: int | None = None,
                env: Any = None) -> Policy:
    """The policy of seed `seed` (and sweep setting index `setting`) from a run's newest checkpoint.

    Args:
      directory: a results directory written with checkpoints, or its `checkpoints/`.
      seed: one of the run's seeds.
      setting: for a sweep, the index of the setting (required when it has several).
      env: an `(env, env_params)` pair, for a run on an environment that is not registered.
    """
    import agents
    import envs
    from agents.common.config import config_from_dict
    from purejaxrl_lab.grid import split

    directory = Path(directory)
    ckpt_dir = directory_of(directory)
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(f"directory={str(directory)!r} does not exist")
    ckpts = Checkpoints(ckpt_dir)
    try:
        step = ckpts.latest()
        if step is None:
            raise FileNotFoundError(f"directory={str(directory)!r} holds no complete checkpoint")
        meta = ckpts.meta(step)
        if seed not in meta["seeds"]:
            raise ValueError(f"seed={seed!r} is not allowed: the run's seeds are {meta['seeds']}")
        settings = meta["settings"] or [{}]
        if setting is None:
            if len(settings) > 1:
                raise ValueError(f"setting=None is not allowed: this sweep has {len(settings)} "
                                 f"settings; pass an index 0..{len(settings) - 1}")
            setting = 0
        if not isinstance(setting, int) or not 0 <= setting < len(settings):
            raise ValueError(f"setting={setting!r} is not allowed: expected an index "
                             f"0..{len(settings) - 1}")
        module = agents.get(meta["agent"])
        config = config_from_dict(module.Config, meta["config"])
        if env is None:
            env_obj, env_params = envs.make(meta["env"])
            env_params = env_params.replace(**{k: v for k, v in meta["env_params"].items()})
        else:
            env_obj, env_params = env
        chosen = settings[setting]
        env_values = split(chosen)[1]
        if env_values:
            env_params = env_params.replace(**env_values)
        agent = module.make(config, env_obj, env_params)
        abstract = jax.eval_shape(jax.vmap(agent.init),
                                  jax.ShapeDtypeStruct((meta["padded"],), jax.random.key(0).dtype))
        state, _ = ckpts.restore(step, abstract)
        state = from_storable(state, abstract)
        index = setting * len(meta["seeds"]) + meta["seeds"].index(seed)
        params = jax.tree.map(lambda x: jnp.asarray(x[index]), state.params)
    finally:
        ckpts.close()
    return Policy(params=params, act=agent.act, seed=seed, setting=dict(chosen),
                  agent=meta["agent"], env=meta["env"])
