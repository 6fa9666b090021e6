"""Text normalisation shared by ``prepare-text`` (training targets) and ``score`` (WER/CER).

Using one function for both is what makes a WER comparable: the hypothesis and the reference are
cleaned exactly the way the training targets were.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from num2words import num2words

from speechllm_cli.common.config import StrictModel

_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_BASIC_PUNCT = set(".,!?'")
_SPACES = re.compile(r"\s+")


class NormalizerConfig(StrictModel):
    """How transcripts are cleaned. TASU's reference setting is lowercase, basic punctuation."""

    lowercase: bool = True
    punctuation: Literal["keep", "basic", "strip"] = "strip"
    """keep: unchanged; basic: keep only . , ! ? and apostrophes; strip: keep only in-word apostrophes."""
    numbers: Literal["keep", "words"] = "words"
    """words: spell digits out in the utterance's language (num2words)."""


def _spell_numbers(text: str, lang: str) -> str:
    def spell(match: re.Match[str]) -> str:
        token = match.group(0).replace(",", "")
        try:
            return " " + num2words(float(token) if "." in token else int(token), lang=lang) + " "
        except NotImplementedError:
            return " " + num2words(float(token) if "." in token else int(token), lang="en") + " "

    return _NUMBER.sub(spell, text)


def _keep_char(char: str, mode: str) -> bool:
    category = unicodedata.category(char)
    if category[0] in "LNM" or char.isspace():
        return True
    return mode == "basic" and char in _BASIC_PUNCT


def normalize(text: str, config: NormalizerConfig, lang: str = "en") -> str:
    """Return ``text`` cleaned according to ``config`` (whitespace is always collapsed)."""
    text = unicodedata.normalize("NFC", text)
    if config.numbers == "words":
        text = _spell_numbers(text, lang)
    if config.punctuation != "keep":
        text = text.replace("’", "'")
        text = "".join(c if _keep_char(c, config.punctuation) or (c == "'") else " " for c in text)
        if config.punctuation == "strip":
            text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
        text = text.replace("-", " ")
    if config.lowercase:
        text = text.lower()
    return _SPACES.sub(" ", text).strip()
