"""Corpus sources, looked up by the ``prepare_data.source`` name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from speechllm_cli.data.sources.base import Source, Track, no_progress
from speechllm_cli.data.sources.kaldi import KaldiConfig, KaldiSource
from speechllm_cli.data.sources.librispeech import LibriSpeechConfig, LibriSpeechSource
from speechllm_cli.data.sources.mini import MiniConfig, MiniSource
from speechllm_cli.data.sources.slurp import SlurpConfig, SlurpSource
from speechllm_cli.data.sources.tsv import TsvConfig, TsvSource
from speechllm_cli.data.sources.tts_text import TtsTextConfig, TtsTextSource

SOURCES: dict[str, Callable[[Any, Path], Source]] = {
    "mini": MiniSource,
    "librispeech": LibriSpeechSource,
    "slurp": SlurpSource,
    "kaldi": KaldiSource,
    "tsv": TsvSource,
    "tts_text": TtsTextSource,
}

__all__ = ["SOURCES", "KaldiConfig", "LibriSpeechConfig", "MiniConfig", "SlurpConfig", "Source", "Track", "TsvConfig",
           "TtsTextConfig", "no_progress"]
