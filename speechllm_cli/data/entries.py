"""What corpus importers yield: an utterance to validate, or a problem they found while reading."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REASONS: dict[str, str] = {
    "missing_audio": "audio file missing",
    "unreadable_audio": "audio file unreadable",
    "empty_audio": "audio file has no samples",
    "nonfinite_audio": "audio has NaN or infinite samples",
    "too_short": "audio shorter than prepare_data.min_seconds",
    "too_long": "audio longer than prepare_data.max_seconds",
    "bad_segment": "segment outside its recording or not of positive length",
    "empty_transcript": "empty transcript",
    "duplicate_id": "duplicate utterance id",
    "invalid_utf8": "text is not valid UTF-8",
    "bad_line": "malformed line",
}
"""Every reason an input can be rejected for; summaries count skips by these keys."""


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: Path
    text: str
    where: str
    """``file:line`` of the entry that described it, for error messages."""
    speaker: str | None = None
    recording_id: str | None = None
    """Id of the audio file when several utterances are segments of it; defaults to the utterance id."""
    start: float = 0.0
    duration: float | None = None
    """Segment length in seconds; None means the whole file from ``start``."""
    span_where: str | None = None
    """``file:line`` that gave ``start`` and ``duration`` (a Kaldi ``segments`` line), for errors about them."""
    language: str = "en"
    custom: dict[str, Any] = field(default_factory=dict)
    """Rides in the supervision's ``custom`` field: ``domain``, ``target`` and the like."""


@dataclass(frozen=True)
class Problem:
    reason: str
    where: str
    detail: str

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown problem reason {self.reason!r}")


Entry = Utterance | Problem


def read_lines(path: Path) -> list[tuple[int, str | None]]:
    """Lines of a text file as ``(line_number, text)``; text is None where the line is not UTF-8.

    Decoding line by line lets one bad line be reported (or skipped) without losing the file.
    """
    lines = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            lines.append((number, raw.decode("utf-8")))
        except UnicodeDecodeError:
            lines.append((number, None))
    return lines
