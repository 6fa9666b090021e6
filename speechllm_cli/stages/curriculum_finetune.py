"""``curriculum-finetune``: task fine-tuning under a speech budget, for any schedule of input kinds.

A run is a cell of a sweep: a track (which text, which speech, which test set), a scheme (a preset or a
schedule from the config) and a speech budget. Each phase of the cell's schedule is a unit of its own,
stored under a key made from everything that decides it (the phases before it included), so phases that
several cells share (the text phase of ``curriculum`` at every budget, ``text-only`` at every budget)
are trained once. After its last phase a cell's model is decoded on the track's test set twice, with
the speech and with the transcript as input: the two sides of the text-speech gap. ``score`` turns
those outputs into the SLU table and plot.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.names import Name
from speechllm_cli.common.io import write_json, write_jsonl
from speechllm_cli.core.llm import LLMConfig
from speechllm_cli.core.projector import ProjectorConfig
from speechllm_cli.core.speech_llm import GenerationConfig
from speechllm_cli.core.train_config import TrainConfig
from speechllm_cli.data.budget import budget_count, ranked, speech_subset
from speechllm_cli.stages.inputs import encoder_dir, load_text_set, load_trained_encoder, text_set_path
from speechllm_cli.stages.runner import Context, StageResult, Unit, input_digests, run_units, settings_key, status
from speechllm_cli.stages.schedules import PRESETS, PhaseConfig
from speechllm_cli.stages.speech_llm_io import system_dir

if TYPE_CHECKING:
    from speechllm_cli.core.encoders import CTCEncoder
    from speechllm_cli.core.feeds import Example
    from speechllm_cli.core.speech_llm import SpeechLLM


class TrackConfig(StrictModel):
    """Names are text sets (``prepare_text.sets``); ``speech`` and ``test`` must be made from splits."""

    text: Name
    """Transcripts and SLU frames for the text and cps inputs."""
    speech: Name
    """The utterances whose speech the budget draws from (another language's, in a cross-lingual track)."""
    target_speech: NonNegativeInt = 0
    """Utterances of ``text``'s own split whose speech is added at every budget (a few target-language
    recordings in a cross-lingual track)."""
    test: Name


class CurriculumConfig(StrictModel):
    init: Name | None = "tasu"
    """The align system whose projector (and LoRA) every run starts from; None starts from scratch."""
    llm: LLMConfig | None = None
    """None: align.llm (required when init is set, since the init system's LoRA must fit it)."""
    projector: ProjectorConfig | None = None
    """None: align.projector."""
    instruction: str = "Give the scenario, action and entities of the command as JSON."
    tracks: dict[Name, TrackConfig]
    schemes: list[Name] = list(PRESETS)
    """Preset names or names under ``schedules``."""
    schedules: dict[Name, list[PhaseConfig]] = {}
    budgets: list[float] = [0, 5, 25, 100]
    """Percent of the ``speech`` set's utterances whose speech may be used."""
    epochs: PositiveFloat = 1.0
    """The presets' epoch unit."""
    lr: PositiveFloat = 5e-4
    """The presets' peak learning rate (later phases of a preset use half)."""
    warmup_ratio: float = 0.05
    max_target_tokens: PositiveInt = 96
    """Examples with longer targets are left out (counted)."""
    train: TrainConfig = TrainConfig(batch_size=8, checkpoint_every=25, log_every=5)
    """Batching, seed, checkpoints; steps, lr and warmup come from each phase."""
    generation: GenerationConfig = GenerationConfig(max_new_tokens=96, length_ratio=8.0)
    decode_batch_size: PositiveInt = 16

    @model_validator(mode="after")
    def _known(self) -> CurriculumConfig:
        unknown = [s for s in self.schemes if s not in PRESETS and s not in self.schedules]
        if unknown:
            raise ValueError(f"schemes: {unknown[0]!r} is neither a preset ({', '.join(PRESETS)}) nor in schedules")
        for budget in self.budgets:
            budget_count(1, budget)
        if self.init is not None and (self.llm is not None or self.projector is not None):
            raise ValueError("llm and projector come with the init align system; leave them out or set init: null")
        return self


@dataclass(frozen=True)
class ModelSpec:
    """What builds the speech LLM of every cell (duck-types what ``build_speech_llm`` reads)."""

    llm: LLMConfig
    projector: ProjectorConfig
    instruction: str


@dataclass(frozen=True)
class Cell:
    track: str
    scheme: str
    budget: float

    @property
    def name(self) -> str:
        return f"{self.track}/{self.scheme}/b{self.budget:g}"


def curriculum_dir(context: Context) -> Path:
    return context.exp_dir / "curriculum"


def cell_record_path(context: Context, cell: Cell) -> Path:
    return curriculum_dir(context) / cell.track / cell.scheme / f"b{cell.budget:g}" / "cell.json"


def cells(config: CurriculumConfig) -> list[Cell]:
    """The sweep: every track x scheme x budget (the CLI narrows these lists to run one cell at a time)."""
    return [Cell(t, s, b) for t in config.tracks for s in config.schemes for b in config.budgets]


def _model_spec(context: Context, config: CurriculumConfig) -> ModelSpec:
    align = context.config.align
    if config.init is not None and (align is None or config.init not in align.systems):
        raise SpeechLLMError(f"curriculum_finetune.init: {config.init!r} is not an align system of this recipe")
    llm = config.llm or (align.llm if align is not None else None)
    projector = config.projector or (align.projector if align is not None else ProjectorConfig())
    if llm is None:
        raise SpeechLLMError("curriculum_finetune.llm: not set and the recipe has no align section to take it from")
    return ModelSpec(llm, projector, config.instruction)


def _split_of(context: Context, text_set: str, key: str) -> str:
    prepare = context.section("prepare_text")
    source = prepare.sets.get(text_set)
    if source is None:
        raise SpeechLLMError(f"{key}: {text_set!r} is not a text set in prepare_text.sets")
    if source.split is None:
        raise SpeechLLMError(f"{key}: text set {text_set!r} is not made from a split, so it has no speech")
    return source.split


class Pools:
    """The examples a track can draw on, built once and shared by its cells."""

    def __init__(self, context: Context, config: CurriculumConfig, track: str, encoder: CTCEncoder,
                 tokenizer: Any) -> None:
        from speechllm_cli.core.feeds import Example
        from speechllm_cli.core.llm import encode_text, target_ids
        from speechllm_cli.stages.posterior_cache import split_posteriors

        spec = config.tracks[track]
        key = f"curriculum_finetune.tracks.{track}"
        lsd = context.section("align").lsd
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
                    if (units := encoder.text_to_ids(row["text"]))]
        speech_rows, speech_targets = load(spec.speech)
        posteriors = split_posteriors(context, encoder, _split_of(context, spec.speech, f"{key}.speech"), lsd)
        self.speech_pool = {row["id"]: Example("speech", posteriors[row["id"]]["lsd"], speech_targets[row["id"]])
                            for row in speech_rows if row["id"] in posteriors and posteriors[row["id"]]["lsd"].shape[0]}
        self.without_speech = len(speech_rows) - len(self.speech_pool)
        """Utterances of the speech set with no posteriors or an empty LSD sequence: counted, not sampled."""
        self.target_speech: list[Example] = []
        if spec.target_speech:
            own = split_posteriors(context, encoder, _split_of(context, spec.text, f"{key}.text"), lsd)
            chosen = [i for i in ranked(list(targets), self.seed) if i in own][:spec.target_speech]
            self.target_speech = [Example("speech", own[i]["lsd"], targets[i]) for i in chosen]

    def speech(self, budget: float) -> tuple[list[Example], list[str]]:
        """Speech examples under ``budget`` (plus the target-language ones) and the ids the budget kept."""
        kept = speech_subset(list(self.speech_pool), budget, self.seed)
        return [self.speech_pool[i] for i in kept] + self.target_speech, kept


def _draw(pool: list[Example], copies: float, seed: int) -> list[Example]:
    """``copies`` x the pool: whole repeats, then a reproducible fraction of it."""
    whole, fraction = int(copies), copies - int(copies)
    order = ranked([str(i) for i in range(len(pool))], seed)
    part = [pool[int(i)] for i in order[:budget_count(len(pool), 100 * fraction)]]
    return pool * whole + part


def _set_trainable(model: SpeechLLM, parts: list[str]) -> None:
    for name, parameter in model.named_parameters():
        if name.startswith("projector."):
            parameter.requires_grad_("projector" in parts)
        elif "lora_" in name:
            parameter.requires_grad_("lora" in parts)


@dataclass(frozen=True)
class PhasePlan:
    phase: PhaseConfig
    key: str
    folder: Path
    previous: Path | None
    """Where the starting weights come from: the previous phase's folder or the init system's."""
    examples: list[Example]
    """The phase's examples for one epoch, drawn once from the pools by its mixture."""

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(e.kind for e in self.examples))


def _plan(context: Context, config: CurriculumConfig, spec: ModelSpec, cell: Cell,
          by_kind: dict[str, list[Example]], speech_ids: list[str]) -> list[PhasePlan]:
    schedule = config.schedules.get(cell.scheme) or PRESETS[cell.scheme](config.epochs, config.lr)
    available = {kind: len(pool) for kind, pool in by_kind.items()}
    track = config.tracks[cell.track]
    inputs = input_digests(context.exp_dir, (text_set_path(context, track.text), text_set_path(context, track.speech),
                                             encoder_dir(context)))
    shared = {"inputs": inputs, "warmup_ratio": config.warmup_ratio, "max_target_tokens": config.max_target_tokens,
              "model": {"llm": spec.llm.model_dump(mode="json"), "projector": spec.projector.model_dump(mode="json"),
                        "instruction": spec.instruction},
              "train": config.train.model_dump(mode="json"),
              "cps": context.section("align").cps.model_dump(mode="json")}
    previous = system_dir(context, config.init) if config.init is not None else None
    chain = "scratch"
    if previous is not None:
        weights = input_digests(context.exp_dir, (previous / "projector", previous / "lora"))
        chain = settings_key({"init": config.init, "weights": weights})
    plans = []
    for index, phase in enumerate(schedule):
        effective = phase.effective(available)
        if effective is None:
            continue
        if "lora" in effective.train and spec.llm.lora is None:
            raise SpeechLLMError(f"curriculum_finetune: scheme {cell.scheme!r} phase {index + 1} trains lora, "
                                 "but the LLM has no lora settings (align.llm.lora)")
        pools_used = {kind: (speech_ids, track.speech, track.target_speech) if kind == "speech" else track.text
                      for kind in effective.inputs}
        settings = {"previous": chain, "phase": effective.model_dump(mode="json"), "pools": pools_used, **shared}
        chain = settings_key(settings)
        folder = curriculum_dir(context) / "phases" / chain[:16]
        examples = [e for kind, weight in effective.inputs.items()
                    for e in _draw(by_kind[kind], weight, config.train.seed)]
        plans.append(PhasePlan(effective, chain, folder, previous, examples))
        previous = folder
    if not plans:
        raise SpeechLLMError(f"curriculum-finetune {cell.name}: no phase of the schedule has examples to train on")
    return plans


class Runner:
    """Trains and evaluates cells; loads the encoder, LLM tokenizer and per-track pools once."""

    def __init__(self, context: Context, config: CurriculumConfig) -> None:
        self.context, self.config = context, config
        self.spec = _model_spec(context, config)
        self._encoder: CTCEncoder | None = None
        self._pools: dict[str, Pools] = {}

    @property
    def encoder(self) -> CTCEncoder:
        if self._encoder is None:
            self._encoder = load_trained_encoder(self.context)
        return self._encoder

    def _model(self, start: Path | None) -> tuple[SpeechLLM, Any]:
        from speechllm_cli.stages.speech_llm_io import build_speech_llm, load_weights

        model, tokenizer = build_speech_llm(self.context, self.spec, self.encoder)
        if start is not None:
            load_weights(model, start, self.spec.llm.lora is not None)
        return model, tokenizer

    def pools(self, track: str) -> Pools:
        if track not in self._pools:
            from speechllm_cli.core.llm import load_tokenizer
            from speechllm_cli.stages.speech_llm_io import llm_cache_dir

            tokenizer = load_tokenizer(self.spec.llm, llm_cache_dir())
            self._pools[track] = Pools(self.context, self.config, track, self.encoder, tokenizer)
        return self._pools[track]

    def train_phase(self, plan: PhasePlan) -> dict[str, Any]:
        from speechllm_cli.core import feeds
        from speechllm_cli.core.training import TrainJob, seed_everything, train
        from speechllm_cli.stages.speech_llm_io import save_trained

        seed_everything(self.config.train.seed)
        model, _ = self._model(plan.previous)
        _set_trainable(model, plan.phase.train)
        examples = plan.examples
        steps = max(1, math.ceil(plan.phase.epochs * len(examples) / self.config.train.batch_size))
        train_config = self.config.train.model_copy(update={
            "steps": steps, "lr": plan.phase.lr, "warmup_steps": max(1, round(self.config.warmup_ratio * steps))})
        simulate = feeds.tasu_cps(self.encoder.vocab_size, self.context.section("align").cps)
        job = TrainJob(model, examples, [len(e) for e in examples], feeds.collate_fn(simulate), feeds.loss, plan.folder)
        report = train(job, train_config, self.context.track)
        save_trained(model, plan.folder, self.encoder.vocab_size, self.spec)
        return {"examples": plan.counts, "steps": steps, "resumed_from": report.resumed_from,
                "first_loss": report.first_loss, "last_loss": report.last_loss, "seconds": round(report.seconds, 1)}

    def evaluate(self, cell: Cell, plan: PhasePlan, out: Path) -> dict[str, Any]:
        """Hypotheses of the cell's model on the test set with speech and with transcripts as input."""
        from speechllm_cli.core.feeds import Example, generate_texts
        from speechllm_cli.core.llm import encode_text
        from speechllm_cli.stages.posterior_cache import split_posteriors

        test = self.config.tracks[cell.track].test
        split = _split_of(self.context, test, f"curriculum_finetune.tracks.{cell.track}.test")
        rows = load_text_set(self.context, test)
        posteriors = split_posteriors(self.context, self.encoder, split, self.context.section("align").lsd)
        model, tokenizer = self._model(plan.folder)
        model.eval()
        stats: dict[str, Any] = {}
        for kind in ("speech", "text"):
            if kind == "speech":
                usable = [r for r in rows if r["id"] in posteriors and posteriors[r["id"]]["lsd"].shape[0]]
                examples = [Example("speech", posteriors[r["id"]]["lsd"], []) for r in usable]
            else:
                usable = rows
                examples = [Example("text", encode_text(tokenizer, r["text"]), []) for r in usable]
            hyps = generate_texts(model, tokenizer, examples, self.encoder.vocab_size, self.config.decode_batch_size,
                                  self.config.generation, self.context.track, f"{cell.name}: {test} ({kind} input)")
            write_jsonl(out / f"{kind}.jsonl", ({"id": r["id"], "text": r["text"], "ref": r["target"], "hyp": h}
                                                for r, h in zip(usable, hyps, strict=True)))
            stats[kind] = {"utterances": len(usable), "without_speech": len(rows) - len(usable)}
        return {**stats, "test": test, "command": self.context.command}

    def run_cell(self, cell: Cell) -> dict[str, Any]:
        pools = self.pools(cell.track)
        speech, kept = pools.speech(cell.budget)
        by_kind = {"text": pools.text, "cps": pools.cps, "speech": speech}
        plans = _plan(self.context, self.config, self.spec, cell, by_kind, kept)
        track = self.config.tracks[cell.track]
        units = [Unit(f"{cell.name} phase {i + 1}", p.folder, {"key": p.key}, [],
                      lambda p=p: self.train_phase(p)) for i, p in enumerate(plans)]
        final = plans[-1]
        eval_dir = final.folder / "eval" / track.test
        generation = self.config.generation.model_dump(mode="json")
        units.append(Unit(f"{cell.name} eval", eval_dir,
                          {"key": final.key, "test": track.test, "generation": generation},
                          [text_set_path(self.context, track.test)], lambda: self.evaluate(cell, final, eval_dir)))
        outcomes = run_units(self.context, units)
        uses_speech = any("speech" in p.phase.inputs for p in plans)
        record = {"cell": cell.name, "track": cell.track, "scheme": cell.scheme, "budget": cell.budget,
                  "speech_utterances": len(speech) if uses_speech else 0, "budget_utterances": len(kept),
                  "budget_pool": len(pools.speech_pool), "target_speech": len(pools.target_speech),
                  "budget_ids": kept, "left_out": pools.left_out, "without_speech": pools.without_speech,
                  "eval_dir": str(eval_dir.relative_to(self.context.exp_dir)),
                  "phases": [{"key": p.key[:16], "inputs": p.phase.inputs, "train": p.phase.train,
                              "epochs": p.phase.epochs, "lr": p.phase.lr, **o.stats, "status": status(o)}
                             for p, o in zip(plans, outcomes, strict=False)],
                  "evaluation": {**outcomes[-1].stats, "status": status(outcomes[-1])}}
        write_json(cell_record_path(self.context, cell), record)
        return record


def read_cell(context: Context, cell: Cell) -> dict[str, Any] | None:
    """A cell's record, or None when the cell has not been run."""
    path = cell_record_path(context, cell)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run(context: Context) -> StageResult:
    config: CurriculumConfig = context.section("curriculum_finetune")
    runner = Runner(context, config)
    rows = []
    chosen = cells(config)
    for cell in chosen:
        record = runner.run_cell(cell)
        phases = " + ".join(",".join(p["inputs"]) + f" ({p['status']})" for p in record["phases"])
        rows.append([cell.name, str(record["speech_utterances"]), phases, record["evaluation"]["status"]])
    summary = f"curriculum-finetune: {len(chosen)} cells -> {curriculum_dir(context)}"
    return StageResult(summary, ["cell", "speech utts", "phases (inputs)", "evaluation"], rows)
