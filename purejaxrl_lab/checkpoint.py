"""Checkpoints of a whole batched run (orbax `CheckpointManager`), exact resume, policies.

A checkpoint holds four items:
  params:  `state.params` of every run [padded batch, ...]: what a policy needs, so that
           `load_policy` restores it alone (never the replay buffers beside it);
  state:   the rest of the batched agent state: optimiser state, environment state, RNG
           keys (as key data), normalisation statistics, step counters, tunable
           hyperparameters, buffers;
  history: the metrics so far, name -> [batch, iterations done] (evaluations: [batch,
           evaluations done]);
  meta:    JSON: agent, environment and its parameters, config, seeds, settings,
           iterations done, chunk length, the iterations of the evaluations.
orbax writes each checkpoint into a temporary directory and renames it when complete,
so a process killed during a save leaves the previous checkpoint intact; `latest()`
only ever sees complete ones. Once complete, a checkpoint gets `digest.json`: the size and
CRC-32 of each of its files, so that `latest()` also passes over a checkpoint damaged
since (truncated or altered files), with a warning naming it, for the newest intact one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = 2
KEEP = 2  # checkpoints kept: the newest, and the one before it while the newest is written
DIGEST = "digest.json"  # in a checkpoint: its files' relative path -> [size in bytes, CRC-32]
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's unfinished checkpoints: STEP.orbax-checkpoint-tmp...


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


def holds_checkpoints(directory: Path) -> bool:
    """Whether `directory` holds a checkpoint (complete or not): orbax's step directories."""
    return directory.is_dir() and any(p.name.split(".")[0].isdigit() for p in directory.iterdir())


def directory_of(path: str | Path) -> Path:
    """A results directory's `checkpoints/` subdirectory, or `path` itself."""
    path = Path(path)
    return path / "checkpoints" if (path / "checkpoints").is_dir() else path


def split_params(state):
    """(state.params, the state with params=None): what a checkpoint stores apart."""
    if not (dataclasses.is_dataclass(state) and hasattr(state, "params")):
        raise ValueError(f"the agent's state must be a dataclass with a `params` field "
                         f"(agents.common.contract), got {type(state).__name__}")
    return state.params, dataclasses.replace(state, params=None)


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
        """The newest complete and intact checkpoint's step (iterations done), or None.

        A newer one that is damaged (a file differs from its digest, or its meta does not
        read) is passed over, with a warning naming its step. Checking a digest reads every
        byte of the checkpoint (seconds for a replay buffer of gigabytes)."""
        self.manager.reload()
        damaged = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            problem = self._damage(step)
            if problem is None:
                break
            damaged.append(f"checkpoint {step} is damaged ({problem})")
        else:
            step = None
        if damaged:
            warnings.warn(f"{self.directory}: {'; '.join(damaged)}; skipped: the newest intact "
                          f"checkpoint is " + (f"{step}" if step is not None else "none"),
                          RuntimeWarning, stacklevel=2)
        return step

    def _damage(self, step: int) -> str | None:
        """What is wrong with complete checkpoint `step`, or None if it is intact. One without
        a digest (saved by an older version, or killed just before writing it) is checked by
        reading its meta."""
        path = self.directory / str(step)
        if (path / DIGEST).is_file():
            try:
                saved = json.loads((path / DIGEST).read_text())
            except (OSError, ValueError):
                return f"its {DIGEST} does not read"
            for name, (size, crc) in saved.items():
                file = path / name
                if not file.is_file():
                    return f"{name} is missing"
                if file.stat().st_size != size:
                    return f"{name} has {file.stat().st_size} bytes, not the {size} saved"
                if _crc32(file) != crc:
                    return f"{name} differs from the file saved"
            return None
        try:
            self.meta(step)
        except Exception as e:  # whatever orbax or the JSON decoder raise for a damaged file
            return f"its meta does not read: {type(e).__name__}"
        return None

    def meta(self, step: int) -> dict[str, Any]:
        ocp = self._ocp
        return dict(self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore())).meta)

    def save(self, step: int, states, history: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Writes checkpoint `step`, waits until it is complete on disk (all processes), then
        writes its digest.

        Called by the run that owns the directory only: it first removes what an earlier
        process left unfinished, and the checkpoints at `step` and after (damaged ones a
        resumed run passed over). A failed save (a full disk) leaves the checkpoints saved
        before it as they were, removes its unfinished files, and says so.
        """
        ocp = self._ocp
        params, rest = split_params(states)
        self._discard_from(step)
        try:
            self.manager.save(step, args=ocp.args.Composite(
                params=ocp.args.StandardSave(to_storable(params)),
                state=ocp.args.StandardSave(to_storable(rest)),
                history=ocp.args.StandardSave({k: np.asarray(v) for k, v in history.items()}),
                meta=ocp.args.JsonSave(meta),
            ), force=True)
            self.manager.wait_until_finished()
        except Exception as e:
            self._remove_unfinished()
            self._discard_from(step)
            kept = ", ".join(map(str, self.manager.all_steps())) or "none"
            message = (f"checkpoint {step} could not be written to {self.directory}; the "
                       f"checkpoints saved before it are intact ({kept})")
            if isinstance(e, OSError):
                raise OSError(e.errno, f"{message}: {e.strerror or e}") from e
            e.add_note(message)
            raise
        path = self.directory / str(step)
        if jax.process_index() == 0 and path.is_dir():
            _write_atomically(path / DIGEST, json.dumps(_digest(path)).encode())

    def _remove_unfinished(self, settle: float = 0.2, timeout: float = 10.0) -> None:
        """Removes the failed save's unfinished folder once no writer is adding to it: when
        one part of a save fails, orbax's other parts may still be writing there, so it is
        removed until none has reappeared for `settle` seconds (at most `timeout`)."""
        if jax.process_index() != 0:
            return
        deadline, quiet_since = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            leftovers = list(self.directory.glob(f"*{TMP_SUFFIX}*"))
            for path in leftovers:
                shutil.rmtree(path, ignore_errors=True)
            now = time.monotonic()
            if leftovers or quiet_since is None:
                quiet_since = now if not leftovers else None
            elif now - quiet_since >= settle:
                return
            time.sleep(0.02)

    def _discard_from(self, step: int) -> None:
        """Removes unfinished checkpoints, and complete ones at `step` or later."""
        if jax.process_index() == 0:
            for path in self.directory.glob(f"*{TMP_SUFFIX}*"):
                shutil.rmtree(path, ignore_errors=True)
        self.manager.reload()
        for old in self.manager.all_steps():
            if old >= step:
                self.manager.delete(old)

    def restore(self, step: int, abstract_state) -> tuple[Any, dict[str, np.ndarray]]:
        """(state as host arrays, keys as key data; history) of checkpoint `step`
        (`from_storable` gives the keys their type back)."""
        ocp = self._ocp
        abstract_params, abstract_rest = split_params(abstract_state)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(storable_template(abstract_params)),
            state=ocp.args.StandardRestore(storable_template(abstract_rest)),
            history=ocp.args.StandardRestore(),
        ))
        state = dataclasses.replace(restored.state, params=restored.params)
        history = {k: np.asarray(v) for k, v in restored.history.items()}
        return state, history

    def restore_params(self, step: int, abstract_params):
        """`state.params` of every run in checkpoint `step`, alone (host arrays)."""
        ocp = self._ocp
        restored = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(storable_template(abstract_params))))
        return restored.params

    def close(self) -> None:
        self.manager.close()


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


def _digest(directory: Path) -> dict[str, list[int]]:
    """Every file under `directory` (relative path) -> [size in bytes, CRC-32]."""
    return {str(p.relative_to(directory)): [p.stat().st_size, _crc32(p)]
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != DIGEST}


def _write_atomically(path: Path, data: bytes) -> None:
    """Writes `path` under a temporary name, flushed to disk, and renames it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.parent.stat().st_mode & 0o666)  # as readable as its directory
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_resume(meta: dict[str, Any], expected: dict[str, Any], shape_fields: set[str],
                 directory: Path) -> None:
    """Refuses to resume a checkpoint made by a different run, naming what differs."""
    from agents.common.config import flatten

    where = f"resume={str(directory)!r}"
    if meta.get("format") != FORMAT:
        raise ValueError(f"{where} holds a checkpoint in format {meta.get('format')!r}; "
                         f"this version reads format {FORMAT}")
    if meta["agent"] != expected["agent"]:
        raise ValueError(f"{where} holds a checkpoint of agent {meta['agent']!r}, not "
                         f"{expected['agent']!r}")
    if meta["env"] != expected["env"]:
        raise ValueError(f"{where} holds a checkpoint on env {meta['env']!r}, not {expected['env']!r}")
    now, saved = flatten(expected["config"]), flatten(meta["config"])
    names = [*now, *(n for n in saved if n not in now)]  # in the config's order
    differ = [(name, now.get(name), saved.get(name)) for name in names
              if json_ready(now.get(name)) != json_ready(saved.get(name))]
    if differ:
        differ.sort(key=lambda d: d[0] not in shape_fields)  # shape-fixing fields first
        detail = "; ".join(
            f"{name}={value!r} differs from the checkpoint's {old!r} ("
            + ("it fixes array shapes" if name in shape_fields else "a resumed run continues the "
               "saved one exactly; pass the same config") + ")"
            for name, value, old in differ)
        raise ValueError(f"{where}: config field {detail}")
    for name in ("env_params", "seeds", "settings", "evaluation"):
        if json_ready(meta.get(name)) != json_ready(expected.get(name)):
            hint = (f" (eval_every decides it, in chunks of {meta.get('chunk_length')} iterations as "
                    f"in the checkpoint)" if name == "evaluation" else "")
            raise ValueError(f"{where}: {name}={expected.get(name)!r} differs from the checkpoint's "
                             f"{meta.get(name)!r}{hint}")


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
    """A trained policy: `policy(x)` acts greedily, `policy(x, key)` samples.

    `x` is what the agent acts on (`act_input`): an observation of the environment, batched
    or not, or an environment state (search agents).

    A recurrent policy (`recurrent`) carries a memory from step to step:
    `action, carry = policy(x, carry=carry)`, with carry=None (or `policy.init_carry(
    batch_shape)`) at an episode's first step; pass each returned carry to the next step.

    Attributes:
      params: the agent's `state.params` for one run (weights, observation statistics, ...).
      act: the agent's `act(params, x, key, deterministic)` (recurrent: `act(params, x, key,
        deterministic, carry) -> (action, carry)`).
      seed: the seed it was trained with; setting: its sweep setting ({} for a run).
      act_input: "observation" or "env_state".
      env, env_params: the environment id and the parameters the run trained with.
      init_carry: the agent's `init_carry(batch_shape)` for a recurrent policy, else None.
      config: the agent's Config the run trained with.
    """

    params: Any = dataclasses.field(repr=False)
    act: Callable = dataclasses.field(repr=False)
    seed: int
    setting: dict[str, Any]
    agent: str
    env: str
    act_input: str = "observation"
    env_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    init_carry: Callable | None = dataclasses.field(default=None, repr=False)
    config: Any = dataclasses.field(default=None, repr=False)

    @property
    def recurrent(self) -> bool:
        """Whether the policy carries a memory (`policy(x, carry=...) -> (action, carry)`)."""
        return self.init_carry is not None

    def __call__(self, x, key: jax.Array | None = None, deterministic: bool | None = None,
                 carry: Any = None):
        deterministic = key is None if deterministic is None else deterministic
        if key is None:
            if not deterministic:
                raise ValueError("deterministic=False needs a key: policy(x, key)")
            key = jax.random.key(0)  # unused by a deterministic policy
        x = jax.tree.map(jnp.asarray, x)
        if not self.recurrent:
            if carry is not None:
                raise ValueError(f"carry={carry!r} is not allowed: this {self.agent} policy is "
                                 f"not recurrent")
            return self.act(self.params, x, key, deterministic)
        return self.act(self.params, x, key, deterministic, carry)


def run_record(directory: Path) -> tuple[dict[str, Any], str]:
    """What identifies the run saved in `directory`: (record, "results" or "checkpoint").
    Finished results (summary.json with params.npz) are preferred to checkpoints."""
    if (directory / "summary.json").is_file() and (directory / "params.npz").is_file():
        summary = json.loads((directory / "summary.json").read_text())
        return {**summary, "settings": summary.get("settings")}, "results"
    ckpt_dir = directory_of(directory)
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(f"directory={str(directory)!r} does not exist" if not directory.exists()
                                else f"directory={str(directory)!r} holds neither saved results "
                                     f"(summary.json and params.npz) nor checkpoints")
    store = Checkpoints(ckpt_dir)
    try:
        step = store.latest()
        if step is None:
            raise FileNotFoundError(f"directory={str(directory)!r} holds no complete checkpoint")
        return {**store.meta(step), "step": step}, "checkpoint"
    finally:
        store.close()


def load_policy(directory: str | Path, seed: int = 0, setting: int | None = None,
                env: Any = None) -> Policy:
    """The policy of seed `seed` (and sweep setting index `setting`) of a saved run.

    Reads `state.params` alone: from the results a run saved (params.npz), else from its
    newest checkpoint.

    Args:
      directory: a results directory (saved results, or a run still checkpointing), or
        its `checkpoints/`.
      seed: one of the run's seeds.
      setting: for a sweep, the index of the setting (required when it has several).
      env: an `(env, env_params)` pair, for a run on an environment that is not registered.
    """
    import envs
    from agents.common.config import config_from_dict
    from purejaxrl_lab.grid import split
    from purejaxrl_lab.plan import module_of

    directory = Path(directory)
    record, source = run_record(directory)
    if seed not in record["seeds"]:
        raise ValueError(f"seed={seed!r} is not allowed: the run's seeds are {record['seeds']}")
    settings = record["settings"] or [{}]
    if setting is None:
        if len(settings) > 1:
            raise ValueError(f"setting=None is not allowed: this sweep has {len(settings)} "
                             f"settings; pass an index 0..{len(settings) - 1}")
        setting = 0
    if isinstance(setting, bool) or not isinstance(setting, int) or not 0 <= setting < len(settings):
        raise ValueError(f"setting={setting!r} is not allowed: expected an index 0..{len(settings) - 1}")
    module = module_of(record["agent"], record.get("agent_module"))
    config = config_from_dict(module.Config, record["config"])
    if env is None:
        env_obj, env_params = envs.make(record["env"])
        env_params = env_params.replace(**record["env_params"])
    else:
        env_obj, env_params = env
    chosen = settings[setting]
    env_values = split(chosen)[1]
    if env_values:
        env_params = env_params.replace(**env_values)
    agent = module.make(config, env_obj, env_params)
    abstract = jax.eval_shape(agent.init, jax.random.key(0)).params
    index = setting * len(record["seeds"]) + record["seeds"].index(seed)
    if source == "results":
        from purejaxrl_lab.results import params_from_arrays

        with np.load(directory / "params.npz") as data:
            arrays = {k: data[k][index] for k in data.files}
        params = jax.tree.map(jnp.asarray, params_from_arrays(arrays, abstract))
    else:
        batched = jax.tree.map(lambda a: jax.ShapeDtypeStruct((record["padded"], *a.shape), a.dtype),
                               abstract)
        store = Checkpoints(directory_of(directory))
        try:
            stored = store.restore_params(record["step"], batched)
        finally:
            store.close()
        params = from_storable(jax.tree.map(lambda x: np.asarray(x)[index], stored), abstract)
    return Policy(params=params, act=agent.act, seed=seed, setting=dict(chosen),
                  agent=record["agent"], env=record["env"], act_input=module.ACT_INPUT,
                  env_params=dict(record["env_params"]), init_carry=agent.init_carry,
                  config=config)
