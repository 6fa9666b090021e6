"""Atomic writes: a failure leaves the previous output untouched and no temporary files behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from speechllm_cli.common.io import atomic_dir, atomic_path, file_digest, write_text


def test_atomic_path_keeps_old_content_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "cuts.jsonl.gz"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.name.endswith(".jsonl.gz")
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["cuts.jsonl.gz"]


def test_atomic_dir_replaces_whole_folder(tmp_path: Path) -> None:
    target = tmp_path / "tokenizer"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask
    assert (target / "b").stat().st_mode & 0o777 == 0o666 & ~umask


def test_the_digest_cache_reads_a_file_again_only_when_it_changed(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Same size and the old mtime put back still count as a change (the change time moved)."""
    from speechllm_cli.common import digests

    reads: list[Path] = []
    monkeypatch.setattr(digests, "file_digest", lambda path: reads.append(path) or file_digest(path))
    audio = tmp_path / "a.flac"
    audio.write_bytes(b"one")
    first = digests.DigestCache(tmp_path / "exp").files([audio])
    assert first == [file_digest(audio)] and reads == [audio]
    assert digests.DigestCache(tmp_path / "exp").files([audio]) == first and reads == [audio], "a later command"
    before = audio.stat()
    audio.write_bytes(b"two")
    os.utime(audio, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = digests.DigestCache(tmp_path / "exp").files([audio])
    assert len(reads) == 2 and again == [file_digest(audio)] != first
