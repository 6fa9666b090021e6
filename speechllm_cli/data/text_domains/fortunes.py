"""Everyday English sentences from Debian's ``fortunes`` collection, for an encoder that hears more than scripture.

The mini encoder's head learnt to spell from King James verses only, and writes modern speech in that
spelling ("shoping", "lightes"); sentences of today's English, spoken by the training voices, widen what it
hears without touching the test domains (commands, the QA questions). Only some files are read: those of
plain prose, not the off-colour, verse or jargon ones. A sentence is kept when it is one sentence of 4-20
plain words (letters, apostrophes and sentence punctuation), so that every word can be spoken and spelt.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.data.text_domains.base import TextItem

FOLDER = Path("/usr/share/games/fortunes")
FILES = ("fortunes", "literature", "education", "food", "kids", "people", "science", "wisdom", "work",
         "platitudes", "pets", "sports")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_PLAIN = re.compile(r"[A-Za-z][A-Za-z ,.'!?-]*[.!?]")


def _sentences(cookie: str) -> list[str]:
    """The plain sentences of one fortune; an attribution line ("-- Mark Twain") ends the text."""
    text = " ".join(cookie.split("--")[0].split())
    return [s for s in _SENTENCE_END.split(text) if _PLAIN.fullmatch(s) and 4 <= len(s.split()) <= 20]


def fortune_items(seed: int) -> list[TextItem]:
    """Every distinct plain sentence of :data:`FILES`, shuffled with ``seed``."""
    missing = [name for name in FILES if not (FOLDER / name).is_file()]
    if missing:
        raise SpeechLLMError(f"{FOLDER / missing[0]}: not installed; the fortunes text domain needs Debian's "
                             "fortunes (run tools/setup.sh)")
    sentences: dict[str, None] = {}
    for name in FILES:
        for cookie in (FOLDER / name).read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            sentences.update(dict.fromkeys(_sentences(cookie)))
    items = [TextItem(text) for text in sentences]
    random.Random(seed).shuffle(items)
    return items
