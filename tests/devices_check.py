"""Run by tests/test_devices.py in a subprocess with JAX_NUM_CPU_DEVICES=4 (not a test module)."""

import json
import sys

import jax
import numpy as np

import purejaxrl_lab as lab
from tests.conftest import SMALL


def same(a, b):
    return all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def max_rel(a, b):
    out = 0.0
    for k in ("loss", "value_loss", "entropy"):
        d = np.abs(a[k] - b[k]) / np.maximum(np.abs(b[k]), 1e-6)
        out = max(out, float(np.nanmax(d)))
    return out


def main():
    assert jax.device_count() == 4, jax.devices()
    run = {d: lab.run("ppo", SMALL, "CartPole-v1", seeds=8, num_chunks=3, progress=False, devices=d)
           for d in (1, 2, 4)}
    padded = lab.run("ppo", SMALL, "CartPole-v1", seeds=6, num_chunks=3, progress=False)
    sweep = lab.sweep("ppo", SMALL, "CartPole-v1", grid={"ent_coef": [0.0, 0.01, 0.02, 0.03]},
                      seeds=2, num_chunks=3, progress=False)
    sweep2 = lab.sweep("ppo", SMALL, "CartPole-v1", grid={"ent_coef": [0.0, 0.01, 0.02, 0.03]},
                       seeds=2, num_chunks=3, progress=False, devices=2)
    print(json.dumps({
        "device_4": run[4].device,
        "padded_device": padded.device,
        "2_vs_4_exact": same(run[2].metrics, run[4].metrics),
        "1_vs_4_max_rel": max_rel(run[1].metrics, run[4].metrics),
        "1_vs_4_same_returns": bool(np.array_equal(run[1].metrics["episode_return"],
                                                   run[4].metrics["episode_return"], equal_nan=True)),
        "padded_exact": same(padded.metrics, {k: v[:6] for k, v in run[4].metrics.items()}),
        "padded_rows": padded.metrics["loss"].shape[0],
        "sweep_2_vs_4_exact": same(sweep.metrics, sweep2.metrics),
    }))


if __name__ == "__main__":
    sys.exit(main())
