"""Speech synthesized from a recipe's own text: the costly alternative to text-only alignment, or a test set's
text in a new voice.

TASU claims to replace TTS: instead of speaking the target-domain text and training on the speech, it
simulates the encoder's output from the text. To measure that claim a recipe needs the TTS route too:
this source speaks a seeded sample of sentences from text corpora that another source of the same recipe
wrote (``data/corpora/<name>.jsonl``, e.g. the mini recipe's ``scripture_text`` and ``commands_text``),
with the recipe's training voices, as one split. Add it under ``prepare_data.extra`` so the other splits
stay untouched. Given ``splits`` instead, it speaks held-out transcripts again: the mini recipe's
``test_neural`` is its test sets' text in a neural voice no split was trained on.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from pydantic import PositiveInt, model_validator

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.names import Name
from speechllm_cli.data.entries import Entry, Utterance
from speechllm_cli.data.sources.base import Track
from speechllm_cli.data.tts import SpeakConfig, Synthesis, plan_speech, render_all


class TtsTextConfig(SpeakConfig):
    split: Name
    """The split to write."""
    corpora: list[str] = []
    """Text corpora of this recipe to draw sentences from (written by another source in prepare-data)."""
    splits: list[Name] = []
    """Splits of this recipe whose transcripts to speak again, in other voices (written by another source
    listed before this one): a held-out test set's text in a voice no split was trained on."""
    utterances: PositiveInt
    """How many sentences to speak, drawn at random from all the corpora and splits together (so in their
    proportions)."""

    @model_validator(mode="after")
    def _has_text(self) -> Self:
        if not self.corpora and not self.splits:
            raise ValueError("name corpora or splits to draw the text from")
        return self


class TtsTextSource:
    def __init__(self, config: TtsTextConfig, data_dir: Path) -> None:
        self.config = config
        self.data_dir = data_dir

    def splits(self) -> list[str]:
        return [self.config.split]

    def inputs(self, split: str) -> list[Path]:
        return [*map(self._corpus_path, self.config.corpora), *map(self._split_path, self.config.splits)]

    def corpus_names(self) -> list[str]:
        return []

    def corpus_rows(self, name: str) -> list[dict[str, Any]]:
        raise KeyError(name)

    def _corpus_path(self, name: str) -> Path:
        return self.data_dir / "corpora" / f"{name}.jsonl"

    def _split_path(self, name: str) -> Path:
        return self.data_dir / name / "cuts.jsonl.gz"

    def _sentences(self) -> list[dict[str, Any]]:
        from lhotse import CutSet

        rows = []
        for name in self.config.corpora:
            path = self._corpus_path(name)
            if not path.is_file():
                raise SpeechLLMError(f"{path}: text corpus {name!r} does not exist (prepare_data.tts_text.corpora "
                                     "must name a corpus another source of this recipe writes)")
            rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for name in self.config.splits:
            path = self._split_path(name)
            if not path.is_file():
                raise SpeechLLMError(f"{path}: split {name!r} does not exist (prepare_data.tts_text.splits must name "
                                     "a split that a source listed before this one writes)")
            rows += [{"id": sup.id, "text": sup.text or "", "lang": sup.language,
                      "domain": (sup.custom or {}).get("domain")}
                     for cut in CutSet.from_file(path) for sup in cut.supervisions]
        if len(rows) < self.config.utterances:
            raise SpeechLLMError(f"prepare_data.tts_text: {self.config.utterances} utterances asked for, but the "
                                 f"corpora and splits hold {len(rows)} sentences")
        return random.Random(f"{self.config.seed}/{self.config.split}").sample(rows, self.config.utterances)

    def _plan(self) -> list[tuple[Utterance, Synthesis]]:
        split = self.config.split
        rows = self._sentences()
        ids = [f"{split}-{index:05d}" for index in range(len(rows))]
        jobs = plan_speech([row["text"] for row in rows], ids, self.config, self.data_dir / "audio" / split,
                           random.Random(f"{self.config.seed}/{split}/voice"))
        plan = []
        for index, (row, job) in enumerate(zip(rows, jobs, strict=True)):
            custom = {"domain": row["domain"], "voice": f"{job.voice.engine}:{job.voice.name}", "source_id": row["id"]}
            utt = Utterance(id=job.noise_key, audio=job.path, text=row["text"], speaker=job.voice.slug,
                            where=f"tts_text split {split} #{index} ({row['id']})", language=row.get("lang", "en"),
                            custom=custom)
            plan.append((utt, job))
        return plan

    def entries(self, split: str, track: Track) -> Iterator[Entry]:
        plan = self._plan()
        render_all([job for _, job in plan], self.config.workers, track, f"synthesizing {split}")
        yield from (utt for utt, _ in plan)
