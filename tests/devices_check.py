"""Run by tests/test_devices.py in a subprocess with JAX_NUM_CPU_DEVICES=4 (not a test module)."""

import dataclasses
import json
import sys

import jax
import numpy as np

import purejaxrl_lab as lab
from agents import ppo
from tests.conftest import SMALL


def same(a, b):
    return all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def main():
    assert jax.device_count() == 4, jax.devices()
    run = {d: lab.run("ppo", SMALL, "CartPole-v1", seeds=8, num_chunks=3, progress=False, devices=d)
           for d in (1, 2, 4)}
    padded = lab.run("ppo", SMALL, "CartPole-v1", seeds=6, num_chunks=3, progress=False, devices=4)
    four_on_four = lab.run("ppo", SMALL, "CartPole-v1", seeds=4, num_chunks=3, progress=False, devices=4)
    four_auto = lab.run("ppo", SMALL, "CartPole-v1", seeds=4, num_chunks=3, progress=False)
    grid = {"ent_coef": [0.0, 0.01, 0.02, 0.03]}
    sweeps = {d: lab.sweep("ppo", SMALL, "CartPole-v1", grid=grid, seeds=2, num_chunks=3,
                           progress=False, devices=d).metrics for d in (1, 4)}
    # Continuous actions, observation and reward normalisation.
    pendulum = dataclasses.replace(ppo.PRESETS["pendulum"], total_timesteps=4 * 8 * 64, num_envs=8,
                                   num_steps=64, update_epochs=2, num_minibatches=4)
    cont = {d: lab.run("ppo", pendulum, "Pendulum-v1", seeds=4, num_chunks=2, progress=False,
                       devices=d).metrics for d in (1, 4)}
    single = {d: lab.run("ppo", SMALL, "CartPole-v1", seeds=[3], num_chunks=3, progress=False,
                         devices=d) for d in (None, 4)}
    print(json.dumps({
        "single_devices": [single[None].device["used"], single[4].device["used"]],
        "single_exact": same(single[None].metrics, single[4].metrics),
        "device_4": run[4].device,
        "padded_device": padded.device,
        "four_on_four_device": four_on_four.device,
        "four_auto_device": four_auto.device,
        "1_vs_4_exact": same(run[1].metrics, run[4].metrics),
        "2_vs_4_exact": same(run[2].metrics, run[4].metrics),
        "padded_exact": same(padded.metrics, {k: v[:6] for k, v in run[1].metrics.items()}),
        "padded_rows": padded.metrics["loss"].shape[0],
        "four_exact": same(four_on_four.metrics, {k: v[:4] for k, v in run[1].metrics.items()})
        and same(four_auto.metrics, four_on_four.metrics),
        "sweep_1_vs_4_exact": same(sweeps[1], sweeps[4]),
        "continuous_1_vs_4_exact": same(cont[1], cont[4]),
    }))


if __name__ == "__main__":
    sys.exit(main())
