"""Atomic file writing and small JSON helpers.

Every stage writes through these so that a killed run never leaves a half-written file that a rerun
would mistake for finished output.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from speechllm_cli.common.errors import SpeechLLMError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
"""Temporary files are created private; finished outputs get the permissions a plain open() would give."""


def _disk_full(error: BaseException) -> bool:
    """Writers report a full disk in their own words (OSError 28, safetensors' and SQLite's messages)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(text in str(error) for text in ("No space left on device", "database or disk is full"))


@contextlib.contextmanager
def _space_named(target: Path) -> Iterator[None]:
    """A full disk names the output it stopped, not just the errno: the user needs to know where space ran out."""
    try:
        yield
    except Exception as error:
        if _disk_full(error):
            raise SpeechLLMError(f"{target}: no space left on device to write it "
                                 f"({shutil.disk_usage(target.parent).free // 1024} KiB free there)") from error
        raise


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    The temporary name keeps the target's suffixes so that writers choosing a format by extension
    (lhotse's ``.jsonl.gz``, soundfile's ``.flac``) still do the right thing.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix="".join(target.suffixes))
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _space_named(target):
            yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder: the old folder is replaced only once the new one is complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        with _space_named(target):
            yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        for file in tmp.rglob("*"):
            os.chmod(file, (0o777 if file.is_dir() else 0o666) & ~_UMASK)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: Path, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def write_jsonl(target: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line; return how many were written."""
    count = 0
    with atomic_path(target) as tmp, tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def broken_link(path: Path) -> str | None:
    """Why a path that does not exist is a link that leads nowhere, if it is one: the user's fix is the link."""
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "is a loop of symbolic links"
    if path.is_symlink():
        return f"is a symbolic link to {os.readlink(path)}, which does not exist"
    return None


def read_json(path: Path) -> Any:
    """A JSON artifact; a damaged one is an error naming it (a missing one stays FileNotFoundError)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise SpeechLLMError(f"{path}: damaged, not JSON ({error})") from error


def load_tensors(path: Path, device: str = "cpu") -> dict[str, Any]:
    """A safetensors artifact; a damaged one (cut short, overwritten) is an error naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=device)
    except SafetensorError as error:
        raise SpeechLLMError(f"{path}: damaged, not a safetensors file ({error})") from error


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def file_digest(path: Path) -> str:
    """Content hash of a file, or of every file below a folder (names included)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
