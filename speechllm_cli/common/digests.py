"""Content digests of large input files, remembered in the experiment folder across commands.

Every stage keys its units by the content of their inputs, and a split's content includes its audio: on
LibriSpeech that is 6.3 GB of FLAC read again by every stage of every run. A file whose path, size,
modification time, change time and inode are all as they were when it was hashed is not read again; its
digest comes from ``<exp>/.cache/digests.sqlite``. Writing a file (even with its old mtime put back) moves
its change time, so changed content is never taken for the old one. SQLite serialises the writers when
several processes key their units at once. A folder that cannot hold the cache (read-only) only costs the
reading again.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from speechllm_cli.common.io import file_digest

FOLDER = ".cache"
DATABASE = "digests.sqlite"


class DigestCache:
    """sha256 of files below or outside one experiment folder, by the file's identity on disk."""

    def __init__(self, exp_dir: Path) -> None:
        self.path = exp_dir / FOLDER / DATABASE
        self._connection: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(self.path, timeout=600)
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute(
                "CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, identity TEXT NOT NULL, "
                "digest TEXT NOT NULL)")
        return self._connection

    def files(self, paths: list[Path]) -> list[str]:
        """Each file's sha256 (as :func:`file_digest`), read from disk only where the file has changed; what
        was read is remembered in one transaction."""
        try:
            connection = self._open()
            known = dict(connection.execute("SELECT path, identity || ' ' || digest FROM digests").fetchall())
        except (OSError, sqlite3.Error):
            return [file_digest(path) for path in paths]
        digests, fresh = [], []
        for path in paths:
            absolute = str(path.resolve())
            stat = os.stat(absolute)
            identity = f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}:{stat.st_dev}"
            remembered = known.get(absolute, "").split(" ")
            if remembered[0] == identity:
                digests.append(remembered[1])
                continue
            digests.append(file_digest(path))
            fresh.append((absolute, identity, digests[-1]))
        if fresh:
            with contextlib.suppress(sqlite3.Error), connection:
                connection.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?)", fresh)
        return digests

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
