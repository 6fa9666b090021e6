"""``score``: WER/CER of every decoded system x split, error listings, and the recipe's RESULTS.md.

References and hypotheses go through the recipe's ``prepare_text.normalize`` settings, the same that
made the training targets, so a WER never counts a casing or punctuation convention as an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from speechllm_cli.common.io import read_jsonl, write_json, write_text
from speechllm_cli.data.normalize import NormalizerConfig, normalize
from speechllm_cli.metrics.asr import score_asr
from speechllm_cli.metrics.results import ResultRow, render_results
from speechllm_cli.stages.decode import DecodeConfig, decode_dir
from speechllm_cli.stages.runner import Context, StageResult, Unit, run_units, status


def score_dir(context: Context, system: str, split: str) -> Path:
    return context.exp_dir / "score" / system / split


def _score(context: Context, normalizer: NormalizerConfig, system: str, split: str) -> dict[str, Any]:
    rows = read_jsonl(decode_dir(context, system, split) / "hyps.jsonl")
    triples = [(r["id"], normalize(r["ref"], normalizer), normalize(r["hyp"], normalizer)) for r in rows]
    score, listing = score_asr(triples)
    out = score_dir(context, system, split)
    write_text(out / "errors.txt", listing)
    decoded = json.loads((decode_dir(context, system, split) / "summary.json").read_text(encoding="utf-8"))
    summary = {**score.as_dict(), "rtf": decoded["rtf"], "command": decoded["command"]}
    write_json(out / "summary.json", summary)
    return summary


def _results(context: Context, outcomes: list[Any]) -> str:
    rows = [ResultRow(o.unit.settings["system"], o.unit.settings["split"], o.stats, o.stats["command"])
            for o in outcomes]
    header = (f"# Results: {context.config.name}\n\nMade by `{context.command}`; hypotheses by the commands "
              "listed under each table. Word and character error rates in %, after the recipe's text "
              "normalisation.\n\n")
    return header + render_results("WER", rows, "wer") + "\n" + render_results("CER", rows, "cer")


def run(context: Context) -> StageResult:
    decode: DecodeConfig = context.section("decode")
    normalizer = context.config.prepare_text.normalize if context.config.prepare_text else NormalizerConfig()
    units = [Unit(f"score/{system}/{split}", score_dir(context, system, split),
                  {"system": system, "split": split, "normalize": normalizer.model_dump(mode="json")},
                  [decode_dir(context, system, split) / "hyps.jsonl"],
                  lambda s=system, p=split: _score(context, normalizer, s, p))
             for system in decode.systems for split in decode.splits]
    outcomes = run_units(context, units)
    write_text(context.exp_dir / "RESULTS.md", _results(context, outcomes))
    rows = [[o.unit.settings["system"], o.unit.settings["split"], f"{100 * o.stats['wer']:.2f}",
             f"{100 * o.stats['cer']:.2f}", str(o.stats["insertions"]), status(o)] for o in outcomes]
    summary = f"score: {len(outcomes)} system x split scores -> {context.exp_dir / 'RESULTS.md'}"
    return StageResult(summary, ["system", "split", "WER %", "CER %", "ins", "status"], rows)
