"""Output units taken from the recipe's sentencepiece model (id 0 = ``<blk>``), for encoders trained here.

The model's bytes travel inside the saved encoder folder, so a trained encoder never depends on the
experiment directory it came from. A tokenizer learned over phonemes (``prepare_text.tokenizer.units:
phonemes``) has a ``units.json`` beside it that says so, and travels with it: such an encoder reads a
transcript's units from espeak-ng's IPA of it in the transcript's own language.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.core.phonemes import phonemize

TOKENIZER_FILE = "tokenizer.model"
UNITS_FILE = "units.json"
PHONEMES = {"units": "phonemes"}


def read_tokenizer(source: str | Path | bytes | None) -> tuple[bytes | None, Any]:
    """The sentencepiece model's bytes and a processor built from them (None, None without a source)."""
    if source is None:
        return None, None
    import sentencepiece

    proto = Path(source).read_bytes() if isinstance(source, str | Path) else source
    try:
        return proto, sentencepiece.SentencePieceProcessor(model_proto=proto)
    except RuntimeError:
        name = source if isinstance(source, str | Path) else "tokenizer bytes"
        raise SpeechLLMError(f"{name}: not a sentencepiece model") from None


def phoneme_units(folder: Path) -> bool:
    """Whether the tokenizer in ``folder`` was learned over phonemes (its ``units.json`` says so)."""
    path = folder / UNITS_FILE
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")) == PHONEMES
    except (OSError, json.JSONDecodeError):
        raise SpeechLLMError(f"{path}: not the units marker ({json.dumps(PHONEMES)})") from None


class SentencePieceUnits:
    """The unit half of the :class:`CTCEncoder` contract, for encoders whose ids are sentencepiece ids."""

    model_type: str

    def _init_units(self, tokenizer: str | Path | bytes | None) -> None:
        self._tokenizer_proto, self._tokenizer = read_tokenizer(tokenizer)
        self.phoneme_units = isinstance(tokenizer, str | Path) and phoneme_units(Path(tokenizer).parent)

    def resolve_vocab(self, vocab_size: int | None) -> int:
        """The tokenizer's size, checked against a configured one, so units and outputs never disagree."""
        if self._tokenizer is None:
            if vocab_size is None:
                raise SpeechLLMError(f"{self.model_type}: vocab_size is not set and no tokenizer was given")
            return vocab_size
        size = self._tokenizer.get_piece_size()
        if vocab_size not in (None, size):
            raise SpeechLLMError(f"{self.model_type}: vocab_size {vocab_size} does not match the tokenizer's "
                                 f"{size} units")
        return size

    def _require_tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise SpeechLLMError(f"{self.model_type}: this encoder was built without a tokenizer, so its ids "
                                 "have no text")
        return self._tokenizer

    def units(self) -> list[str]:
        tokenizer = self._require_tokenizer()
        return [tokenizer.id_to_piece(i) for i in range(tokenizer.get_piece_size())]

    def ids_to_text(self, ids: Sequence[int]) -> str:
        return self._require_tokenizer().decode(list(ids))

    def text_to_ids(self, text: str, lang: str = "en") -> list[int]:
        return list(self._require_tokenizer().encode(phonemize(text, lang) if self.phoneme_units else text))

    def save_tokenizer(self, folder: Path) -> None:
        if self._tokenizer_proto is not None:
            (folder / TOKENIZER_FILE).write_bytes(self._tokenizer_proto)
            if self.phoneme_units:
                (folder / UNITS_FILE).write_text(json.dumps(PHONEMES) + "\n", encoding="utf-8")

    @staticmethod
    def saved_tokenizer(folder: Path) -> Path | None:
        path = folder / TOKENIZER_FILE
        return path if path.is_file() else None
