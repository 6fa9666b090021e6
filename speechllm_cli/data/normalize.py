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

_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:[.,]\d+)?")
"""Thousands-separated numbers first (``1,000,000`` is one number), then plain and decimal ones."""
_BASIC_PUNCT = set(".,!?'")
_SPACES = re.compile(r"\s+")


class NormalizerConfig(StrictModel):
    """How transcripts are cleaned. TASU's reference setting is lowercase, basic punctuation."""

    lowercase: bool = True
    punctuation: Literal["keep", "basic", "strip"] = "strip"
    """keep: unchanged; basic: keep only . , ! ? and apostrophes; strip: keep only in-word apostrophes."""
    numbers: Literal["keep", "words"] = "words"
    """words: spell digits out in the utterance's language (num2words)."""


def _spelled(token: str, lang: str) -> str:
    """num2words in ``lang``, else in English (languages it lacks); digit by digit past its largest number."""
    value = float(token) if "." in token else int(token)
    for language in (lang, "en"):
        try:
            return num2words(value, lang=language)
        except NotImplementedError:
            continue
        except OverflowError:
            break
    return " ".join(_spelled(digit, lang) for digit in token if digit.isdigit())


def _spell_numbers(text: str, lang: str) -> str:
    return _NUMBER.sub(lambda match: " " + _spelled(match.group(0).replace(",", ""), lang) + " ", text)


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
    if config.lowercase:
        text = text.lower()
    if config.punctuation != "keep":
        text = text.replace("’", "'")
        text = "".join(c if _keep_char(c, config.punctuation) or (c == "'") else " " for c in text)
        if config.punctuation == "strip":
            text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
        text = text.replace("-", " ")
    return _SPACES.sub(" ", text).strip()
