"""The item every text generator yields."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TextItem:
    text: str
    target: str | None = None
    """A task output for the text, e.g. an SLU frame as a JSON string; None for plain transcripts."""
    label: str = "slu"
    """The manifest field (``custom.<label>``) the target is kept in: ``slu`` frames, ``answer`` words."""
