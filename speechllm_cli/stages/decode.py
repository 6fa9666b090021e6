"""``decode``: transcribe test splits (or a user's audio files) with each system.

Systems: ``ctc`` is the encoder's own greedy CTC output, the floor a speech LLM has to beat; a name under
``peers`` is a complete off-the-shelf ASR model (Whisper) decoded on the same audio, what a user would
otherwise reach for; any other name is an ``align`` system, decoded as speech -> encoder -> LSD ->
projector -> LLM, batched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import PositiveInt, model_validator

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.names import Name
from speechllm_cli.common.io import write_json, write_jsonl
from speechllm_cli.core.posteriors import LSDConfig
from speechllm_cli.core.speech_llm import GenerationConfig
from speechllm_cli.core.whisper_asr import WhisperASRConfig
from speechllm_cli.stages.inputs import cuts_path, encoder_dir, load_audio, load_cuts, load_trained_encoder
from speechllm_cli.stages.runner import Context, StageResult, Unit, run_units, status
from speechllm_cli.stages.speech_llm_io import load_trained, system_dir

if TYPE_CHECKING:
    import torch


CTC = "ctc"


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
    known = set(context.config.align.systems) if context.config.align is not None else set()
    unknown = [s for s in config.systems if s != CTC and s not in known and s not in config.peers]
    if unknown:
        raise SpeechLLMError(f"decode.systems: {unknown[0]!r} is neither 'ctc' nor an align system nor a peer")


def speech_texts(model: Any, tokenizer: Any, posteriors: list[torch.Tensor], vocab_size: int, config: DecodeConfig,
                 track: Any, description: str) -> list[str]:
    """LLM hypotheses for LSD posteriors, through the shared generation path."""
    from speechllm_cli.core.feeds import Example, generate_texts

    examples = [Example("speech", p, []) for p in posteriors]
    return generate_texts(model, tokenizer, examples, vocab_size, config.batch_size, config.generation, track,
                          description)


def _peer_hypotheses(context: Context, config: DecodeConfig, system: str, split: str,
                     cuts: Any) -> tuple[list[str], float, float]:
    """A peer's transcripts, its decoding seconds (feature extraction included) and the audio seconds."""
    from speechllm_cli.core.whisper_asr import WhisperASR

    audio = load_audio(context, cuts, f"loading {split} audio")
    started = time.time()
    hyps = WhisperASR(config.peers[system]).transcribe(audio, config.batch_size, context.track,
                                                       f"decoding {split} with {system}")
    return hyps, time.time() - started, sum(len(wave) for wave in audio) / 16000


def _speech_llm_hypotheses(context: Context, config: DecodeConfig, system: str, split: str,
                           ids: list[str]) -> tuple[list[str], float, float]:
    """Hypotheses of ``ctc`` or an align system, with decoding seconds (encoder included) and audio seconds."""
    import torch

    from speechllm_cli.stages.posterior_cache import split_posteriors

    align = context.config.align
    encoder = load_trained_encoder(context)
    posteriors = split_posteriors(context, encoder, split, align.lsd if align is not None else LSDConfig())
    started = time.time()
    if system == CTC:
        hyps = [encoder.ids_to_text(posteriors[i]["greedy"]) for i in ids]
    else:
        model, tokenizer = load_trained(context, align, encoder, system)
        with torch.no_grad():
            hyps = speech_texts(model, tokenizer, [posteriors[i]["lsd"] for i in ids], encoder.vocab_size, config,
                                context.track, f"decoding {split} with {system}")
    seconds = time.time() - started + sum(posteriors[i]["encode_s"] for i in ids)
    return hyps, seconds, sum(posteriors[i]["seconds"] for i in ids)


def _decode(context: Context, config: DecodeConfig, system: str, split: str) -> dict[str, Any]:
    cuts = load_cuts(context, split)
    ids = [cut.id for cut in cuts]
    refs = [cut.supervisions[0].text or "" for cut in cuts]
    if system in config.peers:
        hyps, seconds, audio = _peer_hypotheses(context, config, system, split, cuts)
    else:
        hyps, seconds, audio = _speech_llm_hypotheses(context, config, system, split, ids)
    out = decode_dir(context, system, split)
    write_jsonl(out / "hyps.jsonl", ({"id": i, "ref": r, "hyp": h} for i, r, h in zip(ids, refs, hyps, strict=True)))
    summary = {"num_utts": len(ids), "audio_seconds": round(audio, 2), "decode_seconds": round(seconds, 2),
               "rtf": round(seconds / max(audio, 1e-9), 4), "command": context.command}
    write_json(out / "summary.json", summary)
    return summary


def run(context: Context) -> StageResult:
    config: DecodeConfig = context.section("decode")
    _check_systems(context, config)
    align = context.config.align
    shared = {"generation": config.generation.model_dump(mode="json"), "batch_size": config.batch_size,
              "lsd": align.lsd.model_dump(mode="json") if align else None}
    units = []
    for system in config.systems:
        for split in config.splits:
            settings: dict[str, Any] = {"system": system, "split": split}
            inputs = [cuts_path(context, split)]
            if system in config.peers:
                settings["peer"] = config.peers[system].model_dump(mode="json")
            else:
                settings |= shared
                inputs.append(encoder_dir(context))
            if system != CTC and system not in config.peers:
                inputs.append(system_dir(context, system) / "projector")
            units.append(Unit(f"decode/{system}/{split}", decode_dir(context, system, split), settings, inputs,
                              lambda s=system, p=split: _decode(context, config, s, p)))
    outcomes = run_units(context, units)
    rows = [[o.unit.name, str(o.stats["num_utts"]), f"{o.stats['rtf']:.3f}", status(o)] for o in outcomes]
    summary = f"decode: {len(outcomes)} system x split outputs -> {context.exp_dir / 'decode'}"
    return StageResult(summary, ["output", "utterances", "RTF", "status"], rows)


FileTranscriber = Callable[[Context, DecodeConfig, str, "list[torch.Tensor]"], list[str]]
"""Hypotheses of one kind of system (ctc, an align system, a peer) for waveforms read from files."""


def _ctc_file_texts(context: Context, config: DecodeConfig, system: str, waves: list[torch.Tensor]) -> list[str]:
    import torch

    encoder = load_trained_encoder(context)
    with torch.no_grad():
        return encoder.greedy_text(encoder(waves))


def _peer_file_texts(context: Context, config: DecodeConfig, system: str, waves: list[torch.Tensor]) -> list[str]:
    from speechllm_cli.core.whisper_asr import WhisperASR

    return WhisperASR(config.peers[system]).transcribe(waves, config.batch_size, context.track,
                                                       f"decoding files with {system}")


def _align_file_texts(context: Context, config: DecodeConfig, system: str, waves: list[torch.Tensor]) -> list[str]:
    import torch

    from speechllm_cli.core.posteriors import label_synchronous

    align = context.section("align")
    encoder = load_trained_encoder(context)
    with torch.no_grad():
        output = encoder(waves)
        compressed, lengths = label_synchronous(output.log_probs.exp(), output.lengths, align.lsd)
        model, tokenizer = load_trained(context, align, encoder, system)
        posteriors = [compressed[i, : int(n)] for i, n in enumerate(lengths)]
        return speech_texts(model, tokenizer, posteriors, encoder.vocab_size, config, context.track,
                            "decoding files")


def _file_transcriber(context: Context, config: DecodeConfig, system: str) -> FileTranscriber:
    """How ``system`` transcribes files; an unknown name is refused before any file or model is read."""
    align = context.config.align
    kinds: dict[str, FileTranscriber] = {CTC: _ctc_file_texts}
    kinds |= dict.fromkeys(align.systems if align is not None else [], _align_file_texts)
    kinds |= dict.fromkeys(config.peers, _peer_file_texts)
    if system not in kinds:
        raise SpeechLLMError(f"--system {system}: not a system of recipe {context.config.name!r} "
                             f"(known: {', '.join(kinds)})")
    return kinds[system]


def _file_waves(context: Context, files: list[Path]) -> list[torch.Tensor]:
    """Every file checked and read as prepare-data would (same limits, same channel rule), before any model
    loads, so a bad file costs no model loading and its error names it."""
    import torch

    from speechllm_cli.core.features import SAMPLE_RATE
    from speechllm_cli.data.audio import AudioLimits, read_file

    prepare = context.config.prepare_data
    limits = prepare.audio_limits if prepare is not None else AudioLimits()
    return [torch.from_numpy(read_file(path, limits, SAMPLE_RATE)) for path in files]


def transcribe_files(context: Context, files: list[Path], system: str) -> list[tuple[Path, str]]:
    """Hypotheses for a user's own audio files, without preparing a split: by ``ctc``, an align system or a
    peer (which then transcribes files as it decodes test splits)."""
    config: DecodeConfig = context.section("decode")
    transcribe = _file_transcriber(context, config, system)
    waves = _file_waves(context, files)
    return list(zip(files, transcribe(context, config, system, waves), strict=True))
