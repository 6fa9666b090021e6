"""``decode``: transcribe test splits (or a user's audio files) with each system.

Every system (``ctc``, an align system, a peer; see :mod:`speechllm_cli.stages.systems`) decodes a split
and a user's files through the same front end and the same interface, so a file decodes as it would in a
prepared split.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import PositiveInt, model_validator

from speechllm_cli.common.batching import Batching
from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import write_json, write_jsonl
from speechllm_cli.common.names import Name
from speechllm_cli.core.configs import GenerationConfig, LMSearchConfig, WhisperASRConfig
from speechllm_cli.data.audio_source import SAMPLE_RATE, Waves
from speechllm_cli.stages.front_end import SpeechFrontEnd
from speechllm_cli.stages.inputs import cuts_path, encoder_dir, load_cuts, load_text_set, text_set_path
from speechllm_cli.stages.runner import Context, StageResult, Unit, run_units, status
from speechllm_cli.stages.speech_llm_io import require_trained, speech_llm_names, system_dir, system_model
from speechllm_cli.stages.systems import (
    CTC,
    INSTRUCTED,
    REFERENCE,
    build_system,
    file_utterances,
    reader_llm,
    split_utterances,
    system_kind,
    transcribe_shared,
)

if TYPE_CHECKING:
    from speechllm_cli.stages.systems import System, Utterances


class CascadeConfig(StrictModel):
    transcripts: Name
    """Whose transcripts the original LLM reads: ``reference`` (the split's own, the text ceiling), ``ctc``,
    a search or a peer."""
    llm: str | None = None
    """The LLM that reads them, as ``model.llm.model`` names one (an alias such as
    ``qwen2.5-coder-0.5b-instruct``, a folder, a GGUF file or a hub id); default: the recipe's LLM. A stronger
    reader gives the ceiling and cascades of an LLM the speech LLMs are not (yet) built on."""


class TaskConfig(StrictModel):
    """A split whose utterances are asked something other than their transcript."""

    instruction: str
    """What every system that follows instructions (speech LLMs, cascades) is asked about each utterance."""
    text_set: Name
    """A text set of the split whose ``target`` is each utterance's answer; its task (``qa``) decides the
    metric."""


class DecodeConfig(StrictModel):
    systems: list[Name] = [CTC]
    """``ctc``, names of align systems, of searches, of cascades and of peers."""
    cascades: dict[Name, CascadeConfig] = {}
    """Another system's transcript read by the original LLM (a cascade), as systems of their own, by name. A
    cascade decodes the task splits only: its transcripts are scored as its transcriber's."""
    tasks: dict[Name, TaskConfig] = {}
    """Splits asked a task (spoken questions), decoded by the systems that follow instructions, by split."""
    searches: dict[Name, LMSearchConfig] = {}
    """The encoder's output searched with a word n-gram LM of text sets, as systems of their own, by name."""
    peers: dict[Name, WhisperASRConfig] = {}
    """Off-the-shelf Whisper models decoded as systems of their own, by system name."""
    splits: list[Name]
    batch_size: PositiveInt = 16
    max_positions: PositiveInt | None = None
    """Speech LLMs and cascades: a batch also holds at most this many padded input positions (items x the
    longest input), so long utterances decode in smaller batches; unset: ``batch_size`` items."""
    generation: GenerationConfig = GenerationConfig()

    @property
    def batching(self) -> Batching:
        return Batching(self.batch_size, self.max_positions)

    @model_validator(mode="after")
    def _not_empty(self) -> DecodeConfig:
        if not self.systems or not self.splits:
            raise ValueError("systems and splits must not be empty")
        return self

    @model_validator(mode="after")
    def _names_are_distinct(self) -> DecodeConfig:
        groups = {"searches": set(self.searches), "cascades": set(self.cascades), "peers": set(self.peers)}
        for key, names in groups.items():
            clash = names & ({CTC, REFERENCE} | set().union(*(v for k, v in groups.items() if k != key)))
            if clash:
                raise ValueError(f"{key}: {sorted(clash)[0]!r} names another system")
        for name, cascade in self.cascades.items():
            if cascade.transcripts in self.cascades:
                raise ValueError(f"cascades.{name}.transcripts: {cascade.transcripts!r} is a cascade itself")
        overlap = set(self.tasks) & set(self.splits)
        if overlap:
            raise ValueError(f"tasks: split {sorted(overlap)[0]!r} is also a transcription split")
        return self


def decode_dir(context: Context, system: str, split: str) -> Path:
    return context.exp_dir / "decode" / system / split


def _check_systems(context: Context, config: DecodeConfig, used: list[str]) -> None:
    """Every configured name must be known, but only the systems this command uses must be trained: asking one
    system about a file does not wait for the others."""
    trained = speech_llm_names(context)
    known = {CTC, *trained, *config.peers, *config.searches}
    unknown = [s for s in config.systems if s not in known and s not in config.cascades]
    if unknown:
        raise SpeechLLMError(f"decode.systems: {unknown[0]!r} is neither 'ctc' nor an align or distill system "
                             "nor a search, cascade or peer")
    for name in used:
        if name in trained:
            require_trained(context, name)
    for name, cascade in config.cascades.items():
        if cascade.transcripts != REFERENCE and cascade.transcripts not in known:
            raise SpeechLLMError(f"decode.cascades.{name}.transcripts: {cascade.transcripts!r} is not a system of "
                                 f"recipe {context.config.name!r} (nor {REFERENCE!r})")


def _timed(system: System, utterances: Utterances, description: str,
           instruction: str | None) -> tuple[list[str], float, float]:
    """Hypotheses, the front end's seconds (for systems that read its output) and the system's own seconds.

    The front end runs (or its cache is read) before the work is shared, so that on several processes the
    main one writes the cache and the others read it."""
    front_seconds = sum(e.encode_s for e in utterances.encoded()) if system.reads_front_end else 0.0
    started = time.time()
    hyps = transcribe_shared(system, utterances, description, instruction)
    return hyps, front_seconds, time.time() - started


def _references(context: Context, config: DecodeConfig, split: str, ids: list[str], cuts: Any) -> list[str]:
    """Transcripts, or for a task split the answers of its text set (every utterance must have one)."""
    task = config.tasks.get(split)
    if task is None:
        return [cut.supervisions[0].text or "" for cut in cuts]
    answers = {row["id"]: row["target"] for row in load_text_set(context, task.text_set)}
    missing = [i for i in ids if i not in answers]
    if missing:
        raise SpeechLLMError(f"{text_set_path(context, task.text_set)}: no answer for utterance {missing[0]!r} of "
                             f"split {split!r} ({len(missing)} missing)")
    return [answers[i] for i in ids]


def _decode(context: Context, config: DecodeConfig, front: SpeechFrontEnd, name: str, split: str) -> dict[str, Any]:
    cuts = load_cuts(context, split)
    ids = [cut.id for cut in cuts]
    refs = _references(context, config, split, ids, cuts)
    system = build_system(context, config, front, name)
    utterances = split_utterances(front, split)
    task = config.tasks.get(split)
    instruction = task.instruction if task is not None else None
    hyps, front_seconds, system_seconds = _timed(system, utterances, f"decoding {split} with {name}", instruction)
    seconds = front_seconds + system_seconds
    audio = sum(utterances.audio.seconds)
    out = decode_dir(context, name, split)
    write_jsonl(out / "hyps.jsonl", ({"id": i, "ref": r, "hyp": h} for i, r, h in zip(ids, refs, hyps, strict=True)))
    summary = {"num_utts": len(ids), "audio_seconds": round(audio, 2), "decode_seconds": round(seconds, 2),
               "front_end_seconds": round(front_seconds, 2), "system_seconds": round(system_seconds, 2),
               "rtf": round(seconds / max(audio, 1e-9), 4), "command": context.command,
               **({"instruction": instruction} if instruction is not None else {})}
    write_json(out / "summary.json", summary)
    return summary


def _unit_settings(context: Context, config: DecodeConfig, name: str) -> tuple[dict[str, Any], list[Path]]:
    """What decides a system's output: ``ctc`` reads the encoder only, a peer its own settings, a speech LLM the
    model it was trained as and how it generates."""
    kind = system_kind(context, config, name)
    if kind == "peer":
        return {"peer": config.peers[name].model_dump(mode="json")}, []
    if kind == "ctc":
        return {}, [encoder_dir(context)]
    if kind == "search":
        search = config.searches[name]
        return ({"search": search.model_dump(mode="json")},
                [encoder_dir(context), *(text_set_path(context, t) for t in search.text_sets)])
    if kind == "cascade":
        cascade = config.cascades[name]
        reads = ({}, []) if cascade.transcripts == REFERENCE else _unit_settings(context, config, cascade.transcripts)
        return ({"cascade": cascade.transcripts, "reads": reads[0],
                 "llm": reader_llm(context, cascade.llm).model_dump(mode="json"),
                 "instruction": context.section("align").instruction,
                 "generation": config.generation.model_dump(mode="json"), "batch_size": config.batch_size,
                 **_budget(config)},
                reads[1])
    settings = {"model": system_model(context, name).model_dump(mode="json"),
                "instruction": context.section("align").instruction,
                "generation": config.generation.model_dump(mode="json"), "batch_size": config.batch_size,
                **_budget(config)}
    trained = system_dir(context, name)
    return settings, [encoder_dir(context), trained / "projector", trained / "lora"]


def _budget(config: DecodeConfig) -> dict[str, int]:
    """In a unit's settings only when set, so that the keys of decodes made without a budget stay as they were."""
    return {"max_positions": config.max_positions} if config.max_positions is not None else {}


def decoded_splits(context: Context, config: DecodeConfig, name: str) -> list[tuple[str, TaskConfig | None]]:
    """The splits ``name`` decodes: transcription splits (not a cascade), then task splits (only the systems
    that follow instructions)."""
    kind = system_kind(context, config, name)
    transcribed = [] if kind == "cascade" else [(split, None) for split in config.splits]
    asked = list(config.tasks.items()) if kind in INSTRUCTED else []
    return [*transcribed, *asked]


def run(context: Context) -> StageResult:
    config: DecodeConfig = context.section("decode")
    _check_systems(context, config, config.systems)
    front = SpeechFrontEnd(context)
    units = []
    for name in config.systems:
        settings, inputs = _unit_settings(context, config, name)
        for split, task in decoded_splits(context, config, name):
            task_settings = {} if task is None else {"task": task.model_dump(mode="json")}
            task_inputs = [] if task is None else [text_set_path(context, task.text_set)]
            units.append(Unit(f"decode/{name}/{split}", decode_dir(context, name, split),
                              {"system": name, "split": split, **settings, **task_settings},
                              [cuts_path(context, split), *inputs, *task_inputs],
                              lambda s=name, p=split: _decode(context, config, front, s, p)))
    outcomes = run_units(context, units)
    rows = [[o.unit.name, str(o.stats["num_utts"]), f"{o.stats['rtf']:.3f}", status(o)] for o in outcomes]
    summary = f"decode: {len(outcomes)} system x split outputs -> {context.exp_dir / 'decode'}"
    return StageResult(summary, ["output", "utterances", "RTF", "status"], rows)


def file_audio(context: Context, files: list[Path]) -> Waves:
    """A user's files, each checked and read as prepare-data would (same limits, same channel rule), before any
    model loads: a bad file costs no model loading, and its error names it."""
    import torch

    from speechllm_cli.data.audio import AudioLimits, read_file

    prepare = context.config.prepare_data
    limits = prepare.audio_limits if prepare is not None else AudioLimits()
    return Waves([torch.from_numpy(read_file(path, limits, SAMPLE_RATE)) for path in files])


def transcribe_files(context: Context, files: list[Path], name: str,
                     instruction: str | None = None) -> list[tuple[Path, str]]:
    """Outputs for a user's own audio files, without preparing a split, by any system: transcripts, or with
    ``instruction`` the answers of a system that follows instructions."""
    config: DecodeConfig = context.section("decode")
    _check_systems(context, config, [name])
    if instruction is not None and system_kind(context, config, name) not in INSTRUCTED:
        raise SpeechLLMError(f"--instruction: {name} only transcribes; ask a speech LLM or a cascade")
    audio = file_audio(context, files)
    front = SpeechFrontEnd(context)
    system = build_system(context, config, front, name)
    outputs = system.transcribe(file_utterances(front, audio), "decoding files", instruction)
    return list(zip(files, outputs, strict=True))
