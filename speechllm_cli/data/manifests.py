"""Validation of importer entries and their assembly into lhotse CutSets.

All sources go through :func:`build_cuts`, so every corpus gets the same checks and the same policy:
fail with a one-line message naming the file, or skip and count by reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import soundfile

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.data.entries import Entry, Problem, Utterance

if TYPE_CHECKING:
    from lhotse import CutSet


class BadInputPolicy(str, Enum):
    fail = "fail"
    skip = "skip"


@dataclass
class SplitReport:
    utterances: int = 0
    seconds: float = 0.0
    resampled: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_lines: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"utterances": self.utterances, "hours": round(self.seconds / 3600, 4),
                "resampled": self.resampled, "skipped": dict(sorted(self.skipped.items()))}


def _audio_problem(utt: Utterance) -> Problem | None:
    path = utt.audio
    if not path.is_file():
        return Problem("missing_audio", utt.where, f"audio file {path} of utterance {utt.id!r} does not exist")
    if path.stat().st_size == 0:
        return Problem("empty_audio", utt.where, f"audio file {path} of utterance {utt.id!r} is empty (0 bytes)")
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        reason = str(exc).splitlines()[0]
        return Problem("unreadable_audio", utt.where, f"audio file {path} of utterance {utt.id!r} cannot be read ({reason})")
    if info.frames == 0:
        return Problem("empty_audio", utt.where, f"audio file {path} of utterance {utt.id!r} has no samples")
    return None


def _check(utt: Utterance, seen: set[str]) -> Problem | None:
    if not utt.text.strip():
        return Problem("empty_transcript", utt.where, f"utterance {utt.id!r} has an empty transcript")
    if utt.id in seen:
        return Problem("duplicate_id", utt.where, f"utterance id {utt.id!r} appears more than once")
    return _audio_problem(utt)


def build_cuts(entries: Iterable[Entry], policy: BadInputPolicy, sample_rate: int, split: str) -> tuple[CutSet, SplitReport]:
    """Validate ``entries`` and return ``(CutSet, SplitReport)``; raise on the first problem under ``fail``."""
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

    report = SplitReport()
    seen: set[str] = set()
    recordings: dict[Path, Recording] = {}
    cuts = []
    for entry in entries:
        problem = entry if isinstance(entry, Problem) else _check(entry, seen)
        if problem is not None:
            if policy is BadInputPolicy.fail:
                raise SpeechLLMError(
                    f"{problem.where}: {problem.detail} [split {split}; --on-bad-input skip skips and counts these]")
            report.skipped[problem.reason] += 1
            report.skipped_lines.append(f"{problem.reason}\t{problem.where}\t{problem.detail}")
            continue
        assert isinstance(entry, Utterance)
        seen.add(entry.id)
        recording = recordings.get(entry.audio)
        if recording is None:
            recording = Recording.from_file(entry.audio.resolve(), recording_id=entry.recording_id or entry.id)
            recordings[entry.audio] = recording
        duration = entry.duration if entry.duration is not None else recording.duration - entry.start
        supervision = SupervisionSegment(
            id=entry.id, recording_id=recording.id, start=0.0, duration=duration, text=entry.text,
            language=entry.language, speaker=entry.speaker, custom=dict(entry.custom) or None)
        cut = MonoCut(id=entry.id, start=entry.start, duration=duration, channel=0,
                      recording=recording, supervisions=[supervision])
        if recording.sampling_rate != sample_rate:
            cut = cut.resample(sample_rate)
            report.resampled += 1
        cuts.append(cut)
        report.utterances += 1
        report.seconds += duration
    return CutSet.from_cuts(cuts), report

