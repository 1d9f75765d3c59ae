"""The batch over 1, 2 and 4 devices (JAX_NUM_CPU_DEVICES=4), over 2 processes x 2 devices, and
one CPU device per core by default."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def env(devices: int) -> dict:
    return {**os.environ, "JAX_NUM_CPU_DEVICES": str(devices), "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT)}


AGENTS = ["agents.ppo", "tests.toy_agent", "agents.dqn"]


@pytest.fixture(scope="module")
def device_checks():
    """agent -> what tests/devices_check.py found for it (one subprocess for every agent)."""
    p = subprocess.run([sys.executable, "-m", "tests.devices_check", *AGENTS], cwd=ROOT, env=env(4),
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return {row.pop("agent"): row for row in rows}


@pytest.mark.parametrize("agent", AGENTS)
def test_one_two_four_devices(device_checks, agent):
    r = device_checks[agent]
    assert r["device_4"]["used"] == 4 and r["device_4"]["padding"] == 0
    # 6 runs on 4 devices: padded to 8 (two repeats of the last run, dropped afterwards).
    assert r["padded_device"]["padding"] == 2 and r["padded_rows"] == 6
    # 4 runs on 4 devices: padded to two runs per device; by default, 2 devices x 2 runs.
    assert r["four_on_four_device"]["padding"] == 4 and r["four_auto_device"]["used"] == 2
    # Every device runs the same vmapped program on its share of two or more runs: the same
    # bits on 1, 2 or 4 devices, padded or not, for runs (with their evaluations), sweeps and
    # (PPO) continuous control with normalisation.
    assert r["1_vs_4_exact"] and r["2_vs_4_exact"] and r["padded_exact"] and r["four_exact"]
    assert r["sweep_1_vs_4_exact"] and r.get("continuous_1_vs_4_exact", True)
    # One run: unbatched on one device by default, or padded to one per device on 4 (XLA
    # compiles a vmap over one run like the unbatched program): the same bits.
    assert r["single_devices"] == [1, 4] and r["single_exact"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_four_devices(tmp_path):
    common = ["--seeds", "8", "--total-timesteps", str(4 * 32 * 6), "--num-envs", "4", "--num-steps",
              "32", "--update-epochs", "2", "--num-minibatches", "2", "--num-chunks", "3",
              "--checkpoint-every", "1", "--no-progress"]
    cli = [sys.executable, "-m", "purejaxrl_lab", "train", "ppo"]
    port = free_port()
    multi = tmp_path / "multi"
    # The two processes use the compilation cache; the single one compiles with no cache: the
    # same numbers either way.
    procs = [subprocess.Popen([*cli, *common, "--out", str(multi), "--cache-dir", str(tmp_path / "cache"),
                               "--coordinator-address",
                               f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
                              cwd=tmp_path, env=env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "final return mean" in outs[0][0] and "final return mean" not in outs[1][0]  # process 0 reports
    single = tmp_path / "single"
    p = subprocess.run([*cli, *common, "--out", str(single), "--no-compilation-cache"], cwd=tmp_path, env=env(4),
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    a, b = np.load(multi / "metrics.npz"), np.load(single / "metrics.npz")
    for k in b.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    summary = json.loads((multi / "summary.json").read_text())
    assert summary["device"]["processes"] == 2 and summary["device"]["used"] == 4
    # Both processes took part in the checkpoints; the last one is complete and loads.
    import purejaxrl_lab as lab

    policy = lab.load_policy(multi, seed=7)
    assert policy(np.zeros(4, np.float32)).shape == ()


CORES_CHECK = """
import json, os, sys
first = sys.argv[1]
if first == "envs":
    import envs  # gymnax makes arrays on import: JAX is initialised from here on
import purejaxrl_lab
from purejaxrl_lab import stats, runtime  # importing changes nothing
import jax
before = jax.config.jax_num_cpu_devices
used = purejaxrl_lab.use_cpu_cores() if first != "import-only" else None
print(json.dumps({"before": before, "set": used, "devices": jax.device_count(),
                  "cores": runtime.cpu_cores(), "again": runtime.use_cpu_cores()}))
"""


def test_one_cpu_device_per_core_when_asked():
    def devices(first="lab", **extra):
        clean = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
        p = subprocess.run([sys.executable, "-c", CORES_CHECK, first], cwd=ROOT, capture_output=True,
                           text=True, timeout=300,
                           env={**clean, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", **extra})
        assert p.returncode == 0, p.stderr[-3000:]
        return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr

    # Importing purejaxrl_lab (and its stats) changes nothing; use_cpu_cores() gives one CPU
    # device per core (a single core keeps one device).
    r, _ = devices("import-only")
    assert r["before"] == -1 and r["devices"] == 1
    r, _ = devices()
    assert r["devices"] == r["cores"] and r["again"] is None  # once JAX runs, nothing changes
    # A count the user chose wins, whichever way it was chosen.
    assert devices(JAX_NUM_CPU_DEVICES="3")[0]["devices"] == 3
    assert devices(XLA_FLAGS="--xla_force_host_platform_device_count=3")[0]["devices"] == 3
    # JAX already initialised (gymnax imported first): JAX's single CPU device, and it says so.
    r, err = devices("envs")
    assert r["devices"] == 1 and "JAX is already running with 1 CPU device(s)" in err
