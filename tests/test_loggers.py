"""Logging sinks: JSONL (default), TensorBoard (tensorboardX), Weights & Biases (offline)."""

import json
import struct

import numpy as np
import pytest

import purejaxrl_lab as lab
from purejaxrl_lab import loggers
from tests.conftest import SMALL


def test_jsonl_run_and_sweep(tmp_path):
    n = SMALL.num_iterations
    sink = loggers.JsonlLogger(tmp_path / "run.jsonl")
    r = lab.run("ppo", SMALL, "CartPole-v1", seeds=2, num_chunks=3, progress=False, loggers=[sink])
    sink.close()
    rows = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert [row["env_steps"] for row in rows] == [SMALL.batch_size * (t + 1) for t in range(n)]
    # each row holds the mean over seeds of every metric
    np.testing.assert_allclose([row["loss"] for row in rows], r.metrics["loss"].mean(axis=0), rtol=1e-6)

    sink = loggers.JsonlLogger(tmp_path / "sweep.jsonl")
    s = lab.sweep("ppo", SMALL, "CartPole-v1", grid={"ent_coef": [0.0, 0.02]}, seeds=2, num_chunks=3,
                  progress=False, loggers=[sink])
    sink.close()
    rows = [json.loads(line) for line in (tmp_path / "sweep.jsonl").read_text().splitlines()]
    assert len(rows) == n and {"setting_0/loss", "setting_1/loss"} <= set(rows[0])
    np.testing.assert_allclose([row["setting_1/entropy"] for row in rows],
                               s.metrics["entropy"][1].mean(axis=0), rtol=1e-6)


def read_tfevents(path):
    """Scalars (tag, step, value) from a TFRecord event file, with tensorboardX's protos."""
    from tensorboardX.proto import event_pb2

    out, data = [], path.read_bytes()
    i = 0
    while i < len(data):
        (length,) = struct.unpack("<Q", data[i:i + 8])
        record = data[i + 12:i + 12 + length]
        i += 12 + length + 4
        event = event_pb2.Event.FromString(record)
        for v in event.summary.value:
            out.append((v.tag, event.step, v.simple_value))
    return out


def test_tensorboard_and_wandb_offline(tmp_path):
    sinks = loggers.make(["jsonl", "tensorboard", "wandb"], tmp_path, config={"seeds": 2}, run_name="t")
    try:
        for step, value in ((128, 1.5), (256, float("nan")), (384, 2.5)):
            for sink in sinks:
                sink.log(step, {"episode_return": value, "loss": 0.25})
    finally:
        for sink in sinks:
            sink.close()
    events = read_tfevents(next((tmp_path / "tensorboard").glob("events.out.tfevents.*")))
    assert ("episode_return", 128, 1.5) in events and ("episode_return", 384, 2.5) in events
    assert not any(tag == "episode_return" and step == 256 for tag, step, _ in events)  # NaN skipped
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows[1] == {"env_steps": 256, "episode_return": None, "loss": 0.25}
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and b"episode_return" in runs[0].read_bytes()


def test_unknown_or_missing_sinks():
    with pytest.raises(ValueError, match="unknown log sink 'tensorbord'; closest: 'tensorboard'"):
        loggers.check_sinks(["tensorbord"])
