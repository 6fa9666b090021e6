"""LSD posteriors of a split's audio, computed once by the frozen encoder and kept on disk.

Both the paired alignment baseline and decoding read them; since the encoder is frozen, running it once
per split (and per LSD setting) is all the acoustic work a recipe needs after ``train-encoder``. The file
is named by the encoder, the LSD setting and the split's manifest *and audio*, so re-prepared audio is
encoded again; it is safetensors with a JSON header (no code runs on load), and an unreadable one is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechllm_cli.common.io import atomic_path, file_digest
from speechllm_cli.stages.inputs import cuts_path, encoder_dir, load_audio, load_cuts
from speechllm_cli.stages.runner import Context, input_digest

if TYPE_CHECKING:
    from speechllm_cli.core.encoders import CTCEncoder
    from speechllm_cli.core.posteriors import LSDConfig


Posteriors = dict[str, dict[str, Any]]


def _cache_path(context: Context, split: str, lsd: LSDConfig) -> Path:
    made_from = [file_digest(encoder_dir(context)), lsd.model_dump_json(),
                 input_digest(cuts_path(context, split), context.exp_dir)]
    key = hashlib.sha256("\n".join(made_from).encode()).hexdigest()[:16]
    return context.exp_dir / "encoder" / "posteriors" / f"{split}-{key}.safetensors"


def _save(path: Path, posteriors: Posteriors) -> None:
    from safetensors.torch import save_file

    tensors = {f"lsd/{uid}": value["lsd"].contiguous() for uid, value in posteriors.items()}
    header = {uid: {k: v for k, v in value.items() if k != "lsd"} for uid, value in posteriors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"utterances": json.dumps(header, sort_keys=True)})


def _load(path: Path) -> Posteriors | None:
    """The cached posteriors, or None when the file is unreadable or incomplete (it is then rebuilt)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = json.loads((handle.metadata() or {})["utterances"])
            return {uid: {**fields, "lsd": handle.get_tensor(f"lsd/{uid}")} for uid, fields in header.items()}
    except (SafetensorError, OSError, KeyError, ValueError):
        return None


def split_posteriors(context: Context, encoder: CTCEncoder, split: str, lsd: LSDConfig,
                     batch_size: int = 16) -> Posteriors:
    """Per utterance id: ``lsd`` [L, V] (float16), ``greedy`` unit ids, ``seconds`` of audio, ``encode_s``."""
    import torch

    from speechllm_cli.core.encoders import greedy_ids
    from speechllm_cli.core.posteriors import label_synchronous

    path = _cache_path(context, split, lsd)
    cached = _load(path) if path.is_file() else None
    if cached is not None:
        return cached
    cuts = load_cuts(context, split)
    audio = load_audio(context, cuts, f"loading {split} audio")
    result: Posteriors = {}
    order = sorted(range(len(audio)), key=lambda i: len(audio[i]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    with torch.no_grad():
        for batch in context.track(batches, len(batches), f"encoding {split}"):
            started = time.time()
            output = encoder([audio[i] for i in batch])
            compressed, lengths = label_synchronous(output.log_probs.exp(), output.lengths, lsd)
            greedy = greedy_ids(output.log_probs, output.lengths)
            share = (time.time() - started) / len(batch)
            for row, index in enumerate(batch):
                result[cuts[index].id] = {"lsd": compressed[row, : int(lengths[row])].half().cpu(),
                                          "greedy": greedy[row], "seconds": len(audio[index]) / 16000,
                                          "encode_s": share}
    _save(path, result)
    return result
