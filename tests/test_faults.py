"""Faults: a process killed (SIGKILL) while it writes a checkpoint or results, a full disk, a
damaged newest checkpoint. What was saved before stays intact, bit for bit; a resumed run
continues from the newest intact checkpoint to the numbers of a run never stopped."""

import dataclasses
import errno
import hashlib
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

import purejaxrl_lab as lab
from purejaxrl_lab import checkpoint as ckpt
from purejaxrl_lab.results import params_to_arrays
from tests.conftest import assert_same
from tests.test_toy_agent import AGENT, CONFIG, ENV

ROOT = Path(__file__).resolve().parent.parent
CHILD_ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
# 24 iterations in 6 chunks of 4; with checkpoint_every=2, checkpoints 8, 16 and 24 (the
# newest two kept). The same run as tests/test_toy_agent.py, so the programs are shared.
RUN = {"seeds": 3, "num_chunks": 6, "progress": False}
NO_SPACE = os.strerror(errno.ENOSPC)


@pytest.fixture(scope="module")
def uninterrupted():
    return lab.run(AGENT, CONFIG, ENV, **RUN)


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    """A finished run's checkpoint directory: checkpoints 16 and 24."""
    d = tmp_path_factory.mktemp("checkpointed") / "checkpoints"
    lab.run(AGENT, CONFIG, ENV, **RUN, checkpoint_dir=d, checkpoint_every=2)
    return d


def snapshot(directory: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under `directory`."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def latest_quietly(d: Path) -> int | None:
    store = ckpt.Checkpoints(d)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no checkpoint is passed over
            return store.latest()
    finally:
        store.close()


def wait_for(marker: Path, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + 180
    while not marker.exists():
        assert proc.poll() is None, f"the child ended before writing:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline, "the child never started writing"
        time.sleep(0.02)


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_a_damaged_newest_checkpoint_is_passed_over(damage, uninterrupted, checkpointed, tmp_path):
    d = tmp_path / "checkpoints"
    shutil.copytree(checkpointed, d)
    older = snapshot(d / "16")
    item = "params" if damage == "truncate" else "state"
    data = next((d / "24" / item / "d").iterdir())  # the item's arrays (OCDBT data file)
    content = bytearray(data.read_bytes())
    if damage == "truncate":
        data.write_bytes(content[: len(content) // 2])
        problem = rf"{item}/d/{data.name} has {len(content) // 2} bytes, not the {len(content)} saved"
    else:
        content[len(content) // 2] ^= 0xFF
        data.write_bytes(bytes(content))
        problem = rf"{item}/d/{data.name} differs from the file saved"
    with pytest.warns(RuntimeWarning, match=rf"checkpoint 24 is damaged \({problem}\); skipped: "
                                            rf"the newest intact checkpoint is 16"):
        resumed = lab.run(AGENT, CONFIG, ENV, **RUN, resume=d, checkpoint_every=2)
    assert resumed.resumed_from == 16
    assert_same(resumed, uninterrupted)
    # The resumed run replaced the damaged checkpoint; the one it resumed from is untouched.
    assert latest_quietly(d) == 24 and snapshot(d / "16") == older


def test_a_full_disk_during_a_checkpoint(uninterrupted, tmp_path, monkeypatch):
    d = tmp_path / "checkpoints"
    saved = {}
    write_meta = json_checkpoint_handler.JsonCheckpointHandler._save_fn

    async def full_at_16(self, x, directory):  # the meta of checkpoint 16: half, then no space
        if x["done"] == 16:
            saved.update(snapshot(d / "8"))
            (directory / "metadata").write_text(json.dumps(x)[:10])
            raise OSError(errno.ENOSPC, NO_SPACE)
        await write_meta(self, x, directory)

    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", full_at_16)
    with pytest.raises(OSError, match=rf"checkpoint 16 could not be written to {d}; the checkpoints "
                                      rf"saved before it are intact \(8\): {NO_SPACE}") as error:
        lab.run(AGENT, CONFIG, ENV, **RUN, checkpoint_dir=d, checkpoint_every=2)
    assert error.value.errno == errno.ENOSPC
    # Checkpoint 8 as it was; the unfinished one is removed.
    assert sorted(p.name for p in d.iterdir()) == [".lock", "8"]
    assert saved and snapshot(d / "8") == saved
    monkeypatch.undo()  # space is back
    resumed = lab.run(AGENT, CONFIG, ENV, **RUN, resume=d, checkpoint_every=2)
    assert resumed.resumed_from == 8
    assert_same(resumed, uninterrupted)
    assert latest_quietly(d) == 24


KILLED_IN_CHECKPOINT = """
import json, sys, time
from pathlib import Path
import purejaxrl_lab as lab
lab.use_cpu_cores()
lab.runtime.enable_compilation_cache(sys.argv[1])
from orbax.checkpoint._src.handlers import json_checkpoint_handler
marker, directory, config = Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])
write_meta = json_checkpoint_handler.JsonCheckpointHandler._save_fn

async def stall_at_24(self, x, path):  # the meta of checkpoint 24: half, then wait for the kill
    if x["done"] == 24:
        (path / "metadata").write_text(json.dumps(x)[:10])
        marker.touch()
        time.sleep(300)
    await write_meta(self, x, path)

json_checkpoint_handler.JsonCheckpointHandler._save_fn = stall_at_24
lab.run("tests.toy_agent", config, "BernoulliBandit-misc", seeds=3, num_chunks=6, progress=False,
        checkpoint_dir=directory, checkpoint_every=2)
"""


def test_sigkill_during_a_checkpoint_save(uninterrupted, tmp_path):
    d, marker, log = tmp_path / "checkpoints", tmp_path / "writing", tmp_path / "child.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_IN_CHECKPOINT, jax.config.jax_compilation_cache_dir,
             str(marker), str(d), json.dumps(CONFIG)],
            cwd=ROOT, env=CHILD_ENV, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(marker, proc, log)
        complete = {step: snapshot(d / step) for step in ("8", "16")}  # still while it sleeps
    finally:
        kill(proc)
    (unfinished,) = d.glob("24*")  # half-written, under orbax's temporary name
    assert unfinished.name.startswith(f"24{ckpt.TMP_SUFFIX}")
    assert {step: snapshot(d / step) for step in ("8", "16")} == complete
    assert latest_quietly(d) == 16
    resumed = lab.run(AGENT, CONFIG, ENV, **RUN, resume=d, checkpoint_every=2)
    assert resumed.resumed_from == 16
    assert_same(resumed, uninterrupted)
    assert sorted(p.name for p in d.iterdir()) == [".lock", "16", "24"]  # the unfinished one is gone
    assert snapshot(d / "16") == complete["16"] and latest_quietly(d) == 24


# --------------------------------------------------------------------------- results


def assert_saved(directory: Path, results) -> None:
    """`directory` holds `results`: its metrics and final params, bit for bit."""
    loaded = lab.load(directory)
    assert loaded.metrics.keys() == results.metrics.keys()
    for k, v in results.metrics.items():
        np.testing.assert_array_equal(loaded.metrics[k], v, err_msg=k)
    with np.load(directory / "params.npz") as data:
        expected = params_to_arrays(results.params)
        assert sorted(data.files) == sorted(expected)
        for k, v in expected.items():
            np.testing.assert_array_equal(data[k], v, err_msg=k)


def test_a_full_disk_during_a_results_save(uninterrupted, checkpointed, tmp_path, monkeypatch):
    results = dataclasses.replace(uninterrupted)  # saving sets its directory
    earlier = results.save(tmp_path / "earlier")
    saved_earlier = snapshot(earlier)
    out = tmp_path / "out"
    shutil.copytree(checkpointed, out / "checkpoints")
    (out / "log.jsonl").write_text('{"rounds": 128}\n')
    before = snapshot(out)
    savez, calls = np.savez, []

    def full_at_params(file, **arrays):  # params.npz (the second): half of it, then no space
        calls.append(file)
        if len(calls) == 2:
            buffer = io.BytesIO()
            savez(buffer, **arrays)
            file.write(buffer.getvalue()[: buffer.tell() // 2])
            raise OSError(errno.ENOSPC, NO_SPACE)
        savez(file, **arrays)

    monkeypatch.setattr(np, "savez", full_at_params)
    with pytest.raises(OSError, match=rf"results could not be saved to '{out}': writing params.npz "
                                      rf"failed \({NO_SPACE}\); nothing there was changed") as error:
        results.save(out)
    assert error.value.errno == errno.ENOSPC and len(calls) == 2
    assert snapshot(out) == before  # no file added (not even metrics.npz), none changed
    with pytest.raises(FileExistsError, match="already holds results"):
        results.save(earlier)  # saved results are never overwritten
    assert snapshot(earlier) == saved_earlier
    monkeypatch.undo()  # space is back
    results.save(out)
    assert_saved(out, uninterrupted)
    assert_saved(earlier, uninterrupted)
    assert {k: v for k, v in snapshot(out).items() if k in before} == before


KILLED_IN_RESULTS = """
import io, pickle, sys, time
from pathlib import Path
import numpy as np
marker, results, out = Path(sys.argv[1]), pickle.loads(Path(sys.argv[2]).read_bytes()), sys.argv[3]
savez, calls = np.savez, []

def stall_at_params(file, **arrays):  # params.npz (the second): half of it, then wait for the kill
    calls.append(file)
    if len(calls) == 2:
        buffer = io.BytesIO()
        savez(buffer, **arrays)
        file.write(buffer.getvalue()[: buffer.tell() // 2])
        file.flush()
        marker.touch()
        time.sleep(300)
    savez(file, **arrays)

np.savez = stall_at_params
results.save(out)
"""


def test_sigkill_during_a_results_save(uninterrupted, checkpointed, tmp_path):
    """A run killed while it saves its results: the directory keeps its checkpoints and logs
    as they were and holds no results; resuming it (from its final checkpoint) saves them."""
    out, marker, log = tmp_path / "out", tmp_path / "writing", tmp_path / "child.log"
    shutil.copytree(checkpointed, out / "checkpoints")
    (out / "log.jsonl").write_text('{"rounds": 128}\n')
    before = snapshot(out)
    plain = dataclasses.replace(uninterrupted, act=None, init_carry=None, final_state=None)
    (tmp_path / "results.pkl").write_bytes(pickle.dumps(plain))
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-c", KILLED_IN_RESULTS, str(marker),
                                 str(tmp_path / "results.pkl"), str(out)],
                                cwd=ROOT, env=CHILD_ENV, stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for(marker, proc, log)
    finally:
        kill(proc)
    # What the kill left: the files it wrote (params.npz half), under temporary names only.
    left = [name for name in snapshot(out) if name not in before]
    assert all(name.startswith(".") and name.endswith(".tmp") for name in left)
    assert sorted(name[1:].rsplit(".", 2)[0] for name in left) == ["metrics.jsonl", "metrics.npz",
                                                                   "params.npz"]
    assert {k: v for k, v in snapshot(out).items() if k in before} == before
    with pytest.raises(FileNotFoundError, match="holds no summary.json"):
        lab.load(out)
    # Resuming picks the final checkpoint and gives the same results; saving them works.
    resumed = lab.run(AGENT, CONFIG, ENV, **RUN, resume=out)
    assert resumed.resumed_from == 24
    assert_same(resumed, uninterrupted)
    resumed.save(out)
    assert sorted(snapshot(out).keys() - before.keys()) == ["metrics.jsonl", "metrics.npz",
                                                            "params.npz", "summary.json"]
    assert_saved(out, uninterrupted)
