"""``train-encoder``: the CTC acoustic encoder, trained on a split's paired speech (or imported as is).

The model lands in ``<exp>/encoder/model`` as a self-contained folder, whichever encoder produced it,
so every later stage loads it the same way. The model core (and torch) is imported when the stage
runs, not when the recipe config is read.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import PositiveFloat

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.names import Name
from speechllm_cli.common.io import write_json
from speechllm_cli.core.train_config import TrainConfig
from speechllm_cli.stages.inputs import (cuts_path, encoder_dir, encoder_name_path, load_audio, load_cuts,
                                         load_text_set, text_set_path)
from speechllm_cli.stages.runner import PARTIAL, Context, StageResult, Unit, run_units, status

if TYPE_CHECKING:
    import torch
    from lhotse import CutSet

    from speechllm_cli.core.encoders import CTCEncoder, FrozenFrontEncoder


FRONT_STATES = "front_states"
"""Cached outputs of a frozen encoder front (a verified safetensors folder), kept with the partial work until
training finishes."""

log = logging.getLogger(__name__)


class TrainEncoderConfig(StrictModel):
    encoder: str = "conformer-ctc"
    """Registry name: whisper-ctc (pretrained Whisper + CTC head trained here), conformer-ctc (trained here
    from scratch) or hf-ctc (any Hugging Face CTC model, used as it is with ``source``)."""
    source: str | None = None
    """A pretrained encoder (folder or hub id) to use as it is; then nothing is trained."""
    model: dict[str, Any] = {}
    """The encoder's own config (e.g. d_model, layers for conformer-ctc; whisper, head for whisper-ctc)."""
    split: Name = "train"
    text_set: Name = "train"
    """The prepare-text set holding the split's normalised transcripts (the CTC targets)."""
    max_seconds: PositiveFloat = 20.0
    """Longer utterances are left out of training (and counted)."""
    train: TrainConfig = TrainConfig(steps=600, batch_size=16, lr=2e-3, warmup_steps=60)


def _tokenizer_path(context: Context) -> Path:
    return context.exp_dir / "tokenizer" / "tokenizer.model"


def _prepared(context: Context, config: TrainEncoderConfig) -> tuple[CutSet, dict[str, str]]:
    """The split and its transcripts, read before anything is built, so that a missing one is a one-line error
    naming the stage to run (in pipeline order: the split before the text set before the tokenizer)."""
    cuts = load_cuts(context, config.split)
    targets = {row["id"]: row["text"] for row in load_text_set(context, config.text_set)}
    tokenizer = _tokenizer_path(context)
    if not tokenizer.is_file():
        raise SpeechLLMError(f"{tokenizer}: no tokenizer (run prepare-text first)")
    return cuts, targets


def _examples(context: Context, config: TrainEncoderConfig, encoder: CTCEncoder, cuts: CutSet,
              targets: dict[str, str]) -> tuple[list[Any], dict[str, int]]:
    kept = cuts.filter(lambda cut: cut.duration <= config.max_seconds and cut.id in targets).to_eager()
    audio = load_audio(context, kept, f"loading {config.split} audio")
    items = [(wave, encoder.text_to_ids(targets[cut.id])) for wave, cut in zip(audio, kept, strict=True)]
    return [item for item in items if item[1]], {"utterances": len(items), "left_out": len(cuts) - len(items)}


def _targets(batch: list[tuple[torch.Tensor, list[int]]]) -> dict[str, torch.Tensor]:
    import torch

    return {"targets": torch.cat([torch.tensor(ids) for _, ids in batch]),
            "target_lengths": torch.tensor([len(ids) for _, ids in batch])}


def _collate_audio(batch: list[tuple[torch.Tensor, list[int]]], generator: torch.Generator,
                   progress: float) -> dict[str, Any]:
    return {"audio": [wave for wave, _ in batch], "lengths": None, "from_states": False, **_targets(batch)}


def _collate_states(batch: list[tuple[torch.Tensor, list[int]]], generator: torch.Generator,
                    progress: float) -> dict[str, Any]:
    import torch

    states = torch.nn.utils.rnn.pad_sequence([item.float() for item, _ in batch], batch_first=True)
    return {"audio": states, "lengths": torch.tensor([len(item) for item, _ in batch]), "from_states": True,
            **_targets(batch)}


def _ctc_loss(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """CTC on what calling ``model`` (the encoder, or a data-parallel wrapper of it) outputs; the loss itself
    uses no parameters, so every gradient comes through the call."""
    from speechllm_cli.core.encoders import CTCEncoder

    output = model(batch["audio"], batch["lengths"], from_states=True) if batch["from_states"] else model(batch["audio"])
    return CTCEncoder.ctc_loss(output, batch["targets"], batch["target_lengths"])


def _front_states(context: Context, encoder: FrozenFrontEncoder, items: list[tuple[torch.Tensor, list[int]]],
                  batch_size: int = 16) -> list[tuple[torch.Tensor, list[int]]]:
    """Each utterance's frozen front output (float16), computed once and kept with the partial work."""
    from speechllm_cli.core.training import save_verified

    folder = context.exp_dir / "encoder" / PARTIAL / FRONT_STATES
    states = _cached_states(folder, len(items))
    if states is None:
        states = _compute_states(context, encoder, [wave for wave, _ in items], batch_size)
        save_verified(folder, {f"state.{i}": state for i, state in enumerate(states)}, {"count": len(states)})
    return [(state, ids) for state, (_, ids) in zip(states, items, strict=True)]


def _cached_states(folder: Path, count: int) -> list[torch.Tensor] | None:
    """The cache when it verifies and holds ``count`` utterances; a damaged one is named, then computed again."""
    from speechllm_cli.core.training import UnreadableCheckpoint, load_verified

    if not folder.exists():
        return None
    try:
        tensors, _ = load_verified(folder)
        if sorted(tensors) != sorted(f"state.{i}" for i in range(count)):
            raise UnreadableCheckpoint(f"holds {len(tensors)} utterances' states, not the {count} expected")
        return [tensors[f"state.{i}"] for i in range(count)]
    except UnreadableCheckpoint as error:
        log.warning("%s: %s; computing the frozen encoder's outputs again", folder, error)
        return None


def _compute_states(context: Context, encoder: FrozenFrontEncoder, waves: list[torch.Tensor],
                    batch_size: int) -> list[torch.Tensor]:
    import torch

    from speechllm_cli.core.features import pad_waveforms

    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    states = [torch.empty(0)] * len(waves)
    encoder.eval()
    with torch.no_grad():
        for batch in context.track(batches, len(batches), "caching the frozen encoder's outputs"):
            audio, lengths = pad_waveforms([waves[i] for i in batch])
            out, lengths = encoder.front(audio.to(encoder.device), lengths.to(encoder.device))
            for row, index in enumerate(batch):
                states[index] = out[row, : int(lengths[row])].half().cpu().clone()
    return states


def _train(context: Context, config: TrainEncoderConfig) -> dict[str, Any]:
    from speechllm_cli.core.encoders import FrozenFrontEncoder, build_encoder, load_encoder
    from speechllm_cli.core.training import TrainJob, seed_everything, train

    out = encoder_dir(context)
    if config.source is not None:
        load_encoder(config.encoder, config.source, **config.model).save(out)
        write_json(encoder_name_path(context), {"encoder": config.encoder})
        return {"imported": config.source}
    cuts, targets = _prepared(context, config)
    seed_everything(config.train.seed)
    encoder = build_encoder(config.encoder, config.model, tokenizer=_tokenizer_path(context))
    items, counts = _examples(context, config, encoder, cuts, targets)
    if not items:
        raise SpeechLLMError(f"train-encoder: no usable utterances in split {config.split!r}")
    collate = _collate_audio
    if isinstance(encoder, FrozenFrontEncoder) and encoder.front_is_frozen:
        items, collate = _front_states(context, encoder, items), _collate_states
    job = TrainJob(encoder, items, [len(item) for item, _ in items], collate, _ctc_loss, out.parent)
    report = train(job, config.train, context.track)
    encoder.save(out)
    write_json(encoder_name_path(context), {"encoder": config.encoder})
    shutil.rmtree(out.parent / PARTIAL / FRONT_STATES, ignore_errors=True)
    return {**counts, "steps": report.steps, "resumed_from": report.resumed_from,
            "first_loss": report.first_loss, "last_loss": report.last_loss, "seconds": round(report.seconds, 1)}


def run(context: Context) -> StageResult:
    config: TrainEncoderConfig = context.section("train_encoder")
    inputs = [] if config.source else [cuts_path(context, config.split), text_set_path(context, config.text_set),
                                      _tokenizer_path(context)]
    unit = Unit("encoder", context.exp_dir / "encoder", config.model_dump(mode="json"), inputs,
                lambda: _train(context, config))
    (outcome,) = run_units(context, [unit])
    stats = outcome.stats
    if "imported" in stats:
        summary = f"train-encoder: imported {stats['imported']} -> {encoder_dir(context)}"
        return StageResult(summary)
    rows = [[key, f"{value:.3f}" if isinstance(value, float) else str(value)] for key, value in stats.items()]
    rows.append(["status", status(outcome)])
    summary = (f"train-encoder: {config.encoder}, {stats['steps']} steps, loss {stats['first_loss']:.3f} -> "
               f"{stats['last_loss']:.3f} -> {encoder_dir(context)}")
    return StageResult(summary, ["", "value"], rows)
