"""``prepare-text``: normalised text-only sets (``<exp>/text/<set>.jsonl``) and the CTC tokenizer."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from pydantic import model_validator

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.io import read_jsonl, write_jsonl
from speechllm_cli.common.names import Name
from speechllm_cli.data.manifests import BadInputPolicy
from speechllm_cli.data.normalize import NormalizerConfig
from speechllm_cli.data.text_sets import TextSetConfig, build_text_set, source_path
from speechllm_cli.data.tokenizer import TokenizerConfig, train_tokenizer
from speechllm_cli.stages.runner import Context, StageResult, Unit, run_units, status


class PrepareTextConfig(StrictModel):
    on_bad_input: BadInputPolicy = BadInputPolicy.fail
    normalize: NormalizerConfig = NormalizerConfig()
    sets: dict[Name, TextSetConfig] = {}
    tokenizer: TokenizerConfig | None = TokenizerConfig()

    @model_validator(mode="after")
    def _tokenizer_sets_exist(self) -> PrepareTextConfig:
        if self.tokenizer is not None:
            missing = [s for s in self.tokenizer.train_sets if s not in self.sets]
            if missing:
                raise ValueError(f"tokenizer.train_sets names {missing[0]!r}, which is not in sets")
        return self


def _write_sets(context: Context, config: PrepareTextConfig) -> dict[str, Any]:
    stats = {}
    for name, set_config in config.sets.items():
        rows, skipped = build_text_set(name, set_config, context.exp_dir / "data", config.normalize,
                                       config.on_bad_input)
        write_jsonl(context.exp_dir / "text" / f"{name}.jsonl", rows)
        domains = Counter(row["domain"] for row in rows)
        stats[name] = {"rows": len(rows), "domains": dict(domains), "skipped": dict(skipped)}
    return stats


def _train_tokenizer(context: Context, config: PrepareTextConfig) -> dict[str, Any]:
    """Over the text, or over its phonemes with the marker that makes every encoder built on it read phonemes."""
    from speechllm_cli.core.encoders.sentencepiece_units import PHONEMES, UNITS_FILE
    from speechllm_cli.core.phonemes import phonemize

    assert config.tokenizer is not None
    text_dir = context.exp_dir / "text"
    rows = [row for name in config.tokenizer.train_sets for row in read_jsonl(text_dir / f"{name}.jsonl")]
    if config.tokenizer.units == "phonemes":
        sentences = [phonemize(row["text"], row.get("lang") or "en") for row in rows]
        files = {UNITS_FILE: json.dumps(PHONEMES) + "\n"}
    else:
        sentences, files = [row["text"] for row in rows], {}
    size = train_tokenizer(sentences, config.tokenizer, context.exp_dir / "tokenizer", files)
    return {"vocab_size": size, "sentences": len(sentences)}


def run(context: Context) -> StageResult:
    config: PrepareTextConfig = context.section("prepare_text")
    data_dir = context.exp_dir / "data"
    settings = config.model_dump(mode="json", exclude={"tokenizer"})
    units = [Unit("text", context.exp_dir / "text", settings,
                  [source_path(s, data_dir) for s in config.sets.values()],
                  lambda: _write_sets(context, config))]
    if config.tokenizer is not None:
        units.append(Unit("tokenizer", context.exp_dir / "tokenizer", config.tokenizer.model_dump(mode="json"),
                          [context.exp_dir / "text" / f"{name}.jsonl" for name in config.tokenizer.train_sets],
                          lambda: _train_tokenizer(context, config)))
    text, *rest = run_units(context, units)
    rows = [[f"text/{name}.jsonl", str(s["rows"]), ", ".join(s["domains"]) or "-",
             ", ".join(f"{k}={v}" for k, v in s["skipped"].items()) or "0", status(text)]
            for name, s in text.stats.items()]
    for outcome in rest:
        rows.append(["tokenizer/tokenizer.model", f"{outcome.stats['vocab_size']} units", "-", "-", status(outcome)])
    total = sum(s["rows"] for s in text.stats.values())
    summary = f"prepare-text: {len(text.stats)} text sets, {total} rows" + (
        f", tokenizer of {rest[0].stats['vocab_size']} units" if rest else "") + f" -> {context.exp_dir}"
    return StageResult(summary, ["output", "rows", "domains", "skipped", "status"], rows)
