"""Whisper as a complete ASR system: the peer a speech LLM is measured against.

The same imported (or hub) checkpoint the ``whisper-ctc`` encoder starts from, decoded the standard way
(30 s log-mel windows, its own decoder, greedy or beam), so a results table shows what a user would
get from the off-the-shelf model on the same test sets.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from speechllm_cli.common import device
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.core.configs import WhisperASRConfig

if TYPE_CHECKING:
    from speechllm_cli.data.audio_source import AudioSource


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


def checked_language(owner: str, model: str, language: str | None, generation: Any, key: str) -> str | None:
    """The language a Whisper decoder is prompted in: None for an English-only model (it has no language
    tokens, and therefore takes only ``en``); a multilingual one needs it set (``key`` says where), so that
    the decoder is not left to guess, and known to the model."""
    if not getattr(generation, "is_multilingual", False):
        if language not in (None, "en"):
            raise SpeechLLMError(f"{owner}: {model} is English-only; it cannot take language {language!r}")
        return None
    if language is None:
        raise SpeechLLMError(f"{owner}: {model} is multilingual; set its language (e.g. {key}=en) so the decoder "
                             "is not left to guess it")
    if f"<|{language}|>" not in getattr(generation, "lang_to_id", {}):
        raise SpeechLLMError(f"{owner}: {model} has no language {language!r}")
    return language


def _language(config: WhisperASRConfig, generation: Any) -> dict[str, str]:
    """``generate``'s language and task for a multilingual model; none for an English-only one."""
    language = checked_language("whisper peer", config.model, config.language, generation,
                                "decode.peers.<name>.language")
    return {} if language is None else {"language": language, "task": "transcribe"}


class WhisperASR:
    def __init__(self, config: WhisperASRConfig) -> None:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor
        from transformers.utils import logging as hf_logging

        from speechllm_cli.core.whisper_packages import resolve_whisper

        location = resolve_whisper(config.model)
        hf_logging.disable_progress_bar()
        try:
            self.processor = WhisperProcessor.from_pretrained(location)
            self.model = WhisperForConditionalGeneration.from_pretrained(location).eval()
            self.model.to(device.torch_device())
        except (OSError, ValueError) as exc:
            raise SpeechLLMError(f"whisper peer: cannot load {config.model!r}: {str(exc).splitlines()[0]}") from None
        self.config = config
        self.generation = copy.deepcopy(self.model.generation_config)
        self.generation.update(num_beams=config.beam, max_new_tokens=config.max_new_tokens, max_length=None)
        """Everything else in one config: mixing it with keyword arguments makes transformers warn on every batch."""
        self.prompt = _language(config, self.generation)
        """Keyword arguments of ``generate``: transformers' Whisper ignores a language set in the config."""

    def transcribe(self, audio: AudioSource, batch_size: int,
                   track: Callable[[Iterable[Any], int, str], Iterable[Any]], description: str) -> list[str]:
        """One transcript per utterance (each at most 30 s), read and decoded a batch of similar lengths at a time."""
        device.announce()
        batches = audio.batches(batch_size)
        texts = [""] * len(audio)
        for batch in track(batches, len(batches), description):
            inputs = self.processor.feature_extractor([audio.load(i).numpy() for i in batch], sampling_rate=16000,
                                                      return_tensors="pt", return_attention_mask=True)
            with torch.no_grad(), _quiet_transformers():
                ids = self.model.generate(inputs.input_features.to(self.model.device),
                                          attention_mask=inputs.attention_mask.to(self.model.device),
                                          generation_config=self.generation, **self.prompt)
            for index, text in zip(batch, self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True),
                                   strict=True):
                texts[index] = text.strip()
        return texts
