"""CTC acoustic encoders, found by name.

``conformer-ctc`` is the project's own small model (trained here from scratch); ``whisper-ctc`` a
pretrained Whisper encoder with a CTC head trained here; ``hf-ctc`` wraps any Hugging Face
``AutoModelForCTC`` checkpoint as it is; ``whisper-tokens`` the complete frozen Whisper, its decoder's
posteriors over its own word pieces (nothing trained). All meet
:class:`CTCEncoder`: padded 16 kHz waveforms in, CTC log-posteriors with blank 0 out. A new encoder
is one more entry in :data:`ENCODERS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from speechllm_cli.common.config import StrictModel, validate
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.core.encoders.base import BLANK_ID, CTCEncoder, EncoderOutput, FrozenFrontEncoder, greedy_ids
from speechllm_cli.core.encoders.conformer_ctc import ConformerCTC, ConformerCTCConfig
from speechllm_cli.core.encoders.hf_ctc import HFCTCConfig, HFCTCEncoder
from speechllm_cli.core.encoders.whisper_ctc import WhisperCTC, WhisperCTCConfig
from speechllm_cli.core.encoders.whisper_tokens import WhisperTokens

ENCODERS: dict[str, type[CTCEncoder]] = {
    "conformer-ctc": ConformerCTC,
    "hf-ctc": HFCTCEncoder,
    "whisper-ctc": WhisperCTC,
    "whisper-tokens": WhisperTokens,
}

__all__ = ["BLANK_ID", "ENCODERS", "CTCEncoder", "ConformerCTC", "ConformerCTCConfig", "EncoderOutput",
           "FrozenFrontEncoder", "HFCTCConfig", "HFCTCEncoder", "WhisperCTC", "WhisperCTCConfig", "WhisperTokens",
           "build_encoder", "encoder_class", "greedy_ids", "load_encoder"]


def encoder_class(name: str) -> type[CTCEncoder]:
    try:
        return ENCODERS[name]
    except KeyError:
        raise SpeechLLMError(f"unknown encoder {name!r} (known: {', '.join(sorted(ENCODERS))})") from None


def build_encoder(name: str, config: StrictModel | Mapping[str, Any], **kwargs: Any) -> CTCEncoder:
    """A new encoder from its config section (a mapping is validated against the encoder's config class).

    ``kwargs`` go to the encoder's ``from_config`` (``tokenizer=`` for the encoders trained here).
    """
    cls = encoder_class(name)
    if not isinstance(config, cls.config_class):
        data = config.model_dump() if isinstance(config, StrictModel) else dict(config)
        config = validate(cls.config_class, data, f"encoder {name}")
    return cls.from_config(config, **kwargs)


def load_encoder(name: str, source: str | Path, **kwargs: Any) -> CTCEncoder:
    """A saved encoder (a folder written by ``save``, or for ``hf-ctc`` also a hub id), in eval mode."""
    return encoder_class(name).load(source, **kwargs)
