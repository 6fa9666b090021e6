"""Validation of importer entries and their assembly into lhotse CutSets.

All sources go through :func:`build_cuts`, so every corpus gets the same checks and the same policy:
fail with a one-line message naming the file, or skip and count by reason.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import atomic_path
from speechllm_cli.data.audio import AudioInfo, AudioLimits, Fault, fit_span, inspect_file, length_fault, recording_cut
from speechllm_cli.data.entries import Entry, Problem, Utterance

if TYPE_CHECKING:
    from lhotse import CutSet, Recording
    from lhotse.cut import DataCut


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


def _file_checked(path: Path, files: dict[Path, AudioInfo | Fault]) -> AudioInfo | Fault:
    """Each file is inspected once, however many segments of it a corpus lists."""
    if path not in files:
        files[path] = inspect_file(path)
    return files[path]


def _measure(utt: Utterance, files: dict[Path, AudioInfo | Fault], limits: AudioLimits) -> float | Problem:
    """The utterance's length in seconds, or what is wrong with its audio."""
    checked = _file_checked(utt.audio, files)
    if isinstance(checked, Fault):
        return Problem(checked.reason, utt.where, f"audio file {utt.audio} of utterance {utt.id!r} {checked.what}")
    subject = (f"audio file {utt.audio} of utterance {utt.id!r}" if utt.duration is None
               else f"segment of utterance {utt.id!r} in {utt.audio}")
    where = utt.span_where or utt.where
    seconds = fit_span(checked, utt.start, utt.duration)
    if isinstance(seconds, Fault):
        return Problem(seconds.reason, where, f"{subject} {seconds.what}")
    fault = length_fault(seconds, limits)
    return seconds if fault is None else Problem(fault.reason, where, f"{subject} {fault.what}")


def _check(utt: Utterance, seen: set[str], files: dict[Path, AudioInfo | Fault],
           limits: AudioLimits) -> float | Problem:
    if not utt.text.strip():
        return Problem("empty_transcript", utt.where, f"utterance {utt.id!r} has an empty transcript")
    if utt.id in seen:
        return Problem("duplicate_id", utt.where, f"utterance id {utt.id!r} appears more than once")
    return _measure(utt, files, limits)


def _reject(problem: Problem, policy: BadInputPolicy, split: str, report: SplitReport) -> None:
    if policy is BadInputPolicy.fail:
        raise SpeechLLMError(
            f"{problem.where}: {problem.detail} [split {split}; --on-bad-input skip skips and counts these]")
    report.skipped[problem.reason] += 1
    report.skipped_lines.append(f"{problem.reason}\t{problem.where}\t{problem.detail}")


def _cut(utt: Utterance, seconds: float, recordings: dict[Path, Recording]) -> DataCut:
    from lhotse import Recording, SupervisionSegment

    recording = recordings.get(utt.audio)
    if recording is None:
        recording = Recording.from_file(utt.audio.resolve(), recording_id=utt.recording_id or utt.id)
        recordings[utt.audio] = recording
    cut = recording_cut(recording, utt.id, utt.start, seconds)
    cut.supervisions.append(SupervisionSegment(
        id=utt.id, recording_id=recording.id, start=0.0, duration=seconds, channel=cut.channel, text=utt.text,
        language=utt.language, speaker=utt.speaker, custom=dict(utt.custom) or None))
    return cut


def build_cuts(entries: Iterable[Entry], policy: BadInputPolicy, sample_rate: int, split: str,
               limits: AudioLimits) -> tuple[CutSet, SplitReport]:
    """Validate ``entries`` and return ``(CutSet, SplitReport)``; raise on the first problem under ``fail``."""
    from lhotse import CutSet

    report = SplitReport()
    seen: set[str] = set()
    files: dict[Path, AudioInfo | Fault] = {}
    recordings: dict[Path, Recording] = {}
    cuts = []
    for entry in entries:
        checked = entry if isinstance(entry, Problem) else _check(entry, seen, files, limits)
        if isinstance(checked, Problem):
            _reject(checked, policy, split, report)
            continue
        assert isinstance(entry, Utterance)
        seen.add(entry.id)
        cut = _cut(entry, checked, recordings)
        if cut.sampling_rate != sample_rate:
            cut = cut.resample(sample_rate)
            report.resampled += 1
        cuts.append(cut)
        report.utterances += 1
        report.seconds += checked
    return CutSet.from_cuts(cuts), report


def write_cuts(cuts: CutSet, target: Path, root: Path) -> None:
    """Write a ``.jsonl.gz`` manifest whose bytes depend only on its cuts, not on where ``root`` lives.

    lhotse's own writer leaves the temporary file's name and the time in the gzip header, so the same
    split prepared twice would differ, and every stage keyed on its content would run again. Audio below
    ``root`` (the experiment folder) is named relative to it, so a copied or moved folder still finds its
    audio and keeps its keys; readers put ``root`` back in front (``with_recording_path_prefix``).
    """
    with atomic_path(target) as tmp, tmp.open("wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
        for cut in cuts:
            row = _relative_sources(cut.to_dict(), root.resolve())
            packed.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))


def _relative_sources(row: dict[str, Any], root: Path) -> dict[str, Any]:
    for source in row.get("recording", {}).get("sources", []):
        path = Path(source["source"])
        if source.get("type") == "file" and path.is_absolute() and path.is_relative_to(root):
            source["source"] = str(path.relative_to(root))
    return row
