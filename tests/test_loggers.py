"""Logging sinks: JSONL (default), TensorBoard (tensorboardX), Weights & Biases (offline)."""

import json
import struct

import numpy as np
import pytest

from purejaxrl_lab import loggers

NAN = float("nan")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_run_and_sweep(tmp_path):
    # A run of 2 seeds counted in rounds: a chunk of 3 iterations, then a chunk of 1, 100 rounds each.
    sink = loggers.JsonlLogger(tmp_path / "run.jsonl", step_name="rounds")
    loggers.log_chunk([sink], {"loss": np.array([[1.0, 2.0, 3.0],      # seed 0
                                                 [3.0, 4.0, 8.0]]),    # seed 1
                               "regret": np.array([[NAN, 10.0, 5.0],
                                                   [NAN, NAN, 6.0]])},
                      first_iteration=0, units_per_iteration=100, settings=None, num_seeds=2)
    loggers.log_chunk([sink], {"loss": np.array([[0.5], [1.5]]), "regret": np.array([[1.0], [2.0]])},
                      first_iteration=3, units_per_iteration=100, settings=None, num_seeds=2)
    loggers.log_evaluation([sink], 400, {"eval_return": np.array([7.0, 9.0]),
                                         "eval_length": np.array([NAN, NAN])}, settings=None, num_seeds=2)
    sink.close()
    assert read_jsonl(tmp_path / "run.jsonl") == [
        {"rounds": 100, "loss": 2.0, "regret": None},       # (1 + 3) / 2; no seed has a regret: null
        {"rounds": 200, "loss": 3.0, "regret": 10.0},       # (2 + 4) / 2; seed 1's NaN is left out
        {"rounds": 300, "loss": 5.5, "regret": 5.5},        # (3 + 8) / 2, (5 + 6) / 2
        {"rounds": 400, "loss": 1.0, "regret": 1.5},        # second chunk: (3 + 0 + 1) * 100 rounds
        {"rounds": 400, "eval_return": 8.0, "eval_length": None},  # (7 + 9) / 2; all NaN: null
    ]

    # A sweep of 2 settings x 2 seeds, setting-major: rows 0-1 are setting 0, rows 2-3 setting 1.
    settings = [{"ent_coef": 0.0}, {"ent_coef": 0.02}]
    sink = loggers.JsonlLogger(tmp_path / "sweep.jsonl")
    loggers.log_chunk([sink], {"loss": np.array([[1.0, 2.0],      # setting 0, seed 0
                                                 [3.0, 6.0],      # setting 0, seed 1
                                                 [10.0, 20.0],    # setting 1, seed 0
                                                 [NAN, 40.0]])},  # setting 1, seed 1
                      first_iteration=0, units_per_iteration=64, settings=settings, num_seeds=2)
    loggers.log_evaluation([sink], 128, {"eval_return": np.array([100.0, 200.0, NAN, 50.0])},
                           settings=settings, num_seeds=2)
    sink.close()
    assert read_jsonl(tmp_path / "sweep.jsonl") == [
        {"env_steps": 64, "setting_0/loss": 2.0, "setting_1/loss": 10.0},   # (1 + 3) / 2; NaN left out
        {"env_steps": 128, "setting_0/loss": 4.0, "setting_1/loss": 30.0},  # (2 + 6) / 2, (20 + 40) / 2
        {"env_steps": 128, "setting_0/eval_return": 150.0, "setting_1/eval_return": 50.0},
    ]


def test_no_sinks_is_a_no_op():
    loggers.log_chunk([], {"loss": np.zeros((2, 3))}, 0, 10, None, 2)
    loggers.log_evaluation([], 10, {"eval_return": np.zeros(2)}, None, 2)


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


def read_wandb_history(path):
    """{step: {name: value}} from a wandb transaction log (`run-*.wandb`), with wandb's protos.

    The file is a 7-byte header (":W&B", magic, version), then leveldb-log records in 32 KiB
    blocks: each chunk is crc (4 bytes), length (2), type (1: full, 2: first, 3: middle,
    4: last), data; a block's tail shorter than a chunk header is padding.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    history, record, i = {}, b"", 7
    while i + 7 <= len(data):
        if 32768 - i % 32768 < 7:
            i += 32768 - i % 32768
            continue
        length, chunk_type = struct.unpack("<HB", data[i + 4:i + 7])
        record += data[i + 7:i + 7 + length]
        i += 7 + length
        if chunk_type in (1, 4):
            r = wandb_internal_pb2.Record.FromString(record)
            record = b""
            if r.HasField("history"):
                items = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in r.history.item}
                history[items["_step"]] = {k: v for k, v in items.items() if not k.startswith("_")}
    return history


def test_tensorboard_and_wandb_offline(tmp_path):
    sinks = loggers.make(["jsonl", "tensorboard", "wandb"], tmp_path, config={"seeds": 2}, run_name="t",
                         step_name="rounds")
    try:
        for step, value in ((128, 1.5), (256, NAN), (384, 2.5)):
            for sink in sinks:
                sink.log(step, {"episode_return": value, "loss": 0.25})
    finally:
        for sink in sinks:
            sink.close()  # WandbLogger.close returns once run-*.wandb is complete on disk
    rows = read_jsonl(tmp_path / "log.jsonl")
    assert rows[1] == {"rounds": 256, "episode_return": None, "loss": 0.25}  # NaN written as null
    events = read_tfevents(next((tmp_path / "tensorboard").glob("events.out.tfevents.*")))
    assert {(tag, step, value) for tag, step, value in events if tag == "episode_return"} == {
        ("episode_return", 128, 1.5), ("episode_return", 384, 2.5)}  # NaN skipped
    (run,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    assert read_wandb_history(run) == {128: {"episode_return": 1.5, "loss": 0.25},
                                       256: {"loss": 0.25},  # NaN skipped
                                       384: {"episode_return": 2.5, "loss": 0.25}}


def test_unknown_or_missing_sinks():
    with pytest.raises(ValueError, match="unknown log sink 'tensorbord'; closest: 'tensorboard'"):
        loggers.check_sinks(["tensorbord"])
