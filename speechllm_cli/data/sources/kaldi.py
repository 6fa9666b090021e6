"""Ad-hoc import of a Kaldi data folder: ``wav.scp`` and ``text``, optional ``segments`` and ``utt2spk``.

Only ``wav.scp`` entries that are file paths are supported; a piped command is reported as a bad line.
Relative paths are relative to the current directory, as in Kaldi recipes. A segment's times are checked
against its recording with the audio (``bad_segment``), and problems with them name the ``segments`` line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.names import Name
from speechllm_cli.data.entries import Entry, Problem, Utterance, read_lines
from speechllm_cli.data.sources.base import Track, require_path


class KaldiConfig(StrictModel):
    dir: Path
    split: Name
    language: str = "en"


def _table(path: Path, problems: list[Problem]) -> dict[str, tuple[str, str]]:
    """``key -> (rest of line, where)``, reporting undecodable and duplicate keys as problems."""
    table: dict[str, tuple[str, str]] = {}
    if not path.is_file():
        return table
    for number, line in read_lines(path):
        where = f"{path}:{number}"
        if line is None:
            problems.append(Problem("invalid_utf8", where, "line is not valid UTF-8"))
            continue
        if not line.strip():
            continue
        key, _, rest = line.strip().partition(" ")
        if key in table:
            problems.append(Problem("duplicate_id", where, f"id {key!r} appears more than once in {path.name}"))
            continue
        table[key] = (rest.strip(), where)
    return table


class KaldiSource:
    def __init__(self, config: KaldiConfig, data_dir: Path) -> None:
        self.config = config
        require_path(config.dir, "prepare_data.kaldi.dir", "folder")
        for name in ("wav.scp", "text"):
            require_path(config.dir / name, f"prepare_data.kaldi.dir ({name})", "file")

    def splits(self) -> list[str]:
        return [self.config.split]

    def inputs(self, split: str) -> list[Path]:
        names = ("wav.scp", "text", "segments", "utt2spk")
        return [self.config.dir / n for n in names if (self.config.dir / n).is_file()]

    def corpus_names(self) -> list[str]:
        return []

    def corpus_rows(self, name: str) -> list[dict[str, Any]]:
        raise KeyError(name)

    def entries(self, split: str, track: Track) -> Iterator[Entry]:
        folder = self.config.dir
        problems: list[Problem] = []
        wavs = _table(folder / "wav.scp", problems)
        texts = _table(folder / "text", problems)
        segments = _table(folder / "segments", problems)
        speakers = _table(folder / "utt2spk", problems)
        yield from problems
        for utt_id, (text, where) in texts.items():
            speaker = speakers.get(utt_id, (None, ""))[0]
            recording_id, start, duration, seg_where = utt_id, 0.0, None, None
            if segments:
                if utt_id not in segments:
                    yield Problem("missing_audio", where, f"utterance {utt_id!r} has no line in segments")
                    continue
                fields, seg_where = segments[utt_id]
                parts = fields.split()
                try:
                    recording_id, start, end = parts[0], float(parts[1]), float(parts[2])
                except (IndexError, ValueError):
                    yield Problem("bad_line", seg_where, "expected: utt_id recording_id start end")
                    continue
                duration = end - start
            if recording_id not in wavs:
                yield Problem("missing_audio", where, f"recording {recording_id!r} has no line in wav.scp")
                continue
            location, wav_where = wavs[recording_id]
            if location.endswith("|"):
                yield Problem("bad_line", wav_where, "piped wav.scp commands are not supported; give a file path")
                continue
            yield Utterance(id=utt_id, audio=Path(location), text=text,
                            where=where, speaker=speaker, recording_id=recording_id, start=start,
                            duration=duration, span_where=seg_where, language=self.config.language)
