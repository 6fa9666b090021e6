"""SLURP (Bastianelli et al., 2020) from an existing copy: the ``*.jsonl`` annotations and ``slurp_real``.

lhotse has no SLURP preparer, so the layout is read here as the corpus ships it: one JSON object per
text (``slurp_id``, ``sentence``, ``scenario``, ``action``, ``tokens``, ``entities`` as token spans,
``recordings``), each recorded several times. Every recording becomes an utterance whose supervision
carries the frame in ``custom.slu``, serialised as the mini recipe's command grammar does, with each
entity's filler made of its tokens' surfaces, lower-cased and space-joined, as SLURP's scorer builds it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.names import Name
from speechllm_cli.data.entries import Entry, Problem, Utterance, read_lines
from speechllm_cli.data.sources.base import Track, require_path
from speechllm_cli.data.text_domains.grammar import frame_json


class SlurpConfig(StrictModel):
    corpus_dir: Path
    """The folder holding ``train.jsonl``, ``devel.jsonl``, ``test.jsonl`` and ``slurp_real/``."""
    splits: dict[Name, str] = {"slurp_train": "train.jsonl", "slurp_devel": "devel.jsonl", "slurp_test": "test.jsonl"}
    """Split name -> annotation file in corpus_dir."""
    microphone: Literal["headset", "far", "all"] = "headset"
    """Which recordings: close-talk (``-headset.flac``), far-field (the others), or all."""


def frame_of(record: dict[str, Any]) -> str:
    """The SLU target of one SLURP record."""
    surfaces = [token["surface"] for token in record["tokens"]]
    entities = [{"type": entity.get("type", "unknown"),
                 "filler": " ".join(surfaces[i] for i in entity["span"]).lower()} for entity in record["entities"]]
    return frame_json(record["scenario"], record["action"], entities)


class SlurpSource:
    def __init__(self, config: SlurpConfig, data_dir: Path) -> None:
        self.config = config
        require_path(config.corpus_dir, "prepare_data.slurp.corpus_dir", "folder")

    def splits(self) -> list[str]:
        return list(self.config.splits)

    def inputs(self, split: str) -> list[Path]:
        return [self.config.corpus_dir / self.config.splits[split]]

    def corpus_names(self) -> list[str]:
        return []

    def corpus_rows(self, name: str) -> list[dict[str, Any]]:
        raise KeyError(name)

    def _wanted(self, file: str) -> bool:
        headset = file.endswith("-headset.flac")
        return self.config.microphone == "all" or headset == (self.config.microphone == "headset")

    def entries(self, split: str, track: Track) -> Iterator[Entry]:
        path = require_path(self.config.corpus_dir / self.config.splits[split], f"prepare_data.slurp.splits.{split}",
                            "file")
        for number, line in read_lines(path):
            where = f"{path}:{number}"
            if line is None:
                yield Problem("invalid_utf8", where, "line is not valid UTF-8")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                frame = frame_of(record)
                recordings = [r["file"] for r in record["recordings"]]
            except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
                yield Problem("bad_line", where, f"not a SLURP record ({type(exc).__name__}: {exc})")
                continue
            for file in filter(self._wanted, recordings):
                yield Utterance(id=f"slurp-{record['slurp_id']}-{Path(file).stem}",
                                audio=self.config.corpus_dir / "slurp_real" / file, text=record["sentence"],
                                where=where, recording_id=Path(file).stem, language="en",
                                custom={"domain": "slurp", "slu": frame})
