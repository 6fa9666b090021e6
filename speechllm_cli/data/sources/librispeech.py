"""LibriSpeech: download through lhotse on a user's machine, or read an existing copy.

The manifests are built here from the ``*.trans.txt`` files rather than by lhotse's preparer, because
that preparer only logs a warning and drops an utterance whose FLAC is missing; here every entry goes
through the shared validation, so a missing file fails the stage or is skipped and counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.data.entries import Entry, Problem, Utterance, read_lines
from speechllm_cli.data.sources.base import Track

PARTS = ("dev-clean", "dev-other", "test-clean", "test-other", "train-clean-100", "train-clean-360",
         "train-other-500", "mini_librispeech")


class LibriSpeechConfig(StrictModel):
    corpus_dir: Path
    """The folder holding the part folders (``LibriSpeech/`` of the archives, or its parent)."""
    parts: list[str] = ["dev-clean", "test-clean", "test-other"]
    download: bool = False
    """Download missing parts through lhotse into ``corpus_dir`` first."""


def split_name(part: str) -> str:
    return part.replace("-", "_")


class LibriSpeechSource:
    def __init__(self, config: LibriSpeechConfig, data_dir: Path) -> None:
        unknown = [p for p in config.parts if p not in PARTS]
        if unknown:
            raise SpeechLLMError(f"prepare_data.librispeech.parts: unknown part {unknown[0]!r} "
                                 f"(known: {', '.join(PARTS)})")
        self.config = config
        self.root = self._locate()

    def _part_root(self) -> Path | None:
        for root in (self.config.corpus_dir, self.config.corpus_dir / "LibriSpeech"):
            if all((root / part).is_dir() for part in self.config.parts):
                return root
        return None

    def _locate(self) -> Path:
        root = self._part_root()
        if root is None and self.config.download:
            from lhotse.recipes import download_librispeech

            download_librispeech(self.config.corpus_dir, dataset_parts=list(self.config.parts))
            root = self._part_root()
        if root is None:
            raise SpeechLLMError(
                f"prepare_data.librispeech.corpus_dir: {self.config.corpus_dir} does not hold the parts "
                f"{', '.join(self.config.parts)} (set download: true to fetch them)")
        return root

    def splits(self) -> list[str]:
        return [split_name(p) for p in self.config.parts]

    def _part(self, split: str) -> Path:
        return self.root / next(p for p in self.config.parts if split_name(p) == split)

    def inputs(self, split: str) -> list[Path]:
        return sorted(self._part(split).rglob("*.trans.txt"))

    def corpus_names(self) -> list[str]:
        return []

    def corpus_rows(self, name: str) -> list[dict[str, Any]]:
        raise KeyError(name)

    def entries(self, split: str, track: Track) -> Iterator[Entry]:
        transcripts = self.inputs(split)
        for trans in track(transcripts, len(transcripts), f"reading {split}"):
            speaker = trans.parent.parent.name
            for number, line in read_lines(trans):
                where = f"{trans}:{number}"
                if line is None:
                    yield Problem("invalid_utf8", where, "line is not valid UTF-8")
                    continue
                if not line.strip():
                    continue
                utt_id, _, text = line.strip().partition(" ")
                yield Utterance(id=utt_id, audio=trans.parent / f"{utt_id}.flac", text=text.strip(),
                                where=where, speaker=speaker, language="en",
                                custom={"domain": "librispeech"})
