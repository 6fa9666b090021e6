"""The one speech front end: audio -> frozen encoder -> LSD, for prepared splits and for a user's files.

Split decoding, the paired baseline, calibration and curriculum evaluation all read a split's LSD
posteriors from here; since the encoder is frozen, it runs once per split and LSD setting after
``train-encoder``. The cache is named by the encoder, the LSD setting and the split's manifest *and audio*,
so re-prepared audio is encoded again. It is written in parts of :data:`PART_SIZE` utterances while the
encoder runs and read back lazily, one utterance at a time, so neither writing nor reading it holds a
split in memory. Parts are safetensors with a JSON header (no code runs on load); ``index.json`` is
written last, and a folder without it, or with an unreadable part, is encoded again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechllm_cli.common import device
from speechllm_cli.common.io import file_digest, write_json
from speechllm_cli.core.configs import LSDConfig
from speechllm_cli.data.audio_source import SAMPLE_RATE, AudioSource
from speechllm_cli.data.sources import Track
from speechllm_cli.stages.inputs import cuts_path, encoder_dir, load_cuts, load_trained_encoder
from speechllm_cli.stages.runner import Context, input_digest

if TYPE_CHECKING:
    import torch

    from speechllm_cli.core.encoders import CTCEncoder
    from speechllm_cli.core.feeds import StoredFrames

PART_SIZE = 256
INDEX = "index.json"
BATCH_SIZE = 16
TENSORS = ("lsd", "hidden")
"""What a cache part holds per utterance; a part written without one of them is encoded again."""


@dataclass(frozen=True)
class Encoded:
    """One utterance through the front end."""

    lsd: torch.Tensor
    """Label-synchronous posteriors [L, V], float16: what a speech LLM reads through the posterior interface."""
    hidden: torch.Tensor
    """The encoder's hidden states pooled over the same segments [L, H], float16: what it reads through the
    unified-encoder interface."""
    greedy: list[int]
    """The encoder's own greedy CTC units: the ``ctc`` system's output."""
    seconds: float
    """Audio seconds."""
    encode_s: float
    """This utterance's share of its batch's encoder + LSD time."""


def encode(encoder: CTCEncoder, audio: AudioSource, lsd: LSDConfig, track: Track,
           description: str) -> Iterator[tuple[int, Encoded]]:
    """(index, output) for every utterance of ``audio``, a batch of similar lengths at a time."""
    import torch

    from speechllm_cli.core.encoders import greedy_ids
    from speechllm_cli.core.posteriors import lsd_segments

    device.announce()
    batches = audio.batches(BATCH_SIZE)
    with torch.no_grad():
        for batch in track(batches, len(batches), description):
            waves = [audio.load(i) for i in batch]
            started = time.time()
            output = encoder(waves)
            posteriors = output.log_probs.exp()
            segments = lsd_segments(posteriors, output.lengths, lsd)
            compressed, lengths = segments.pool(posteriors)
            hidden, _ = segments.pool(output.hidden.float())
            greedy = greedy_ids(output.log_probs, output.lengths)
            share = (time.time() - started) / len(batch)
            for row, index in enumerate(batch):
                length = int(lengths[row])
                yield index, Encoded(compressed[row, :length].half().cpu().clone(),
                                     hidden[row, :length].half().cpu().clone(), greedy[row],
                                     len(waves[row]) / SAMPLE_RATE, share)


class CachedPosteriors(Mapping[str, Encoded]):
    """A finished cache folder, read one utterance at a time."""

    def __init__(self, parts: list[Any], fields: dict[str, tuple[int, dict[str, Any]]]) -> None:
        self._parts, self._fields = parts, fields

    def __getitem__(self, uid: str) -> Encoded:
        part, fields = self._fields[uid]
        handle = self._parts[part]
        return Encoded(handle.get_tensor(f"lsd/{uid}"), handle.get_tensor(f"hidden/{uid}"), **fields)

    def stored(self, uid: str, field: str = "lsd") -> StoredFrames:
        """An utterance's ``field`` left on disk: its shape from the part's header, its values read on use."""
        from speechllm_cli.core.feeds import StoredFrames

        handle, name = self._parts[self._fields[uid][0]], f"{field}/{uid}"
        return StoredFrames(tuple(handle.get_slice(name).get_shape()), partial(handle.get_tensor, name))

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)


def _cache_dir(context: Context, split: str, lsd: LSDConfig) -> Path:
    made_from = [file_digest(encoder_dir(context)), lsd.model_dump_json(),
                 input_digest(cuts_path(context, split), context.exp_dir)]
    key = hashlib.sha256("\n".join(made_from).encode()).hexdigest()[:16]
    return context.exp_dir / "encoder" / "posteriors" / f"{split}-{key}"


def _write_part(path: Path, part: dict[str, Encoded]) -> None:
    from safetensors.torch import save_file

    tensors = {f"{field}/{uid}": getattr(value, field).contiguous() for uid, value in part.items()
               for field in TENSORS}
    header = {uid: {"greedy": v.greedy, "seconds": v.seconds, "encode_s": v.encode_s} for uid, v in part.items()}
    save_file(tensors, str(path), metadata={"utterances": json.dumps(header, sort_keys=True)})


def _open(folder: Path) -> CachedPosteriors | None:
    """The finished cache, or None when it is missing, incomplete or unreadable (it is then encoded again)."""
    from safetensors import SafetensorError, safe_open

    try:
        index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
        parts, fields = [], {}
        for number, name in enumerate(index["parts"]):
            handle = safe_open(str(folder / name), framework="pt")
            header = json.loads((handle.metadata() or {})["utterances"])
            if set(handle.keys()) != {f"{field}/{uid}" for uid in header for field in TENSORS}:
                return None
            parts.append(handle)
            fields |= {uid: (number, values) for uid, values in header.items()}
        return CachedPosteriors(parts, fields) if len(fields) == index["utterances"] else None
    except (SafetensorError, OSError, KeyError, TypeError, ValueError):
        return None


def split_posteriors(context: Context, encoder: CTCEncoder, split: str, lsd: LSDConfig) -> CachedPosteriors:
    """The front end's output for every utterance of a prepared split, by utterance id."""
    from speechllm_cli.data.cut_audio import CutAudio

    folder = _cache_dir(context, split, lsd)
    cached = _open(folder)
    if cached is not None:
        return cached
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    audio = CutAudio(load_cuts(context, split))
    names: list[str] = []
    part: dict[str, Encoded] = {}
    for index, encoded in encode(encoder, audio, lsd, context.track, f"encoding {split}"):
        part[audio.ids[index]] = encoded
        if len(part) == PART_SIZE:
            names.append(f"part-{len(names):05d}.safetensors")
            _write_part(folder / names[-1], part)
            part = {}
    if part:
        names.append(f"part-{len(names):05d}.safetensors")
        _write_part(folder / names[-1], part)
    write_json(folder / INDEX, {"parts": names, "utterances": len(audio)})
    opened = _open(folder)
    assert opened is not None, f"{folder} was just written"
    return opened


class SpeechFrontEnd:
    """The trained encoder (loaded on first use) and the recipe's LSD setting."""

    def __init__(self, context: Context) -> None:
        self.context, self.lsd = context, context.config.model.lsd
        self._encoder: CTCEncoder | None = None

    @property
    def encoder(self) -> CTCEncoder:
        if self._encoder is None:
            self._encoder = load_trained_encoder(self.context)
        return self._encoder

    def split(self, split: str) -> CachedPosteriors:
        return split_posteriors(self.context, self.encoder, split, self.lsd)

    def audio(self, audio: AudioSource, description: str) -> list[Encoded]:
        """Uncached, in input order: for a user's files, read once."""
        results: list[Encoded | None] = [None] * len(audio)
        for index, encoded in encode(self.encoder, audio, self.lsd, self.context.track, description):
            results[index] = encoded
        return [r for r in results if r is not None]
