"""Whisper as a complete ASR system: the peer a speech LLM is measured against.

The same imported (or hub) checkpoint the ``whisper-ctc`` encoder starts from, decoded the standard way
(30 s log-mel windows, its own decoder, greedy or beam), so a results table shows what a user would
get from the off-the-shelf model on the same test sets.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
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


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' Whisper generation passes itself arguments it then warns about (its own workaround, on
    every batch); those lines would bury the command's output, so its warnings are silenced meanwhile."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


class WhisperASR:
    def __init__(self, config: WhisperASRConfig) -> None:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor
        from transformers.utils import logging as hf_logging

        from speechllm_cli.core.whisper_import import resolve_whisper

        location = resolve_whisper(config.model)
        hf_logging.disable_progress_bar()
        try:
            self.processor = WhisperProcessor.from_pretrained(location)
            self.model = WhisperForConditionalGeneration.from_pretrained(location).eval()
        except (OSError, ValueError) as exc:
            raise SpeechLLMError(f"whisper peer: cannot load {config.model!r}: {str(exc).splitlines()[0]}") from None
        self.config = config
        self.generation = copy.deepcopy(self.model.generation_config)
        self.generation.update(num_beams=config.beam, max_new_tokens=config.max_new_tokens, max_length=None)
        """Everything in one config: mixing it with keyword arguments makes transformers warn on every batch."""

    def transcribe(self, waves: Sequence[torch.Tensor], batch_size: int,
                   track: Callable[[Iterable[Any], int, str], Iterable[Any]], description: str) -> list[str]:
        """One transcript per 16 kHz waveform (each at most 30 s), in batches of similar length."""
        order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        texts = [""] * len(waves)
        for batch in track(batches, len(batches), description):
            inputs = self.processor.feature_extractor([waves[i].numpy() for i in batch], sampling_rate=16000,
                                                      return_tensors="pt", return_attention_mask=True)
            with torch.no_grad(), _quiet_transformers():
                ids = self.model.generate(inputs.input_features, attention_mask=inputs.attention_mask,
                                          generation_config=self.generation)
            for index, text in zip(batch, self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True),
                                   strict=True):
                texts[index] = text.strip()
        return texts

