"""Atomic writes: a failure leaves the previous output untouched and no temporary files behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from speechllm_cli.common.io import atomic_dir, atomic_path, write_text


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
