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

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import write_json, write_jsonl
from speechllm_cli.common.names import Name
from speechllm_cli.core.configs import GenerationConfig, WhisperASRConfig
from speechllm_cli.data.audio_source import SAMPLE_RATE, Waves
from speechllm_cli.stages.front_end import SpeechFrontEnd
from speechllm_cli.stages.inputs import cuts_path, encoder_dir, load_cuts
from speechllm_cli.stages.runner import Context, StageResult, Unit, run_units, status
from speechllm_cli.stages.speech_llm_io import speech_llm_names, system_dir
from speechllm_cli.stages.systems import (
    CTC,
    build_system,
    file_utterances,
    split_utterances,
    system_kind,
    transcribe_shared,
)

if TYPE_CHECKING:
    from speechllm_cli.stages.systems import System, Utterances


class DecodeConfig(StrictModel):
    systems: list[Name] = [CTC]
    """``ctc``, names of align systems and names of peers."""
    peers: dict[Name, WhisperASRConfig] = {}
    """Off-the-shelf Whisper models decoded as systems of their own, by system name."""
    splits: list[Name]
    batch_size: PositiveInt = 16
    generation: GenerationConfig = GenerationConfig()

    @model_validator(mode="after")
    def _not_empty(self) -> DecodeConfig:
        if not self.systems or not self.splits:
            raise ValueError("systems and splits must not be empty")
        return self


def decode_dir(context: Context, system: str, split: str) -> Path:
    return context.exp_dir / "decode" / system / split


def _check_systems(context: Context, config: DecodeConfig) -> None:
    known = set(speech_llm_names(context))
    unknown = [s for s in config.systems if s != CTC and s not in known and s not in config.peers]
    if unknown:
        raise SpeechLLMError(f"decode.systems: {unknown[0]!r} is neither 'ctc' nor an align or distill system "
                             "nor a peer")


def _timed(system: System, utterances: Utterances, description: str) -> tuple[list[str], float, float]:
    """Hypotheses, the front end's seconds (for systems that read its output) and the system's own seconds.

    The front end runs (or its cache is read) before the work is shared, so that on several processes the
    main one writes the cache and the others read it."""
    front_seconds = sum(e.encode_s for e in utterances.encoded()) if system.reads_front_end else 0.0
    started = time.time()
    hyps = transcribe_shared(system, utterances, description)
    return hyps, front_seconds, time.time() - started


def _decode(context: Context, config: DecodeConfig, front: SpeechFrontEnd, name: str, split: str) -> dict[str, Any]:
    cuts = load_cuts(context, split)
    ids = [cut.id for cut in cuts]
    refs = [cut.supervisions[0].text or "" for cut in cuts]
    system = build_system(context, config, front, name)
    utterances = split_utterances(front, split)
    hyps, front_seconds, system_seconds = _timed(system, utterances, f"decoding {split} with {name}")
    seconds = front_seconds + system_seconds
    audio = sum(utterances.audio.seconds)
    out = decode_dir(context, name, split)
    write_jsonl(out / "hyps.jsonl", ({"id": i, "ref": r, "hyp": h} for i, r, h in zip(ids, refs, hyps, strict=True)))
    summary = {"num_utts": len(ids), "audio_seconds": round(audio, 2), "decode_seconds": round(seconds, 2),
               "front_end_seconds": round(front_seconds, 2), "system_seconds": round(system_seconds, 2),
               "rtf": round(seconds / max(audio, 1e-9), 4), "command": context.command}
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
    settings = {"model": context.config.model.model_dump(mode="json"),
                "instruction": context.section("align").instruction,
                "generation": config.generation.model_dump(mode="json"), "batch_size": config.batch_size}
    trained = system_dir(context, name)
    return settings, [encoder_dir(context), trained / "projector", trained / "lora"]


def run(context: Context) -> StageResult:
    config: DecodeConfig = context.section("decode")
    _check_systems(context, config)
    front = SpeechFrontEnd(context)
    units = []
    for name in config.systems:
        settings, inputs = _unit_settings(context, config, name)
        for split in config.splits:
            units.append(Unit(f"decode/{name}/{split}", decode_dir(context, name, split),
                              {"system": name, "split": split, **settings}, [cuts_path(context, split), *inputs],
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


def transcribe_files(context: Context, files: list[Path], name: str) -> list[tuple[Path, str]]:
    """Hypotheses for a user's own audio files, without preparing a split, by any system."""
    config: DecodeConfig = context.section("decode")
    system_kind(context, config, name)
    audio = file_audio(context, files)
    front = SpeechFrontEnd(context)
    system = build_system(context, config, front, name)
    return list(zip(files, system.transcribe(file_utterances(front, audio), "decoding files"), strict=True))
