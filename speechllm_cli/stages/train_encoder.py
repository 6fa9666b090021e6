"""``train-encoder``: the CTC acoustic encoder, trained on a split's paired speech (or imported as is).

The model lands in ``<exp>/encoder/model`` as a self-contained folder, whichever encoder produced it,
so every later stage loads it the same way. The model core (and torch) is imported when the stage
runs, not when the recipe config is read.
"""

from __future__ import annotations

import logging
import shutil
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import PositiveFloat, ValidationInfo, field_validator

from speechllm_cli.common import device
from speechllm_cli.common.config import StrictModel, first_problem
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import write_json
from speechllm_cli.common.names import Name
from speechllm_cli.core.configs import ENCODER_CONFIGS
from speechllm_cli.core.train_config import TrainConfig
from speechllm_cli.stages.inputs import (
    cuts_path,
    encoder_dir,
    encoder_name_path,
    load_cuts,
    load_text_set,
    text_set_path,
)
from speechllm_cli.stages.runner import PARTIAL, Context, StageResult, Unit, run_units, status

if TYPE_CHECKING:
    import torch
    from lhotse import CutSet

    from speechllm_cli.core.encoders import CTCEncoder, FrozenFrontEncoder
    from speechllm_cli.data.cut_audio import CutAudio


FRONT_STATES = "front_states"
"""Cached outputs of a frozen encoder front (a folder of shards), kept with the partial work until training
finishes."""
SHARD = "shard-{:05d}"
"""One shard of the cache: a verified safetensors folder (see :func:`speechllm_cli.core.training.save_verified`)."""
SHARD_SECONDS = 600.0
"""Audio per shard, which the caching step holds as states before writing them: 23 MB of float16 states for
whisper-tiny (384 dimensions, 50 frames a second), 77 MB for Whisper large's 1280, whatever the split's size.
A kill loses at most one shard's work."""
CACHE_BATCH = 16
"""Utterances per batch of the frozen front when caching."""
CACHE_SECONDS = 160.0
"""Padded audio per caching batch: 16 utterances of 10 s, or 5 of Whisper's 30 s window, so the front's
activations stay bounded however long a split's utterances are."""

log = logging.getLogger(__name__)


class TrainEncoderConfig(StrictModel):
    encoder: str = "conformer-ctc"
    """Registry name: whisper-ctc (pretrained Whisper + CTC head trained here), conformer-ctc (trained here
    from scratch), hf-ctc (any Hugging Face CTC model, used as it is with ``source``) or whisper-tokens (the
    complete Whisper's decoder posteriors over its word pieces; nothing trains, it is saved as built)."""
    source: str | None = None
    """A pretrained encoder (folder or hub id) to use as it is; then nothing is trained."""
    model: dict[str, Any] = {}
    """The encoder's own config (e.g. d_model, layers for conformer-ctc; whisper, head for whisper-ctc)."""
    split: Name = "train"
    text_set: Name = "train"
    """The prepare-text set holding the split's normalised transcripts (the CTC targets)."""
    extra_splits: dict[Name, Name] = {}
    """More paired speech to train on, split name -> its text set: speech of other text than ``split``'s, so
    that the head learns to spell more than one domain (mini: everyday sentences beside the scripture). Later
    stages still read ``split`` alone (calibration, the paired system)."""
    max_seconds: PositiveFloat = 20.0
    """Longer utterances are left out of training (and counted)."""
    train: TrainConfig = TrainConfig(steps=600, batch_size=16, lr=2e-3, warmup_steps=60)

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, encoder: str) -> str:
        if encoder not in ENCODER_CONFIGS:
            raise ValueError(f"unknown encoder {encoder!r} (known: {', '.join(sorted(ENCODER_CONFIGS))})")
        return encoder

    @field_validator("model")
    @classmethod
    def _model_fits_its_encoder(cls, model: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Checked as the recipe loads, naming the file and key, rather than when the stage builds the encoder
        (a pretrained ``source`` takes its own loading options instead)."""
        config = ENCODER_CONFIGS.get(info.data.get("encoder", ""))
        if info.data.get("source") is None and config is not None:
            problem = first_problem(config, model)
            if problem is not None:
                raise ValueError(problem)
        return model

    @property
    def pairs(self) -> dict[str, str]:
        """Every split trained on -> its text set, ``split`` first."""
        return {self.split: self.text_set, **self.extra_splits}


def _tokenizer_path(context: Context) -> Path:
    return context.exp_dir / "tokenizer" / "tokenizer.model"


def _prepared(context: Context, config: TrainEncoderConfig) -> tuple[CutSet, dict[str, dict[str, Any]]]:
    """The splits and their transcripts, read before anything is built, so that a missing one is a one-line error
    naming the stage to run (in pipeline order: the split before the text set before the tokenizer)."""
    from lhotse import combine

    cuts = combine([load_cuts(context, split) for split in config.pairs]).to_eager()
    targets = {row["id"]: row for text_set in config.pairs.values() for row in load_text_set(context, text_set)}
    tokenizer = _tokenizer_path(context)
    if not tokenizer.is_file():
        raise SpeechLLMError(f"{tokenizer}: no tokenizer (run prepare-text first)")
    return cuts, targets


def _examples(config: TrainEncoderConfig, encoder: CTCEncoder, cuts: CutSet,
              targets: dict[str, dict[str, Any]]) -> tuple[CutAudio, list[tuple[int, list[int]]], dict[str, int]]:
    """The usable utterances' audio, unread, and items (position in it, CTC targets): an item only names its
    audio, which is read when its batch is made, so no item holds a waveform."""
    from speechllm_cli.data.cut_audio import CutAudio

    kept = cuts.filter(lambda cut: cut.duration <= config.max_seconds and cut.id in targets).to_eager()
    units = {cut.id: encoder.row_units(targets[cut.id]) for cut in kept}
    audio = CutAudio(kept.filter(lambda cut: bool(units[cut.id])))
    items = [(index, units[cut_id]) for index, cut_id in enumerate(audio.ids)]
    return audio, items, {"utterances": len(kept), "left_out": len(cuts) - len(kept)}


def _targets(batch: list[tuple[int, list[int]]]) -> dict[str, torch.Tensor]:
    import torch

    return {"targets": torch.cat([torch.tensor(ids) for _, ids in batch]),
            "target_lengths": torch.tensor([len(ids) for _, ids in batch])}


def _collate_audio(audio: CutAudio, batch: list[tuple[int, list[int]]], generator: torch.Generator,
                   progress: float) -> dict[str, Any]:
    return {"audio": [audio.load(index) for index, _ in batch], "lengths": None, "from_states": False,
            **_targets(batch)}


def _collate_states(states: FrontStates, batch: list[tuple[int, list[int]]], generator: torch.Generator,
                    progress: float) -> dict[str, Any]:
    import torch

    rows = [states.load(index).float() for index, _ in batch]
    return {"audio": torch.nn.utils.rnn.pad_sequence(rows, batch_first=True),
            "lengths": torch.tensor([len(row) for row in rows]), "from_states": True, **_targets(batch)}


def _ctc_loss(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """CTC on what calling ``model`` (the encoder, or a data-parallel wrapper of it) outputs; the loss itself
    uses no parameters, so every gradient comes through the call."""
    from speechllm_cli.core.encoders import CTCEncoder

    audio = batch["audio"]
    output = model(audio, batch["lengths"], from_states=True) if batch["from_states"] else model(audio)
    return CTCEncoder.ctc_loss(output, batch["targets"], batch["target_lengths"])


class FrontStates:
    """The cached front states, read per batch: each shard is memory-mapped and kept open, and a batch copies
    out only its own utterances. Pages read stay in the page cache, which the kernel may drop at any time;
    nothing holds the split's states in process memory."""

    def __init__(self, folder: Path, shards: list[list[int]]) -> None:
        from safetensors import safe_open

        from speechllm_cli.core.training import TENSORS

        self._files: dict[int, Any] = {}
        for number, indices in enumerate(shards):
            handle = safe_open(str(folder / SHARD.format(number) / TENSORS), framework="pt")
            self._files.update(dict.fromkeys(indices, handle))

    def frames(self, index: int) -> int:
        return int(self._files[index].get_slice(f"state.{index}").get_shape()[0])

    def load(self, index: int) -> torch.Tensor:
        return self._files[index].get_tensor(f"state.{index}")


def _shards(audio: CutAudio) -> list[list[list[int]]]:
    """The caching batches grouped into shards of about :data:`SHARD_SECONDS` of audio, a pure function of the
    manifest: a rerun finds each shard where the killed run left it."""
    shards: list[list[list[int]]] = []
    current: list[list[int]] = []
    seconds = 0.0
    for batch in audio.batches(CACHE_BATCH, CACHE_SECONDS):
        current.append(batch)
        seconds += sum(audio.seconds[index] for index in batch)
        if seconds >= SHARD_SECONDS:
            shards.append(current)
            current, seconds = [], 0.0
    if current:
        shards.append(current)
    return shards


def _front_states(context: Context, encoder: FrozenFrontEncoder, audio: CutAudio) -> FrontStates:
    """Each utterance's frozen front output (float16), computed once and kept with the partial work, shard by
    shard, so that a killed run keeps every shard it finished."""
    folder = context.exp_dir / "encoder" / PARTIAL / FRONT_STATES
    shards = _shards(audio)
    for leftover in folder.glob(".shard-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    _compute_states(context, encoder, audio, folder, _missing_shards(folder, shards))
    return FrontStates(folder, [[index for batch in batches for index in batch] for batches in shards])


def _missing_shards(folder: Path, shards: list[list[list[int]]]) -> dict[int, list[list[int]]]:
    """The shards to compute: those not written yet, and damaged ones, which are named in one warning line."""
    from speechllm_cli.core.training import UnreadableCheckpoint, load_verified

    missing: dict[int, list[list[int]]] = {}
    damaged = []
    for number, batches in enumerate(shards):
        path = folder / SHARD.format(number)
        if not path.exists():
            missing[number] = batches
            continue
        expected = sorted(f"state.{index}" for batch in batches for index in batch)
        try:
            tensors, _ = load_verified(path)
            if sorted(tensors) != expected:
                raise UnreadableCheckpoint(f"holds {len(tensors)} utterances' states, not the {len(expected)} "
                                           "expected")
        except UnreadableCheckpoint as error:
            missing[number] = batches
            damaged.append(f"{path.name} ({error})")
    if damaged:
        log.warning("%s: skipped %s; computing the frozen encoder's outputs again", folder, "; ".join(damaged))
    return missing


def _compute_states(context: Context, encoder: FrozenFrontEncoder, audio: CutAudio, folder: Path,
                    shards: dict[int, list[list[int]]]) -> None:
    """Run the front over the shards' batches, reading each batch's audio only, and write each shard (verified)
    as soon as its last batch is done: the caching step holds one batch's audio and one shard's states."""
    import torch

    from speechllm_cli.core.features import pad_waveforms
    from speechllm_cli.core.training import save_verified

    work = [(number, batch, batch is batches[-1]) for number, batches in shards.items() for batch in batches]
    if not work:
        return
    device.announce()
    states: dict[str, torch.Tensor] = {}
    encoder.eval()
    with torch.no_grad():
        for number, batch, last in context.track(work, len(work), "caching the frozen encoder's outputs"):
            waves, lengths = pad_waveforms([audio.load(index) for index in batch])
            out, frames = encoder.front(waves.to(encoder.device), lengths.to(encoder.device))
            for row, index in enumerate(batch):
                states[f"state.{index}"] = out[row, : int(frames[row])].half().cpu()
            if last:
                save_verified(folder / SHARD.format(number), states, {"count": len(states)})
                states = {}


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
    if not encoder.trainable_parameters():
        encoder.save(out)
        write_json(encoder_name_path(context), {"encoder": config.encoder})
        return {"imported": f"{config.encoder} (nothing to train)"}
    encoder.to(device.torch_device())  # the front-state cache is made before the training loop places the model
    audio, items, counts = _examples(config, encoder, cuts, targets)
    if not items:
        raise SpeechLLMError(f"train-encoder: no usable utterances in split {config.split!r}")
    if isinstance(encoder, FrozenFrontEncoder) and encoder.front_is_frozen:
        states = _front_states(context, encoder, audio)
        collate = partial(_collate_states, states)
        lengths = [states.frames(index) for index, _ in items]
    else:
        collate = partial(_collate_audio, audio)
        lengths = [round(audio.seconds[index] * encoder.sample_rate) for index, _ in items]
    job = TrainJob(encoder, items, lengths, collate, _ctc_loss, out.parent)
    report = train(job, config.train, context.track)
    encoder.save(out)
    write_json(encoder_name_path(context), {"encoder": config.encoder})
    shutil.rmtree(out.parent / PARTIAL / FRONT_STATES, ignore_errors=True)
    return {**counts, "steps": report.steps, "resumed_from": report.resumed_from,
            "first_loss": report.first_loss, "last_loss": report.last_loss, "seconds": round(report.seconds, 1)}


def run(context: Context) -> StageResult:
    config: TrainEncoderConfig = context.section("train_encoder")
    inputs = [] if config.source else [*(cuts_path(context, s) for s in config.pairs),
                                      *(text_set_path(context, t) for t in config.pairs.values()),
                                      _tokenizer_path(context)]
    settings = config.model_dump(mode="json", exclude=set() if config.extra_splits else {"extra_splits"})
    unit = Unit("encoder", context.exp_dir / "encoder", settings, inputs,
                lambda: _train(context, config), [encoder_dir(context)])
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
