"""``distill``: cross-modal distillation (SALAD) from the original LLM into a trained speech LLM.

A student starts from an ``align`` system, a ``curriculum-finetune`` cell, or an earlier ``distill`` system to
continue it. It reads the
content of a text set as real speech of a split (``speech``), as speech the stage synthesizes from texts it
selects (``tts``: SALAD's stage II, active selection or the random control, ``stages.spoken_selection``), or
as posteriors simulated the way its align system was trained (``simulated``: text-only distillation, which
no paper has tried); the teacher, the same LLM with its adapters off, reads the
transcript in the same prompt. Both are scored on the same responses (``core.distill``). Plain-text items
(``text_share``) hold the LLM's text behaviour in place while LoRA trains.

After training, the stage measures the text-speech gap (``stages.gap``: forgetting F, misalignment M, speech
and text accuracy) on a held-out split (``measure``) for every distill system, the align system under it,
and any other align system named there, one unit per system.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PositiveInt, model_validator

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.names import Name, SystemName
from speechllm_cli.core.configs import DistillConfig, GenerationConfig
from speechllm_cli.core.train_config import TrainConfig
from speechllm_cli.data.selection import SelectionConfig
from speechllm_cli.data.tts import SpeakConfig
from speechllm_cli.stages.curriculum.records import cell_of
from speechllm_cli.stages.gap import MeasureConfig, gap_units
from speechllm_cli.stages.inputs import cuts_path, encoder_dir, load_text_set, load_trained_encoder, text_set_path
from speechllm_cli.stages.runner import Context, StageResult, Unit, run_units, status
from speechllm_cli.stages.speech_llm_io import (
    load_trained,
    prompt_for,
    require_lora,
    require_posteriors,
    save_trained,
    system_dir,
)
from speechllm_cli.stages.tasks import InstructionTask, check_shares, task_rows, task_targets, text_sets_read

if TYPE_CHECKING:
    from speechllm_cli.core.distill import Pair
    from speechllm_cli.core.encoders import CTCEncoder
    from speechllm_cli.core.speech_llm import Prompt, SpeechLLM


class DistillSystemConfig(StrictModel):
    init: SystemName
    """The system the student starts from (its projector and LoRA): an align system, a curriculum-finetune
    cell (``en/curriculum/b25``, run before), or a distill system listed before this one."""
    input: Literal["speech", "tts", "simulated"]
    """What the student reads: the LSD posteriors of ``split``'s speech, of speech synthesized from texts
    ``selection`` chose, or posteriors simulated from the text as the align system below ``init`` was trained
    (TASU's CPS, or the calibrated simulation)."""
    text_sets: list[Name] = []
    """The content: transcripts the teacher reads. ``speech``: exactly one, the split's own transcripts;
    ``tts``: the pool the selection draws from."""
    tasks: list[InstructionTask] = []
    """``simulated`` only: distil over several instructions (``stages.tasks``), each from its own text and with
    its own prompt on both sides, instead of one instruction over ``text_sets``; a task's ``targets`` says
    whether the responses scored are the teacher's or the dataset's (``loss.responses`` is for ``text_sets``)."""
    split: Name | None = None
    selection: SelectionConfig | None = None
    """``tts`` only: which texts, and how many, get spoken."""
    speech: SpeakConfig | None = None
    """``tts`` only: the voices that speak them (the recipe's training voices)."""
    instruction: str | None = None
    """The user turn both teacher and student are asked in (default: align's). SALAD distils the LLM's own
    behaviour: with ``loss.responses: teacher`` and a general instruction, the student learns to answer speech
    as the LLM answers text, not only to transcribe."""
    text_share: float = Field(0.0, ge=0.0, lt=1.0)
    """Share of training items that are plain text (the transcript on both sides), against forgetting; needs
    LoRA (a frozen LLM has nothing for them to train)."""
    loss: DistillConfig = DistillConfig()

    @model_validator(mode="after")
    def _inputs_given(self) -> DistillSystemConfig:
        if self.tasks:
            if self.text_sets or self.input != "simulated":
                raise ValueError("tasks replace text_sets, with simulated input only")
            check_shares(self.tasks)
        elif not self.text_sets:
            raise ValueError("text_sets is empty")
        if self.input == "speech" and (self.split is None or len(self.text_sets) != 1):
            raise ValueError("speech input needs a split and exactly one text set (its transcripts)")
        if (self.input == "tts") != (self.selection is not None and self.speech is not None):
            raise ValueError("tts input needs selection and speech, and only tts input takes them")
        return self


class DistillStageConfig(StrictModel):
    systems: dict[Name, DistillSystemConfig]
    measure: MeasureConfig | None = None
    """Where the gap is measured; without it, nothing is."""
    max_target_tokens: PositiveInt = 96
    """Longer responses are left out of training (counted)."""
    batch_size: PositiveInt = 8
    """Teacher responses and the measurements."""
    generation: GenerationConfig = GenerationConfig(max_new_tokens=64, length_ratio=4.0)
    """How the teacher answers when ``loss.responses`` is ``teacher``."""
    train: TrainConfig = TrainConfig(steps=200, batch_size=8, lr=5e-4, warmup_steps=20)


def distill_dir(context: Context, name: str) -> Path:
    return context.exp_dir / "distill" / name


@dataclass(frozen=True)
class Content:
    """The text rows a student learns from (with their ``lsd`` when it reads speech), those left out by reason,
    and how a selection chose them."""

    rows: list[dict[str, Any]]
    skipped: dict[str, int]
    selection: dict[str, Any] | None = None


@dataclass(frozen=True)
class Student:
    """What reading the content needs: the unit's settings and the model it starts from."""

    context: Context
    config: DistillStageConfig
    system: DistillSystemConfig
    encoder: CTCEncoder
    model: SpeechLLM
    tokenizer: Any
    folder: Path
    answered: dict[str, list[int]] = field(default_factory=dict)
    """The teacher's responses by row id, so that probes measured during selection are not answered again."""


def _rows(student: Student) -> list[dict[str, Any]]:
    return [row for name in student.system.text_sets for row in load_text_set(student.context, name)]


def _split_speech(student: Student) -> Content:
    from speechllm_cli.stages.front_end import split_posteriors

    assert student.system.split is not None
    posteriors = split_posteriors(student.context, student.encoder, student.system.split,
                                  student.context.config.model.lsd)
    rows, kept = _rows(student), []
    for row in rows:
        entry = posteriors.stored(row["id"]) if row["id"] in posteriors else None
        if entry is not None and entry.shape[0] > 0:
            kept.append({**row, "lsd": entry})
    missing = len(rows) - len(kept)
    return Content(kept, {"no_speech": missing} if missing else {})


def _simulated(student: Student) -> Content:
    rows = _rows(student)
    kept = [row for row in rows if student.encoder.row_units(row)]
    return Content(kept, {"no_units": len(rows) - len(kept)} if len(kept) < len(rows) else {})


def _synthesized(student: Student) -> Content:
    from speechllm_cli.core.distill import Pair
    from speechllm_cli.core.feeds import Example
    from speechllm_cli.core.llm import encode_text
    from speechllm_cli.stages.spoken_selection import spoken_selection

    def speech_pairs(rows: list[dict[str, Any]]) -> list[Pair]:
        transcripts = [encode_text(student.tokenizer, row["text"]) for row in rows]
        responses = _responses(student, rows, transcripts)
        return [Pair(Example("speech", row["lsd"], response), transcript)
                for row, response, transcript in zip(rows, responses, transcripts, strict=True)]

    system = student.system
    assert system.selection is not None and system.speech is not None
    spoken = spoken_selection(student.context, student.encoder, student.model, _rows(student), system.selection,
                              system.speech, student.folder / "tts", speech_pairs, student.config.batch_size)
    return Content(spoken.rows, spoken.skipped, spoken.stats)


CONTENT: dict[str, Callable[[Student], Content]] = {"speech": _split_speech, "tts": _synthesized,
                                                     "simulated": _simulated}
"""How each ``input`` reads its content."""


def _pairs(rows: list[dict[str, Any]], system: DistillSystemConfig, responses: list[list[int]],
           transcripts: list[list[int]], encoder: CTCEncoder, seed: int, prompt: Prompt | None = None) -> list[Pair]:
    from speechllm_cli.core.distill import Pair
    from speechllm_cli.core.feeds import Example

    pairs = []
    for row, response, transcript in zip(rows, responses, transcripts, strict=True):
        student = (Example("speech", row["lsd"], response, prompt) if system.input == "speech"
                   else Example("cps", encoder.row_units(row), response, prompt))
        pairs.append(Pair(student, transcript))
    texts = round(len(pairs) * system.text_share / (1 - system.text_share))
    drawn = random.Random(seed).sample(range(len(pairs)), min(texts, len(pairs)))
    pairs += [Pair(Example("text", transcripts[i], responses[i], prompt), transcripts[i]) for i in drawn]
    return pairs


def _responses(student: Student, rows: list[dict[str, Any]], transcripts: list[list[int]]) -> list[list[int]]:
    from speechllm_cli.core.distill import teacher_responses
    from speechllm_cli.core.llm import target_ids

    if student.system.loss.responses == "target":
        return [target_ids(student.tokenizer, row["target"]) for row in rows]
    new = [i for i, row in enumerate(rows) if row["id"] not in student.answered]
    answers = teacher_responses(student.model, [transcripts[i] for i in new], student.config.generation,
                                student.config.batch_size)
    student.answered.update({rows[i]["id"]: answer for i, answer in zip(new, answers, strict=True)})
    return [student.answered[row["id"]] for row in rows]


@dataclass(frozen=True)
class Items:
    pairs: list[Pair]
    skipped: dict[str, int]
    selection: dict[str, Any] | None = None


def _content_items(student: Student) -> Items:
    """One instruction over the content its ``input`` reads."""
    from speechllm_cli.core.llm import encode_text

    system, config = student.system, student.config
    content = CONTENT[system.input](student)
    rows, skipped = content.rows, dict(content.skipped)
    transcripts = [encode_text(student.tokenizer, row["text"]) for row in rows]
    responses = _responses(student, rows, transcripts)
    fits = [i for i, response in enumerate(responses) if len(response) <= config.max_target_tokens]
    if len(fits) < len(rows):
        skipped["too_long"] = len(rows) - len(fits)
    rows, transcripts, responses = ([seq[i] for i in fits] for seq in (rows, transcripts, responses))
    return Items(_pairs(rows, system, responses, transcripts, student.encoder, config.train.seed), skipped,
                 content.selection)


def _task_items(student: Student) -> Items:
    """Several instructions, each over simulated posteriors of its own text (``stages.tasks``)."""
    from speechllm_cli.core.llm import encode_text

    system, config, tokenizer = student.system, student.config, student.tokenizer
    parts = task_rows(student.context, system.tasks, config.train.steps * config.train.batch_size,
                      config.train.seed, lambda instruction: prompt_for(tokenizer, instruction,
                                                                        student.context.config.model))
    pairs: list[Pair] = []
    skipped: Counter[str] = Counter()
    for part in parts:
        responses = task_targets(part, student.model, tokenizer, config.generation, config.batch_size)
        kept = []
        for row, response in zip(part.rows, responses, strict=True):
            if not student.encoder.row_units(row):
                skipped["no_units"] += 1
            elif len(response) > config.max_target_tokens:
                skipped["too_long"] += 1
            else:
                kept.append((row, response))
        pairs += _pairs([row for row, _ in kept], system, [response for _, response in kept],
                        [encode_text(tokenizer, row["text"]) for row, _ in kept], student.encoder,
                        config.train.seed, part.prompt)
    return Items(pairs, dict(skipped))


def _distill_system(context: Context, config: DistillStageConfig, name: str) -> dict[str, Any]:
    from speechllm_cli.core import distill
    from speechllm_cli.core.training import TrainJob, seed_everything, train
    from speechllm_cli.stages.align import simulation

    system = config.systems[name]
    align = context.section("align")
    encoder = load_trained_encoder(context)
    seed_everything(config.train.seed)
    model, tokenizer = load_trained(context, encoder, system.init)
    if system.instruction is not None:
        model.prompt = prompt_for(tokenizer, system.instruction, context.config.model)
    folder = distill_dir(context, name)
    student = Student(context, config, system, encoder, model, tokenizer, folder)
    items = _task_items(student) if system.tasks else _content_items(student)
    if not items.pairs:
        raise SpeechLLMError(f"distill.systems.{name}: no usable training items ({items.skipped or 'no text'})")
    simulate = simulation(context, align, align.systems[align_under(context, config, name)], encoder.vocab_size)
    model.train()
    job = TrainJob(distill.Distiller(model, system.loss), items.pairs, [len(p) for p in items.pairs],
                   distill.pair_collate(simulate), distill.loss, folder, align.precision)
    report = train(job, config.train, context.track)
    save_trained(model, folder, context.config.model)
    return {"init": system.init, "input": system.input, "command": context.command, "items": len(items.pairs),
            "skipped": items.skipped,
            "steps": report.steps, "resumed_from": report.resumed_from, "first_loss": report.first_loss,
            "last_loss": report.last_loss,
            "seconds": round(report.seconds, 1),
            **({"selection": items.selection} if items.selection else {})}


def _inputs(context: Context, config: DistillStageConfig, system: DistillSystemConfig) -> list[Path]:
    paths = [text_set_path(context, name) for name in text_sets_read(system.text_sets, system.tasks)]
    paths += [encoder_dir(context), system_dir(context, system.init)]
    if system.split is not None:
        paths.append(cuts_path(context, system.split))
    return paths


def start_of(config: DistillStageConfig, name: str) -> str:
    """The system a distill system's chain starts from (an align system or a cell): its ``init``, or the start of
    the distill system it continues."""
    init = config.systems[name].init
    return start_of(config, init) if init in config.systems else init


def align_under(context: Context, config: DistillStageConfig, name: str) -> str:
    """The align system whose settings (and simulation, for text-only input) a distill system follows: its
    start, or the align system the starting cell was fine-tuned from."""
    start = start_of(config, name)
    if cell_of(context, start) is None:
        return start
    init = context.section("curriculum_finetune").init
    if init is None:
        raise SpeechLLMError(f"distill.systems.{name}.init: cell {start} was trained from scratch "
                             "(curriculum_finetune.init is null); distill needs the align system under it")
    return init


def _check(context: Context, config: DistillStageConfig) -> None:
    align = context.config.align
    known = align.systems if align is not None else {}
    earlier: set[str] = set()
    for name, system in config.systems.items():
        if (system.init not in known and system.init not in earlier
                and not _is_cell(context, f"distill.systems.{name}.init", system.init)):
            raise SpeechLLMError(f"distill.systems.{name}.init: {system.init!r} is neither an align system nor a "
                                 "distill system listed before it")
        root = align_under(context, config, name)
        require_posteriors(context, root, f"distill.systems.{name}.init", "distill")
        require_lora(context, root, f"distill.systems.{name}.init", "distill")
        earlier.add(name)
        if name in known:
            raise SpeechLLMError(f"distill.systems.{name}: the name is an align system's; decode could not tell "
                                 "them apart")
        if system.text_share > 0 and context.config.model.llm.lora is None:
            raise SpeechLLMError(f"distill.systems.{name}.text_share: plain-text items need model.llm.lora "
                                 "(a frozen LLM has nothing for them to train)")
    for measured in config.measure.systems if config.measure is not None else []:
        _is_cell(context, "distill.measure.systems", measured)


def _is_cell(context: Context, key: str, system: str) -> bool:
    """Whether ``system`` names a cell; a name of a cell the sweep does not have is an error naming ``key``."""
    try:
        return cell_of(context, system) is not None
    except SpeechLLMError as error:
        raise SpeechLLMError(f"{key}: {error}") from None


def measured_systems(config: DistillStageConfig) -> list[str]:
    """Whose gap is measured: ``measure.systems``, then each distill system after the system its chain starts
    from."""
    named = [*(config.measure.systems if config.measure else []),
             *(n for name in config.systems for n in (start_of(config, name), name))]
    return list(dict.fromkeys(named))


def _figure(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def run(context: Context) -> StageResult:
    config: DistillStageConfig = context.section("distill")
    _check(context, config)
    align = context.section("align")
    shared = {**config.model_dump(mode="json", exclude={"systems", "measure"}),
              "model": context.config.model.model_dump(mode="json"), "instruction": align.instruction,
              "calibrated": align.calibrated.model_dump(mode="json"), "precision": align.precision}
    units = [Unit(f"distill/{name}", distill_dir(context, name),
                  {**shared, "system": system.model_dump(mode="json", exclude=set() if system.tasks else {"tasks"}),
                   "init": align.systems[align_under(context, config, name)].fingerprint()},
                  _inputs(context, config, system), lambda name=name: _distill_system(context, config, name))
             for name, system in config.systems.items()]
    decode = context.config.decode
    generation = decode.generation if decode is not None else config.generation
    # built first, so that a measured system that cannot be (a cell not run) stops the stage before any work
    measured = [] if config.measure is None else gap_units(context, measured_systems(config), config.measure,
                                                           generation, config.batch_size)
    trained = run_units(context, units)
    rows = [[o.unit.name, f"{o.stats['init']} + {o.stats['input']}", str(o.stats["items"]),
             f"{o.stats['first_loss']:.3f} -> {o.stats['last_loss']:.3f}", "", "", "", "", status(o)] for o in trained]
    if measured:
        for o in run_units(context, measured):
            rows.append([o.unit.name, "", "", "", _figure(o.stats["F"]), _figure(o.stats["M"]),
                         _figure(o.stats["speech_acc"], 3), _figure(o.stats["text_acc"], 3), status(o)])
    summary = f"distill: {len(trained)} systems -> {context.exp_dir / 'distill'}"
    return StageResult(summary, ["unit", "from", "items", "loss", "F", "M", "speech acc", "text acc", "status"],
                       rows)
