"""Whisper as a complete ASR system: the peer a speech LLM is measured against.

The same imported (or hub) checkpoint the ``whisper-ctc`` encoder starts from, decoded the standard way
(30 s log-mel windows, its own decoder, greedy or beam), so a results table shows what a user would
get from the off-the-shelf model on the same test sets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from pydantic import PositiveInt

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.errors import SpeechLLMError


class WhisperASRConfig(StrictModel):
    model: str = "whisper-tiny.en"
    """A built-in alias, a Hugging Face Whisper folder or a hub id."""
    beam: PositiveInt = 1
    max_new_tokens: PositiveInt = 128


class WhisperASR:
    def __init__(self, config: WhisperASRConfig) -> None:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        from speechllm_cli.core.whisper_import import resolve_whisper

        location = resolve_whisper(config.model)
        try:
            self.processor = WhisperProcessor.from_pretrained(location)
            self.model = WhisperForConditionalGeneration.from_pretrained(location).eval()
        except (OSError, ValueError) as exc:
            raise SpeechLLMError(f"whisper peer: cannot load {config.model!r}: {str(exc).splitlines()[0]}") from None
        self.config = config

    def transcribe(self, waves: Sequence[torch.Tensor], batch_size: int,
                   track: Callable[[Iterable[Any], int, str], Iterable[Any]], description: str) -> list[str]:
        """One transcript per 16 kHz waveform (each at most 30 s), in batches of similar length."""
        order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        texts = [""] * len(waves)
        for batch in track(batches, len(batches), description):
            features = self.processor.feature_extractor([waves[i].numpy() for i in batch], sampling_rate=16000,
                                                        return_tensors="pt").input_features
            with torch.no_grad():
                ids = self.model.generate(features, num_beams=self.config.beam,
                                          max_new_tokens=self.config.max_new_tokens)
            for index, text in zip(batch, self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True),
                                   strict=True):
                texts[index] = text.strip()
        return texts

