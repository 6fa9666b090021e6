"""The sentencepiece model that gives the project's own CTC encoder its output units.

Id 0 is reserved as ``<blk>`` so the tokenizer's ids are the CTC vocabulary as is (blank = 0).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import PositiveInt

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.io import atomic_dir

BLANK = "<blk>"


class TokenizerConfig(StrictModel):
    vocab_size: PositiveInt = 500
    """Upper bound; sentencepiece uses fewer units when the text cannot fill it."""
    model_type: Literal["bpe", "unigram", "char"] = "bpe"
    train_sets: list[str] = ["train"]
    """Text sets (names under prepare_text.sets) whose text trains the tokenizer."""
    character_coverage: float = 1.0
    units: Literal["text", "phonemes"] = "text"
    """text: units learned over the normalised text; phonemes: over espeak-ng's IPA of each text in its own
    language (stress marks dropped), so that languages share units (cross-lingual tracks)."""


def train_tokenizer(sentences: Iterable[str], config: TokenizerConfig, out_dir: Path,
                    files: dict[str, str] | None = None) -> int:
    """Train into ``out_dir/tokenizer.model`` (``files``: more files written beside it, by name); return the
    vocabulary size actually reached.

    The model is taken from memory rather than from a ``model_prefix``: sentencepiece records that prefix
    (a temporary path) in the model, so the same text would give different bytes at every training, and
    every stage keyed on the tokenizer would run again.
    """
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(list(sentences)), model_writer=model,
        vocab_size=config.vocab_size, model_type=config.model_type,
        character_coverage=config.character_coverage, hard_vocab_limit=False,
        pad_id=0, pad_piece=BLANK, unk_id=1, bos_id=-1, eos_id=-1, minloglevel=2)
    with atomic_dir(out_dir) as tmp:
        (tmp / "tokenizer.model").write_bytes(model.getvalue())
        for name, text in (files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return sentencepiece.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()
