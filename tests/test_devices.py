"""The batch over 1, 2 and 4 devices (JAX_NUM_CPU_DEVICES=4) and over 2 processes x 2 devices."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def env(devices: int) -> dict:
    return {**os.environ, "JAX_NUM_CPU_DEVICES": str(devices), "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT)}


def test_one_two_four_devices():
    p = subprocess.run([sys.executable, "-m", "tests.devices_check"], cwd=ROOT, env=env(4),
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["device_4"]["used"] == 4 and r["device_4"]["padding"] == 0
    # 6 runs on 4 devices: padded to 8 (two repeats of the last run, dropped afterwards).
    assert r["padded_device"]["padding"] == 2 and r["padded_rows"] == 6
    # 4 runs on 4 devices: padded to two runs per device; by default, 2 devices x 2 runs.
    assert r["four_on_four_device"]["padding"] == 4 and r["four_auto_device"]["used"] == 2
    # Every device runs the same vmapped program on its share of two or more runs: the same
    # bits on 1, 2 or 4 devices, padded or not, for runs, sweeps and continuous control.
    assert r["1_vs_4_exact"] and r["2_vs_4_exact"] and r["padded_exact"] and r["four_exact"]
    assert r["sweep_1_vs_4_exact"] and r["continuous_1_vs_4_exact"]
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
    # The two processes go through the program cache (exported programs); the single one
    # traces with no cache: the same numbers either way.
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
