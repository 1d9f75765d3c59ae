"""Claiming a results directory: one live run writes into a directory at a time.

A run takes an exclusive lock (`fcntl.flock`) on `DIR/.lock` before any work and holds it
until it ends; the operating system releases it when the process dies, so a crashed run
never leaves a stale claim. A second run into the same directory is refused at once, with
the pid of the run holding it.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

LOCK = ".lock"


class DirectoryInUse(ValueError):
    """Another live process holds the directory."""


class Claim:
    """An exclusive claim on `directory` (created if missing); `release()` or `with` ends it."""

    def __init__(self, directory: str | os.PathLike, what: str = "out"):
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise ValueError(f"{what}={str(directory)!r} is not allowed: cannot create it or "
                             f"write there ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise DirectoryInUse(f"{what}={str(directory)!r} is in use by a live run ({holder}); "
                                 f"wait for it to end, or choose another directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def claim_on_main(directory: str | os.PathLike, what: str = "out") -> Claim | None:
    """Process 0 claims `directory`; in a job of several processes, every process learns
    whether it could and raises with it, so that none goes on alone. Returns process 0's
    claim (None on the others)."""
    import jax

    claim, error = None, None
    if jax.process_index() == 0:
        try:
            claim = Claim(directory, what)
        except ValueError as e:
            error = e
    if jax.process_count() > 1:
        import numpy as np
        from jax.experimental import multihost_utils

        claimed = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
        if not claimed and error is None:
            error = ValueError(f"{what}={str(directory)!r} is not allowed: process 0 could not "
                               f"claim it (see its message)")
    if error is not None:
        raise error
    return claim
