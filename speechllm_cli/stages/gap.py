"""The text-speech gap of a trained speech LLM, measured on held-out speech (METHODS.md §4).

For each system (an align or distill system, or a curriculum-finetune cell) one unit measures, on the same utterances:

- forgetting F: KL(original LLM on the transcript || the system's LLM on the transcript);
- misalignment M: KL(original LLM on the transcript || the system on the speech);
- speech accuracy: word accuracy (1 - WER) of the system's greedy answer to the speech;
- text accuracy: word accuracy of the original LLM's answer to the transcript in the same prompt, the
  ceiling the speech path is measured against; gap = text accuracy - speech accuracy.

Measurement is a unit of its own, apart from training: an align system is measured without being
trained again, a changed measure set re-measures without retraining, and each system is measured once
however many distillations start from it. Answers go through ``decode``'s generation settings when the
recipe has them, so accuracies here and WERs there come from the same decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import PositiveInt

from speechllm_cli.common.batching import Batching
from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.names import Name, SystemName
from speechllm_cli.core.configs import GenerationConfig
from speechllm_cli.stages.curriculum.records import cell_of
from speechllm_cli.stages.inputs import (
    cuts_path,
    encoder_dir,
    load_text_set,
    load_trained_encoder,
    text_normalizer,
    text_set_path,
)
from speechllm_cli.stages.runner import Context, Unit
from speechllm_cli.stages.speech_llm_io import interface_of, load_trained, system_dir

if TYPE_CHECKING:
    from speechllm_cli.core.distill import Pair
    from speechllm_cli.core.encoders import CTCEncoder
    from speechllm_cli.core.speech_llm import SpeechLLM


class QuestionsConfig(StrictModel):
    """Spoken questions the original LLM answers well from text: the gap on a task other than the one trained."""

    split: Name
    text_set: Name
    """A ``qa`` text set of ``split``: the question and its answer word."""
    instruction: str = "Answer the question in one word."
    limit: PositiveInt = 100
    generation: GenerationConfig = GenerationConfig(max_new_tokens=24, length_ratio=4.0)


class MeasureConfig(StrictModel):
    """The held-out speech the gap is measured on (its dataset targets are the responses)."""

    split: Name
    text_set: Name
    limit: PositiveInt = 64
    """The first N utterances only: M needs a teacher and a student pass per utterance."""
    systems: list[SystemName] = []
    """Systems measured besides those distillation starts from (e.g. every align system and a few
    curriculum-finetune cells, ``en/curriculum/b25``, so that log M can be set against accuracy across them
    all). Every system is asked in align's instruction, whatever it was trained on."""
    questions: QuestionsConfig | None = None
    """Also ask every system spoken questions (its answers on the speech against the original LLM's on the
    text)."""


@dataclass(frozen=True)
class HeldOut:
    """The held-out utterances, read once for every measurement of a unit."""

    pairs: list[Pair]
    """Speech student, transcript teacher, dataset target as the response."""
    references: list[str]


def gap_dir(context: Context, system: str) -> Path:
    """``gap/<system>``; a cell's under ``gap/_cells``, a folder no system name can take."""
    return context.exp_dir / "gap" / ("_cells/" + system if cell_of(context, system) else system)


def _held_out(context: Context, measure: MeasureConfig, encoder: CTCEncoder, tokenizer: Any, feature: str) -> HeldOut:
    from speechllm_cli.core.distill import Pair
    from speechllm_cli.core.feeds import Example
    from speechllm_cli.core.llm import encode_text, target_ids

    rows = _spoken_rows(context, encoder, measure.split, measure.text_set, measure.limit, feature)
    pairs = [Pair(Example("speech", row["speech"], target_ids(tokenizer, row["target"])),
                  encode_text(tokenizer, row["text"])) for row in rows]
    return HeldOut(pairs, [row["target"] for row in rows])


def _accuracy(context: Context, references: list[str], hypotheses: list[str]) -> float:
    """Word accuracy after the recipe's text normalisation (as ``score`` computes WER)."""
    from speechllm_cli.data.normalize import normalize
    from speechllm_cli.metrics.asr import score_asr

    normalizer = text_normalizer(context)
    triples = [(str(i), normalize(ref, normalizer), normalize(hyp, normalizer))
               for i, (ref, hyp) in enumerate(zip(references, hypotheses, strict=True))]
    return 1 - score_asr(triples)[0].wer


def _answers(context: Context, model: SpeechLLM, tokenizer: Any, encoder: CTCEncoder, examples: list[Any],
             generation: GenerationConfig, batch_size: int, what: str) -> list[str]:
    from speechllm_cli.core.feeds import generate_texts

    return generate_texts(model, tokenizer, examples, encoder.vocab_size, Batching(batch_size), generation,
                          context.track, what)


def _spoken_rows(context: Context, encoder: CTCEncoder, split: str, text_set: str, limit: int,
                 feature: str) -> list[dict[str, Any]]:
    """The first ``limit`` rows of ``text_set`` with their speech from ``split``, as the system's interface reads
    it (``feature`` of the front end's output)."""
    from speechllm_cli.stages.front_end import split_posteriors

    posteriors = split_posteriors(context, encoder, split, context.config.model.lsd)
    rows = [{**row, "speech": getattr(posteriors[row["id"]], feature)} for row in load_text_set(context, text_set)
            if row["id"] in posteriors][:limit]
    if not rows:
        raise SpeechLLMError(f"distill.measure: no utterance of split {split!r} has a row in text set {text_set!r}")
    return rows


def _questions(context: Context, model: SpeechLLM, tokenizer: Any, encoder: CTCEncoder, questions: QuestionsConfig,
               batch_size: int, system: str) -> dict[str, Any]:
    """Answer accuracy of ``system`` on the spoken questions and of the original LLM on their text, asked with
    the questions' instruction in place of the one the system was trained with."""
    from speechllm_cli.core.distill import adapters_off
    from speechllm_cli.core.feeds import Example
    from speechllm_cli.core.llm import encode_text
    from speechllm_cli.data.normalize import normalize
    from speechllm_cli.metrics.qa import answer_accuracy
    from speechllm_cli.stages.speech_llm_io import prompt_for

    rows = _spoken_rows(context, encoder, questions.split, questions.text_set, questions.limit,
                        interface_of(context, system).feature)
    trained = model.prompt
    model.prompt = prompt_for(tokenizer, questions.instruction, context.config.model)
    try:
        speech = _answers(context, model, tokenizer, encoder, [Example("speech", row["speech"], []) for row in rows],
                          questions.generation, batch_size, f"{system}: answering the spoken questions")
        with adapters_off(model.llm):
            text = _answers(context, model, tokenizer, encoder,
                            [Example("text", encode_text(tokenizer, row["text"]), []) for row in rows],
                            questions.generation, batch_size, "original LLM: answering the questions")
    finally:
        model.prompt = trained
    normalizer = text_normalizer(context)
    answers = [normalize(row["target"], normalizer) for row in rows]
    return {"qa_speech_acc": round(answer_accuracy(answers, [normalize(r, normalizer) for r in speech]), 5),
            "qa_text_acc": round(answer_accuracy(answers, [normalize(r, normalizer) for r in text]), 5),
            "qa_questions": len(rows)}


def measure_gap(context: Context, system: str, measure: MeasureConfig, generation: GenerationConfig,
                batch_size: int) -> dict[str, Any]:
    """F, M, speech and text accuracy of ``system`` on the held-out speech."""
    from speechllm_cli.core.distill import adapters_off, forgetting, misalignment
    from speechllm_cli.core.feeds import Example

    encoder = load_trained_encoder(context)
    model, tokenizer = load_trained(context, encoder, system)
    held_out = _held_out(context, measure, encoder, tokenizer, interface_of(context, system).feature)
    transcripts = [pair.transcript for pair in held_out.pairs]
    speech = _answers(context, model, tokenizer, encoder,
                      [Example("speech", p.student.source, []) for p in held_out.pairs], generation, batch_size,
                      f"{system}: answering the speech")
    with adapters_off(model.llm):
        text = _answers(context, model, tokenizer, encoder, [Example("text", t, []) for t in transcripts],
                        generation, batch_size, "original LLM: answering the transcripts")
    return {"F": round(forgetting(model, transcripts, [p.student.target for p in held_out.pairs], batch_size), 5),
            "M": round(misalignment(model, held_out.pairs, batch_size), 5),
            "speech_acc": round(_accuracy(context, held_out.references, speech), 5),
            "text_acc": round(_accuracy(context, held_out.references, text), 5),
            "utterances": len(held_out.pairs), "command": context.command,
            **(_questions(context, model, tokenizer, encoder, measure.questions, batch_size, system)
               if measure.questions is not None else {})}


def gap_units(context: Context, systems: list[str], measure: MeasureConfig, generation: GenerationConfig,
              batch_size: int) -> list[Unit]:
    """One measurement unit per system, redone when its weights, the held-out set or the settings change."""
    settings = {"measure": measure.model_dump(mode="json", exclude={"systems"}),
                "generation": generation.model_dump(mode="json"), "model": context.config.model.model_dump(mode="json"),
                "instruction": context.section("align").instruction}
    inputs = [encoder_dir(context), cuts_path(context, measure.split), text_set_path(context, measure.text_set)]
    if measure.questions is not None:
        inputs += [cuts_path(context, measure.questions.split), text_set_path(context, measure.questions.text_set)]
    return [Unit(f"gap/{name}", gap_dir(context, name), settings, [*inputs, system_dir(context, name)],
                 lambda name=name: measure_gap(context, name, measure, generation, batch_size))
            for name in systems]
