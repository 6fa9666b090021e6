"""Text-only training sets: JSON lines ``{id, text, target, task, lang, domain}``.

They come from the transcripts of a prepared split, from a text-only corpus written by
``prepare-data``, or from a plain text file (one sentence a line), all normalised the same way. The
target is the normalised text for ``asr``; for ``slu`` it is the SLU frame (a JSON string) that rides in
the source's ``custom.slu`` field, as lhotse keeps task labels.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import model_validator

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.names import Name
from speechllm_cli.data.entries import read_lines
from speechllm_cli.data.manifests import BadInputPolicy
from speechllm_cli.data.normalize import NormalizerConfig, normalize

LABELS = {"slu": ("slu", "no_slu_label", "SLU frame"), "qa": ("answer", "no_answer", "answer")}
"""Per task with a label: the manifest field holding it, the skip reason when it is missing, its name."""


class TextSetConfig(StrictModel):
    """Where a text set comes from: exactly one of ``split``, ``corpus`` or ``file``."""

    split: Name | None = None
    corpus: Name | None = None
    file: Path | None = None
    domain: str | None = None
    """Overrides the domain recorded with the source (a plain file has none: default ``text``)."""
    lang: str | None = None
    task: Literal["asr", "slu", "qa"] = "asr"
    """asr: the target is the text; slu: the SLU frame (``custom.slu``); qa: the answer (``custom.answer``)."""

    @model_validator(mode="after")
    def _one_source(self) -> TextSetConfig:
        given = [k for k in ("split", "corpus", "file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of split, corpus, file (got {', '.join(given) or 'none'})")
        return self


def source_path(config: TextSetConfig, data_dir: Path) -> Path:
    if config.split is not None:
        return data_dir / config.split / "cuts.jsonl.gz"
    if config.corpus is not None:
        return data_dir / "corpora" / f"{config.corpus}.jsonl"
    assert config.file is not None
    return config.file


def _raw_rows(config: TextSetConfig, path: Path) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """``(where, row)`` pairs; row is None for a line that is not UTF-8."""
    if config.split is not None:
        from lhotse import CutSet

        for cut in CutSet.from_file(path):
            for sup in cut.supervisions:
                custom = sup.custom or {}
                yield f"{path} ({sup.id})", {"id": sup.id, "text": sup.text or "", "lang": sup.language,
                                             "domain": custom.get("domain"), "custom": custom}
    elif config.corpus is not None:
        for number, line in read_lines(path):
            if line is not None and line.strip():
                yield f"{path}:{number}", json.loads(line)
    else:
        for number, line in read_lines(path):
            if line is None or line.strip():
                yield f"{path}:{number}", None if line is None else {"id": f"{path.stem}-{number:06d}", "text": line}


def build_text_set(name: str, config: TextSetConfig, data_dir: Path, normalizer: NormalizerConfig,
                   policy: BadInputPolicy) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Rows of one text set and the count of skipped inputs by reason."""
    path = source_path(config, data_dir)
    if not path.exists():
        origin = "run prepare-data first" if config.file is None else "no such file"
        raise SpeechLLMError(f"prepare_text.sets.{name}: {path} does not exist ({origin})")
    rows, skipped = [], Counter[str]()
    for where, raw in _raw_rows(config, path):
        if raw is None:
            problem, detail = "invalid_utf8", "line is not valid UTF-8"
        else:
            lang = config.lang or raw.get("lang") or "en"
            text = normalize(raw["text"], normalizer, lang)
            target = text if config.task == "asr" else (raw.get("custom") or {}).get(LABELS[config.task][0])
            if text and target:
                rows.append({"id": raw["id"], "text": text, "target": target, "task": config.task, "lang": lang,
                             "domain": config.domain or raw.get("domain") or "text"})
                continue
            if text:
                label, problem, what = LABELS[config.task]
                detail = f"{raw['id']!r} has no {what} (custom.{label})"
            else:
                problem, detail = "empty_transcript", f"{raw['id']!r} is empty after normalisation"
        if policy is BadInputPolicy.fail:
            raise SpeechLLMError(f"{where}: {detail} [text set {name}; --on-bad-input skip skips and counts these]")
        skipped[problem] += 1
    return rows, skipped
