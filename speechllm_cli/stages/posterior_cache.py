"""LSD posteriors of a split's audio, computed once by the frozen encoder and kept on disk.

Both the paired alignment baseline and decoding read them; since the encoder is frozen, running it once
per split (and per LSD setting) is all the acoustic work a recipe needs after ``train-encoder``.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

from speechllm_cli.common.io import atomic_path, file_digest
from speechllm_cli.stages.inputs import encoder_dir, load_audio, load_cuts
from speechllm_cli.stages.runner import Context

if TYPE_CHECKING:
    import torch

    from speechllm_cli.core.encoders import CTCEncoder
    from speechllm_cli.core.posteriors import LSDConfig


def _cache_path(context: Context, split: str, lsd: LSDConfig) -> Path:
    key = hashlib.sha256((file_digest(encoder_dir(context)) + lsd.model_dump_json()).encode()).hexdigest()[:16]
    return context.exp_dir / "encoder" / "posteriors" / f"{split}-{key}.pt"


def split_posteriors(context: Context, encoder: CTCEncoder, split: str, lsd: LSDConfig,
                     batch_size: int = 16) -> dict[str, dict[str, torch.Tensor | float]]:
    """Per utterance id: ``lsd`` [L, V] (float16), ``greedy`` unit ids, ``seconds`` of audio, ``encode_s``."""
    import torch

    from speechllm_cli.core.encoders import greedy_ids
    from speechllm_cli.core.posteriors import label_synchronous

    path = _cache_path(context, split, lsd)
    if path.is_file():
        return torch.load(path, weights_only=False)
    cuts = load_cuts(context, split)
    audio = load_audio(context, cuts, f"loading {split} audio")
    result: dict[str, dict[str, torch.Tensor | float]] = {}
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
    with atomic_path(path) as tmp:
        torch.save(result, tmp)
    return result
