"""The interface every corpus source implements, and helpers they share."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import broken_link
from speechllm_cli.data.entries import Entry

T = TypeVar("T")
Track = Callable[[Iterable[T], int, str], Iterable[T]]
"""Progress reporting passed in by the caller, shaped like ``rich.progress.track(seq, total, description)``."""


def no_progress(items: Iterable[T], total: int, description: str) -> Iterable[T]:
    return items


class Source(Protocol):
    """A corpus: named splits of entries, plus optional text-only corpora."""

    def splits(self) -> list[str]: ...

    def entries(self, split: str, track: Track) -> Iterator[Entry]:
        """Utterances (or problems found while reading) of one split, with audio ready on disk."""
        ...

    def inputs(self, split: str) -> list[Path]:
        """Files whose content decides the split's output, for the stage's done marker."""
        ...

    def corpus_names(self) -> list[str]:
        """Names of the text-only corpora (text with no audio) this source also provides."""
        ...

    def corpus_rows(self, name: str) -> list[dict[str, Any]]:
        """One text-only corpus as rows ``{id, text, lang, domain, custom}``."""
        ...


PathKind = Literal["file", "folder"]
_IS_KIND: dict[PathKind, Callable[[Path], bool]] = {"file": Path.is_file, "folder": Path.is_dir}


def require_path(path: Path, key: str, kind: PathKind) -> Path:
    """Fail with a message naming the config key when a user-given input is missing or of the wrong kind
    (a folder given as ``--tsv`` would otherwise fail deep inside with a traceback)."""
    if not path.exists():
        link = broken_link(path)
        raise SpeechLLMError(f"{key}: {path} {link}" if link else f"{key}: no such {kind}: {path}")
    if not _IS_KIND[kind](path):
        raise SpeechLLMError(f"{key}: {path} is not a {kind}")
    return path
