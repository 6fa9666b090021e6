"""The examples a track draws on: its text (as text and as simulated posteriors) and its speech under a budget."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.data.budget import budget_count, ranked, speech_subset
from speechllm_cli.stages.curriculum.config import CurriculumConfig
from speechllm_cli.stages.inputs import load_text_set
from speechllm_cli.stages.runner import Context

if TYPE_CHECKING:
    from speechllm_cli.core.feeds import Example
    from speechllm_cli.stages.front_end import SpeechFrontEnd


def split_of(context: Context, text_set: str, key: str) -> str:
    prepare = context.section("prepare_text")
    source = prepare.sets.get(text_set)
    if source is None:
        raise SpeechLLMError(f"{key}: {text_set!r} is not a text set in prepare_text.sets")
    if source.split is None:
        raise SpeechLLMError(f"{key}: text set {text_set!r} is not made from a split, so it has no speech")
    return source.split


class Pools:
    """The examples a track can draw on, built once and shared by its cells."""

    def __init__(self, context: Context, config: CurriculumConfig, track: str, front: SpeechFrontEnd,
                 tokenizer: Any) -> None:
        from speechllm_cli.core.feeds import Example
        from speechllm_cli.core.llm import encode_text, target_ids

        spec = config.tracks[track]
        key = f"curriculum_finetune.tracks.{track}"
        self.seed = config.train.seed
        self.left_out = 0
        loaded: dict[str, tuple[list[dict[str, Any]], dict[str, list[int]]]] = {}

        def load(name: str) -> tuple[list[dict[str, Any]], dict[str, list[int]]]:
            """Rows of a text set and their target ids, over-long targets left out (counted once per set)."""
            if name not in loaded:
                rows = load_text_set(context, name)
                targets = {row["id"]: target_ids(tokenizer, row["target"]) for row in rows}
                kept = {i: t for i, t in targets.items() if len(t) <= config.max_target_tokens}
                self.left_out += len(targets) - len(kept)
                loaded[name] = ([row for row in rows if row["id"] in kept], kept)
            return loaded[name]

        rows, targets = load(spec.text)
        self.text = [Example("text", encode_text(tokenizer, row["text"]), targets[row["id"]]) for row in rows]
        self.cps = [Example("cps", units, targets[row["id"]]) for row in rows
                    if (units := front.encoder.row_units(row))]
        speech_rows, speech_targets = load(spec.speech)
        posteriors = front.split(split_of(context, spec.speech, f"{key}.speech"))
        stored = {row["id"]: posteriors.stored(row["id"]) for row in speech_rows if row["id"] in posteriors}
        self.speech_pool = {uid: Example("speech", frames, speech_targets[uid]) for uid, frames in stored.items()
                            if frames.shape[0]}
        self.without_speech = len(speech_rows) - len(self.speech_pool)
        """Utterances of the speech set with no posteriors or an empty LSD sequence: counted, not sampled."""
        self.target_speech: list[Example] = []
        if spec.target_speech:
            own = front.split(split_of(context, spec.text, f"{key}.text"))
            chosen = [i for i in ranked(list(targets), self.seed) if i in own][:spec.target_speech]
            self.target_speech = [Example("speech", own.stored(i), targets[i]) for i in chosen]

    def speech(self, budget: float) -> tuple[list[Example], list[str]]:
        """Speech examples under ``budget`` (plus the target-language ones) and the ids the budget kept."""
        kept = speech_subset(list(self.speech_pool), budget, self.seed)
        return [self.speech_pool[i] for i in kept] + self.target_speech, kept


def draw(pool: list[Example], copies: float, seed: int) -> list[Example]:
    """``copies`` x the pool: whole repeats, then a reproducible fraction of it."""
    whole, fraction = int(copies), copies - int(copies)
    order = ranked([str(i) for i in range(len(pool))], seed)
    part = [pool[int(i)] for i in order[:budget_count(len(pool), 100 * fraction)]]
    return pool * whole + part
