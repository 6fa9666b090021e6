"""``score``: WER/CER of every decoded system x split, SLU metrics of every fine-tuning run, RESULTS.md.

References and hypotheses go through the recipe's ``prepare_text.normalize`` settings, the same that
made the training targets, so a WER never counts a casing or punctuation convention as an error. SLU
outputs are parsed as JSON frames; one that does not parse is scored as an empty frame and counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import read_json, read_jsonl, write_json, write_text
from speechllm_cli.data.normalize import NormalizerConfig, normalize
from speechllm_cli.metrics.asr import score_asr
from speechllm_cli.metrics.gap_report import GapRow, plot_gap, render_gap
from speechllm_cli.metrics.mismatch_report import render_mismatch, render_unified_mismatch
from speechllm_cli.metrics.qa import contains_answer
from speechllm_cli.metrics.results import MISSING, ResultRow, first_seen, render_results
from speechllm_cli.metrics.slu import score_slu
from speechllm_cli.metrics.slu_report import SLURow, plot_slu, render_slu
from speechllm_cli.stages.calibrate import MISMATCH_PLOT, calibration_dir
from speechllm_cli.stages.curriculum.config import CurriculumConfig, cells
from speechllm_cli.stages.curriculum.records import cascade_file, cell_of, read_cell
from speechllm_cli.stages.decode import DecodeConfig, decode_dir, decoded_splits
from speechllm_cli.stages.distill import measured_systems
from speechllm_cli.stages.gap import gap_dir
from speechllm_cli.stages.inputs import text_normalizer
from speechllm_cli.stages.runner import MARKER, Context, StageResult, Unit, finished, read_marker, run_units, status
from speechllm_cli.stages.speech_llm_io import speech_llm_names, system_dir
from speechllm_cli.stages.systems import REFERENCE
from speechllm_cli.stages.text_branch import text_branch_dir

SLU_PLOT = "plots/slu_f1_vs_budget.png"
GAP_PLOT = "plots/accuracy_vs_log_m.png"


def score_dir(context: Context, system: str, split: str) -> Path:
    return context.exp_dir / "score" / system / split


def _score(context: Context, normalizer: NormalizerConfig, system: str, split: str) -> dict[str, Any]:
    rows = read_jsonl(decode_dir(context, system, split) / "hyps.jsonl")
    triples = [(r["id"], normalize(r["ref"], normalizer), normalize(r["hyp"], normalizer)) for r in rows]
    score, listing = score_asr(triples)
    out = score_dir(context, system, split)
    write_text(out / "errors.txt", listing)
    decoded = read_json(decode_dir(context, system, split) / "summary.json")
    summary = {**score.as_dict(), "rtf": decoded["rtf"], "command": decoded["command"]}
    write_json(out / "summary.json", summary)
    return summary


def _score_answers(context: Context, normalizer: NormalizerConfig, system: str, split: str) -> dict[str, Any]:
    """Answer accuracy of a task split: a response is right when it holds the answer (``metrics.qa``)."""
    rows = read_jsonl(decode_dir(context, system, split) / "hyps.jsonl")
    right = [contains_answer(normalize(r["ref"], normalizer), normalize(r["hyp"], normalizer)) for r in rows]
    listing = "".join(f"{r['id']}\t{'right' if ok else 'wrong'}\t{r['ref']}\t{r['hyp']}\n"
                      for r, ok in zip(rows, right, strict=True))
    out = score_dir(context, system, split)
    write_text(out / "answers.txt", listing)
    decoded = read_json(decode_dir(context, system, split) / "summary.json")
    summary = {"num_utts": len(rows), "accuracy": round(sum(right) / max(len(rows), 1), 5), "rtf": decoded["rtf"],
               "instruction": decoded.get("instruction"), "command": decoded["command"]}
    write_json(out / "summary.json", summary)
    return summary


def _score_tasks(context: Context, decode: DecodeConfig) -> tuple[list[Any], list[list[str]]]:
    """Answer accuracy of every system that has answered a task split (``decode.tasks``)."""
    normalizer = text_normalizer(context)
    systems = [*decode.systems, *(name for name in speech_llm_names(context) if name not in decode.systems)]
    decoded = [(system, split) for system in systems for split in decode.tasks
               if finished(decode_dir(context, system, split))]
    units = [Unit(f"score/{system}/{split}", score_dir(context, system, split),
                  {"system": system, "split": split, "metric": "answer-accuracy",
                   "normalize": normalizer.model_dump(mode="json")},
                  [decode_dir(context, system, split) / "hyps.jsonl"],
                  lambda s=system, p=split: _score_answers(context, normalizer, s, p))
             for system, split in decoded]
    outcomes = run_units(context, units)
    rows = [[f"{o.unit.settings['system']} / {o.unit.settings['split']}", f"accuracy {100 * o.stats['accuracy']:.1f}",
             "", status(o)] for o in outcomes]
    return outcomes, rows


def _task_results(decode: DecodeConfig, outcomes: list[Any]) -> str:
    """The understanding table: answers to spoken tasks, and each as a share of the text ceiling's (the
    original LLM reading the split's own transcripts) where there is one task split and a ceiling."""
    rows = [ResultRow(o.unit.settings["system"], o.unit.settings["split"], o.stats, o.stats["command"])
            for o in outcomes]
    ceilings = [name for name, cascade in decode.cascades.items() if cascade.transcripts == REFERENCE]
    extra = None
    if len(decode.tasks) == 1 and ceilings:
        top = {row.system: row.metrics["accuracy"] for row in rows}.get(ceilings[0])
        extra = ("of text ceiling", {row.system: f"{100 * row.metrics['accuracy'] / top:.0f} %" if top else MISSING
                                     for row in rows})
    instructions = "; ".join(f"{split}: \"{task.instruction}\"" for split, task in decode.tasks.items())
    return (render_results("Answer accuracy (spoken tasks)", rows, "accuracy", extra)
            + f"\nAsked ({instructions}); right when the response holds the answer.\n")


def _align_seconds(context: Context, systems: list[str]) -> dict[str, str]:
    """Training seconds of each align system, from its done marker (systems that train nothing have none)."""
    markers = {system: read_marker(system_dir(context, system) / MARKER) for system in systems}
    return {system: f"{marker['seconds']:.0f}" for system, marker in markers.items() if marker is not None}


def _asr_results(context: Context, outcomes: list[Any]) -> str:
    rows = [ResultRow(o.unit.settings["system"], o.unit.settings["split"], o.stats, o.stats["command"])
            for o in outcomes]
    align_seconds = ("align s", _align_seconds(context, first_seen(row.system for row in rows)))
    return render_results("WER", rows, "wer", align_seconds) + "\n" + render_results("CER", rows, "cer")


def _mismatch(context: Context) -> str | None:
    """The calibrate stage's reports, those that exist: simulated against real posteriors, and the text branch
    against speech in the encoder's hidden space."""
    parts = []
    path = calibration_dir(context) / "report.json"
    if path.is_file():
        plot = MISMATCH_PLOT if (context.exp_dir / MISMATCH_PLOT).is_file() else None
        report = read_json(path)
        parts.append(render_mismatch(report, plot, report.get("command", "")))
    unified = text_branch_dir(context) / "report.json"
    if unified.is_file():
        parts.append(render_unified_mismatch(read_json(unified)))
    return "\n".join(parts) or None


def _score_asr(context: Context, decode: DecodeConfig) -> tuple[list[Any], list[list[str]], int]:
    """Scores of every system x split decoded so far; those of decode.systems not decoded yet are counted, not
    guessed. Other align and distill systems (decoded with ``--set decode.systems=...``) are scored too."""
    normalizer = text_normalizer(context)
    systems = [*decode.systems, *(name for name in speech_llm_names(context) if name not in decode.systems)]
    pairs = [(system, split) for system in systems for split in _transcribed(context, decode, system)]
    decoded = [(system, split) for system, split in pairs
               if finished(decode_dir(context, system, split))]
    units = [Unit(f"score/{system}/{split}", score_dir(context, system, split),
                  {"system": system, "split": split, "normalize": normalizer.model_dump(mode="json")},
                  [decode_dir(context, system, split) / "hyps.jsonl"],
                  lambda s=system, p=split: _score(context, normalizer, s, p))
             for system, split in decoded]
    outcomes = run_units(context, units)
    rows = [[f"{o.unit.settings['system']} / {o.unit.settings['split']}", f"WER {100 * o.stats['wer']:.2f}",
             f"CER {100 * o.stats['cer']:.2f}", status(o)] for o in outcomes]
    expected = sum(len(_transcribed(context, decode, system)) for system in decode.systems)
    return outcomes, rows, expected - sum(system in decode.systems for system, _ in decoded)


def _transcribed(context: Context, decode: DecodeConfig, system: str) -> list[str]:
    """The transcription splits ``system`` decodes (a cascade decodes none)."""
    return [split for split, task in decoded_splits(context, decode, system) if task is None]


def _gap_rows(context: Context, outcomes: list[Any]) -> list[GapRow]:
    """The measured gap of every system the distill stage measures, with the WERs decoded so far."""
    distill = context.config.distill
    if distill is None:
        return []
    wer: dict[str, dict[str, float]] = {}
    for o in outcomes:
        wer.setdefault(o.unit.settings["system"], {})[o.unit.settings["split"]] = o.stats["wer"]
    rows: list[GapRow] = []
    for name in measured_systems(distill):
        measured = read_marker(gap_dir(context, name) / MARKER)
        if measured is None:
            continue
        how = "curriculum-finetune" if cell_of(context, name) else "align"
        trained = read_marker(system_dir(context, name) / MARKER) if name in distill.systems else None
        if trained is not None:
            chosen = trained["stats"].get("selection")
            how = f"{trained['stats']['init']} + {trained['stats']['input']}" + (
                f", {chosen['selection']} {chosen['spoken']} utt" if chosen else "")
        stats = measured["stats"]
        rows.append(GapRow(name, how, stats["F"], stats["M"], stats["speech_acc"], stats["text_acc"],
                           wer.get(name, {}), stats.get("command", ""), stats.get("qa_speech_acc"),
                           stats.get("qa_text_acc")))
    return rows


def _score_slu(context: Context, config: CurriculumConfig) -> tuple[list[SLURow], list[list[str]], int]:
    """Scores of every cell that has been run; cells not run yet are counted, not guessed."""
    results, rows, missing = [], [], 0
    for cell in cells(config):
        record = read_cell(context, cell)
        if record is None:
            missing += 1
            continue
        folder = context.exp_dir / record["eval_dir"]
        scores = {kind: score_slu((r["ref"], r["hyp"]) for r in read_jsonl(folder / f"{kind}.jsonl"))
                  for kind in ("speech", "text")}
        cascades = {name: score_slu((r["ref"], r["hyp"]) for r in read_jsonl(folder / cascade_file(name)))
                    for name in record["evaluation"].get("cascades", [])}
        write_json(context.exp_dir / "score" / "slu" / cell.track / cell.scheme / f"b{cell.budget:g}.json",
                   {kind: score.as_dict() for kind, score in scores.items()}
                   | {"cascades": {name: score.as_dict() for name, score in cascades.items()}, "cell": record})
        results.append(SLURow(cell.track, cell.scheme, cell.budget, record["speech_utterances"], scores["speech"],
                              scores["text"], record["evaluation"]["command"], cascades))
        rows.append([cell.name, f"SLU-F1 {100 * scores['speech'].slu_f1:.1f}",
                     f"text {100 * scores['text'].slu_f1:.1f}", f"invalid {scores['speech'].invalid_json}"])
    return results, rows, missing


def run(context: Context) -> StageResult:
    decode: DecodeConfig | None = context.config.decode
    curriculum: CurriculumConfig | None = context.config.curriculum_finetune
    if decode is None and curriculum is None:
        raise SpeechLLMError(f"recipe {context.config.name!r} has neither a decode nor a curriculum_finetune section")
    header = (f"# Results: {context.config.name}\n\nMade by `{context.command}`; outputs by the commands "
              "listed under each table. Error rates and scores in %; ASR after the recipe's text normalisation.\n\n")
    sections, rows, parts = [], [], []
    outcomes, slu = [], []
    if decode is not None:
        outcomes, asr_rows, undecoded = _score_asr(context, decode)
    if outcomes:
        sections.append(_asr_results(context, outcomes))
        gap = _gap_rows(context, outcomes)
        if gap:
            plot_gap(gap, context.exp_dir / GAP_PLOT)
            sections.append(render_gap(gap, GAP_PLOT))
        mismatch = _mismatch(context)
        if mismatch is not None:
            sections.append(mismatch)
        rows += asr_rows
        parts.append(f"{len(outcomes)} system x split scores"
                     + (f" ({undecoded} not decoded yet)" if undecoded else ""))
    if decode is not None and decode.tasks:
        answered, task_rows = _score_tasks(context, decode)
        if answered:
            sections.append(_task_results(decode, answered))
            rows += task_rows
            parts.append(f"{len(answered)} system x task scores")
    if curriculum is not None:
        slu, slu_rows, missing = _score_slu(context, curriculum)
        rows += slu_rows
        if slu:
            plot_slu(slu, context.exp_dir / SLU_PLOT)
            sections.append(render_slu(slu, SLU_PLOT))
        parts.append(f"{len(slu)} SLU runs" + (f" ({missing} cells not run yet)" if missing else ""))
    if not outcomes and not slu:
        raise SpeechLLMError(f"score: nothing decoded yet in {context.exp_dir / 'decode'} and no curriculum-finetune "
                             "cell evaluated (run decode or curriculum-finetune first)")
    write_text(context.exp_dir / "RESULTS.md", header + "\n".join(sections))
    summary = f"score: {', '.join(parts)} -> {context.exp_dir / 'RESULTS.md'}"
    return StageResult(summary, ["output", "score", "", "status"], rows)
