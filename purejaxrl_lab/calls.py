"""How a run is cut into chunks, and chunks into calls of the compiled program.

A run of N iterations is cut into chunks of K iterations (about `num_chunks` of them), the
unit of logging, evaluation and checkpointing. One call of the update program runs 1 to m
consecutive chunks: on CPU short calls cost more per iteration than long ones, so once the
speed is measured the host sizes calls to last about `CALL_SECONDS`. A call always ends
where an evaluation or a checkpoint is due. The number of iterations a call runs is an
argument of the program, so every call uses the same program and the grouping changes no
number.
"""

from __future__ import annotations

import math

# A call runs whole chunks until it has lasted about this long (measured on the calls before).
CALL_SECONDS = 1.0
# At most this many chunks per call; the program's metrics buffer holds this many chunks.
MAX_CHUNKS_PER_CALL = 4
# ... and at most this many [run, iteration] entries per metric (64 MiB of float32 per metric).
MAX_CALL_METRIC_ENTRIES = 2**24


def chunk_length(num_iterations: int, num_chunks: int) -> tuple[int, bool]:
    """(iterations per chunk, whether the last chunk is shorter).

    Prefers a length that divides `num_iterations` with between half and twice the
    requested number of chunks; otherwise ceil(num_iterations / num_chunks), and the last
    call runs fewer iterations.
    """
    target = max(1, min(num_chunks, num_iterations))
    candidates = [c for c in range(max(1, target // 2), min(num_iterations, 2 * target) + 1)
                  if num_iterations % c == 0]
    if candidates:
        count = min(candidates, key=lambda c: abs(c - target))
        return num_iterations // count, False
    return math.ceil(num_iterations / target), True


def total_chunks(num_iterations: int, num_chunks: int) -> int:
    """How many chunks (the last one perhaps shorter) a run of `num_iterations` is cut into."""
    return math.ceil(num_iterations / chunk_length(num_iterations, num_chunks)[0])


def chunks_per_call(num_iterations: int, chunk_len: int, batch: int) -> int:
    """m, the most chunks one call runs: `MAX_CHUNKS_PER_CALL`, or fewer when the run has
    fewer chunks or when m chunks of metrics for the whole batch would pass
    `MAX_CALL_METRIC_ENTRIES` per metric."""
    return max(1, min(MAX_CHUNKS_PER_CALL, math.ceil(num_iterations / chunk_len),
                      MAX_CALL_METRIC_ENTRIES // (batch * chunk_len)))


def next_call_chunks(limit: int, seconds_per_chunk: float | None) -> int:
    """How many chunks (1 to `limit`) the next call runs: as many as fill `CALL_SECONDS`
    at the measured rate, one while there is no measurement yet."""
    if seconds_per_chunk is None:
        return 1
    return max(1, min(limit, int(CALL_SECONDS / max(seconds_per_chunk, 1e-9))))


def chunks_until_due(chunks_done: int, every: int) -> int:
    """Chunks from `chunks_done` to the next multiple of `every` (0: never due)."""
    return every - chunks_done % every if every else math.inf


def due(chunks_done: int, every: int, finished: bool) -> bool:
    """Whether an event every `every` chunks (0: never) is due after `chunks_done` chunks;
    a run's last chunk is always followed by one."""
    return bool(every) and (chunks_done % every == 0 or finished)
