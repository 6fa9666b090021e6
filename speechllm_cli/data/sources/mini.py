"""The self-contained corpus: text from generators, speech from the Debian TTS engines, no download.

Sentences of each text domain are dealt out in config order, splits first and then text-only
corpora, so no sentence is in two of them. Each split names a voice pool; a recipe holds voices out
of training by giving its test splits a pool the training split does not use.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import PositiveInt, field_validator, model_validator

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.names import Name
from speechllm_cli.data.entries import Entry, Utterance
from speechllm_cli.data.sources.base import Track
from speechllm_cli.data.text_domains import GENERATORS, TextItem
from speechllm_cli.data.tts import Synthesis, Voice, render_all, short_hash


class DomainConfig(StrictModel):
    generator: str
    """A text generator: kjv (the King James Bible), commands or commands-de (assistant commands in English
    or German with SLU frames), questions (short questions with one-word answers)."""
    min_words: PositiveInt = 1
    max_words: PositiveInt = 1000
    lang: str = "en"

    @model_validator(mode="after")
    def _known(self) -> DomainConfig:
        if self.generator not in GENERATORS:
            raise ValueError(f"unknown generator {self.generator!r} (known: {', '.join(GENERATORS)})")
        return self


class MiniSplitConfig(StrictModel):
    domain: str
    utterances: PositiveInt
    voices: str
    """Name of a voice pool in ``voices``."""
    noise_snr_db: tuple[float, float] | None = None
    """Additive white noise at an SNR drawn per utterance from this range (dB); None keeps speech clean.
    Noise in training speech keeps a model from relying on the TTS engines' perfect silence."""


class MiniCorpusConfig(StrictModel):
    domain: str
    sentences: PositiveInt


class MiniConfig(StrictModel):
    seed: int = 0
    domains: dict[str, DomainConfig]
    voices: dict[str, list[str]]
    """Voice pools, each a list of ``engine:voice`` (``espeak-ng:en-us+f3``, ``flite:slt``)."""
    rate: tuple[float, float] = (0.85, 1.2)
    """Speaking-rate factor range, drawn per utterance."""
    pitch: tuple[float, float] = (0.7, 1.3)
    """Pitch factor range, drawn per utterance (espeak-ng only)."""
    splits: dict[Name, MiniSplitConfig]
    corpora: dict[Name, MiniCorpusConfig] = {}
    workers: PositiveInt = 2

    @field_validator("voices")
    @classmethod
    def _voices_parse(cls, pools: dict[str, list[str]]) -> dict[str, list[str]]:
        for pool, voices in pools.items():
            if not voices:
                raise ValueError(f"voice pool {pool!r} is empty")
            for voice in voices:
                Voice.parse(voice)
        return pools

    @model_validator(mode="after")
    def _references(self) -> MiniConfig:
        for name, split in self.splits.items():
            if split.domain not in self.domains:
                raise ValueError(f"split {name!r}: unknown domain {split.domain!r}")
            if split.voices not in self.voices:
                raise ValueError(f"split {name!r}: unknown voice pool {split.voices!r}")
        for name, corpus in self.corpora.items():
            if corpus.domain not in self.domains:
                raise ValueError(f"corpus {name!r}: unknown domain {corpus.domain!r}")
        return self


class MiniSource:
    def __init__(self, config: MiniConfig, data_dir: Path) -> None:
        self.config = config
        self.audio_dir = data_dir / "audio"

    @cached_property
    def _allocation(self) -> dict[str, list[TextItem]]:
        """Split or corpus name -> its sentences, dealt from each domain without overlap."""
        pools: dict[str, list[TextItem]] = {}
        for name, domain in self.config.domains.items():
            items = GENERATORS[domain.generator](self.config.seed)
            pools[name] = [i for i in items if domain.min_words <= len(i.text.split()) <= domain.max_words]
        taken = dict.fromkeys(pools, 0)
        wanted = [(n, s.domain, s.utterances) for n, s in self.config.splits.items()]
        wanted += [(n, c.domain, c.sentences) for n, c in self.config.corpora.items()]
        allocation = {}
        for name, domain, count in wanted:
            start = taken[domain]
            if start + count > len(pools[domain]):
                asked = sum(c for _, d, c in wanted if d == domain)
                raise SpeechLLMError(f"prepare_data.mini: domain {domain!r} has {len(pools[domain])} sentences "
                                     f"within its word limits, but splits and corpora ask for {asked}")
            allocation[name] = pools[domain][start:start + count]
            taken[domain] = start + count
        return allocation

    def splits(self) -> list[str]:
        return list(self.config.splits)

    def inputs(self, split: str) -> list[Path]:
        return []

    def corpus_names(self) -> list[str]:
        return list(self.config.corpora)

    def corpus_rows(self, name: str) -> list[dict[str, Any]]:
        corpus = self.config.corpora[name]
        lang = self.config.domains[corpus.domain].lang
        return [{"id": f"{name}-{i:06d}", "text": item.text, "lang": lang, "domain": corpus.domain,
                 "custom": {item.label: item.target} if item.target else {}}
                for i, item in enumerate(self._allocation[name])]

    def _plan(self, split: str) -> list[tuple[Utterance, Synthesis]]:
        spec = self.config.splits[split]
        domain = self.config.domains[spec.domain]
        voices = [Voice.parse(v) for v in self.config.voices[spec.voices]]
        rng = random.Random(f"{self.config.seed}/{split}")
        plan = []
        for index, item in enumerate(self._allocation[split]):
            voice = voices[index % len(voices)]
            rate, pitch = rng.uniform(*self.config.rate), rng.uniform(*self.config.pitch)
            snr = rng.uniform(*spec.noise_snr_db) if spec.noise_snr_db else None
            utt_id = f"{split}-{index:05d}"
            audio = self.audio_dir / split / f"{utt_id}-{short_hash(item.text, voice, rate, pitch, snr)}.flac"
            custom: dict[str, Any] = {"domain": spec.domain, "voice": f"{voice.engine}:{voice.name}"}
            if item.target:
                custom[item.label] = item.target
            utt = Utterance(id=utt_id, audio=audio, text=item.text, where=f"mini split {split} #{index}",
                            speaker=voice.slug, language=domain.lang, custom=custom)
            plan.append((utt, Synthesis(audio, item.text, voice, rate, pitch, snr, utt_id)))
        return plan

    def entries(self, split: str, track: Track) -> Iterator[Entry]:
        plan = self._plan(split)
        render_all([job for _, job in plan], self.config.workers, track, f"synthesizing {split}")
        yield from (utt for utt, _ in plan)
