"""One writer per unit of work: an exclusive lock held from the first read of a unit's state to its marker.

Two commands on one experiment folder mixed their results silently: the second resumed from the first one's
checkpoint under its own key, or trained the same unit twice into one log. Each unit now takes an ``flock``
on ``<exp>/.cache/locks/<unit>.lock`` before it reads its marker; a second command that reaches a unit in
use stops with one line naming the holder (its pid, host and command, which the lock file holds). The kernel
drops the lock when its holder dies, however it dies, so no stale lock outlives a killed run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from speechllm_cli.common.errors import SpeechLLMError

FOLDER = Path(".cache") / "locks"


def lock_path(exp_dir: Path, out_dir: Path) -> Path:
    """The lock file of the unit writing ``out_dir`` (a folder inside ``exp_dir``)."""
    relative = out_dir.resolve().relative_to(exp_dir.resolve())
    return exp_dir / FOLDER / (str(relative).replace(os.sep, "%") + ".lock")


@contextlib.contextmanager
def unit_lock(exp_dir: Path, out_dir: Path, command: str) -> Iterator[None]:
    """Hold the unit's lock for the duration, or stop at once if another process holds it."""
    path = lock_path(exp_dir, out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise SpeechLLMError(f"{out_dir}: in use by {holder}; wait for it to finish or stop it") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} ({command or 'speechllm'})\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
