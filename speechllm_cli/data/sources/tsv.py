"""Ad-hoc import of a tab-separated list: ``path<TAB>text``, one utterance a line.

A first line ``path<TAB>text`` is a header. Relative audio paths are relative to the TSV's folder. The
utterance id is the audio file's stem. Any other number of fields is a bad line: a third column would
be data that nothing reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.names import Name
from speechllm_cli.data.entries import Entry, Problem, Utterance, read_lines
from speechllm_cli.data.sources.base import Track, require_path


class TsvConfig(StrictModel):
    file: Path
    split: Name
    language: str = "en"


class TsvSource:
    def __init__(self, config: TsvConfig, data_dir: Path) -> None:
        self.config = config
        require_path(config.file, "prepare_data.tsv.file", "file")

    def splits(self) -> list[str]:
        return [self.config.split]

    def inputs(self, split: str) -> list[Path]:
        return [self.config.file]

    def corpus_names(self) -> list[str]:
        return []

    def corpus_rows(self, name: str) -> list[dict[str, Any]]:
        raise KeyError(name)

    def entries(self, split: str, track: Track) -> Iterator[Entry]:
        path = self.config.file
        for number, line in read_lines(path):
            where = f"{path}:{number}"
            if line is None:
                yield Problem("invalid_utf8", where, "line is not valid UTF-8")
                continue
            fields = line.rstrip("\r\n").split("\t")
            if not line.strip() or (number == 1 and [f.strip().lower() for f in fields] == ["path", "text"]):
                continue
            if len(fields) != 2:
                yield Problem("bad_line", where, f"expected path<TAB>text, got {len(fields)} fields")
                continue
            audio = Path(fields[0])
            audio = audio if audio.is_absolute() else path.parent / audio
            yield Utterance(id=audio.stem, audio=audio, text=fields[1].strip(), where=where,
                            language=self.config.language)
