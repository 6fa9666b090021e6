"""``decode``: transcribe test splits (or a user's audio files) with each system.

Systems: ``ctc`` is the encoder's own greedy CTC output, the floor a speech LLM has to beat; a name under
``peers`` is a complete off-the-shelf ASR model (Whisper) decoded on the same audio, what a user would
otherwise reach for; any other name is an ``align`` system, decoded as speech -> encoder -> LSD ->
projector -> LLM, batched.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import PositiveInt, model_validator

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import write_json, write_jsonl
from speechllm_cli.core.posteriors import LSDConfig
from speechllm_cli.core.speech_llm import GenerationConfig
from speechllm_cli.core.whisper_asr import WhisperASRConfig
from speechllm_cli.stages.inputs import cuts_path, encoder_dir, load_audio, load_cuts, load_trained_encoder
from speechllm_cli.stages.runner import Context, StageResult, Unit, run_units, status
from speechllm_cli.stages.speech_llm_io import load_trained, system_dir

if TYPE_CHECKING:
    import torch

    from speechllm_cli.core.encoders import CTCEncoder

CTC = "ctc"


class DecodeConfig(StrictModel):
    systems: list[str] = [CTC]
    """``ctc``, names of align systems and names of peers."""
    peers: dict[str, WhisperASRConfig] = {}
    """Off-the-shelf Whisper models decoded as systems of their own, by system name."""
    splits: list[str]
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


def transcribe_files(context: Context, files: list[Path], system: str) -> list[tuple[Path, str]]:
    """Hypotheses for a user's own audio files, without preparing a split."""
    import soundfile
    import torch
    import torchaudio.functional

    from speechllm_cli.core.posteriors import label_synchronous

    config: DecodeConfig = context.section("decode")
    encoder = load_trained_encoder(context)
    waves = []
    for path in files:
        try:
            audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
            raise SpeechLLMError(f"{path}: cannot read audio ({str(exc).splitlines()[0]})") from None
        wave = torch.from_numpy(audio.mean(axis=1))
        waves.append(torchaudio.functional.resample(wave, rate, 16000) if rate != 16000 else wave)
    with torch.no_grad():
        output = encoder(waves)
        if system == CTC:
            return list(zip(files, encoder.greedy_text(output), strict=True))
        align = context.section("align")
        compressed, lengths = label_synchronous(output.log_probs.exp(), output.lengths, align.lsd)
        model, tokenizer = load_trained(context, align, encoder, system)
        posteriors = [compressed[i, : int(n)] for i, n in enumerate(lengths)]
        texts = speech_texts(model, tokenizer, posteriors, encoder.vocab_size, config, context.track,
                             "decoding files")
    return list(zip(files, texts, strict=True))
