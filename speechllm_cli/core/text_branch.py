"""The text branch of the unified-encoder interface (TESU-LLM, METHODS.md §3): units into the encoder's space.

TASU meets text in the CTC posterior, which keeps only the label. Here text meets speech in the encoder's
last hidden layer (what its CTC output layer reads), pooled over LSD's segments. A small network maps a
unit sequence to one vector per unit in that space, so a projector trained on its vectors from text alone
reads the encoder's pooled states of real speech at inference.

It learns from the encoder's own output and needs no transcript: the input is the label of each LSD segment
of an utterance (its argmax unit, the blank for kept blank segments) and the target is the segment's pooled
hidden state, so the two sequences have the same length by construction. At alignment time a transcript's
units go in; the noise model (label noise on the units: TASU's, or the labels of the encoder's calibrated
simulation, then Gaussian noise at the measured spread of speech vectors around the branch's predictions)
makes text-side vectors spread like speech-side ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import torch
from pydantic import NonNegativeFloat, PositiveInt

from speechllm_cli.common.io import atomic_dir
from speechllm_cli.core.configs import TextBranchSettings
from speechllm_cli.core.encoders.saved_folder import load_weights, read_config, write_model
from speechllm_cli.core.features import valid_mask

MODEL_TYPE = "text-branch"


class TextBranchConfig(TextBranchSettings):
    """What a saved branch is: its settings and the encoder it belongs to."""

    vocab_size: PositiveInt
    """Units, blank included (the encoder's)."""
    hidden_size: PositiveInt
    """Width of the encoder's hidden layer."""
    residual_std: list[NonNegativeFloat] = []
    """Per dimension, the spread of held-out speech vectors around the branch's predictions (measured after
    training): the scale of the noise model's Gaussian part."""


def _sinusoids(length: int, dim: int, device: torch.device) -> torch.Tensor:
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate[: dim // 2])
    return table


class TextBranch(torch.nn.Module):
    """Unit ids [B, L] -> vectors [B, L, H] in the encoder's hidden space, one per unit."""

    def __init__(self, config: TextBranchConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = torch.nn.Embedding(config.vocab_size, config.d_model)
        layer = torch.nn.TransformerEncoderLayer(config.d_model, config.heads, config.ff_dim, config.dropout,
                                                 batch_first=True, norm_first=True)
        self.layers = torch.nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.out = torch.nn.Linear(config.d_model, config.hidden_size)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = valid_mask(lengths.to(ids.device), ids.shape[1])
        x = self.embed(ids) * math.sqrt(self.config.d_model) + _sinusoids(ids.shape[1], self.config.d_model, ids.device)
        x = self.layers(x, src_key_padding_mask=~mask)
        return self.out(x).masked_fill(~mask[..., None], 0.0)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def save(self, folder: Path) -> None:
        with atomic_dir(folder) as tmp:
            write_model(tmp, MODEL_TYPE, self.config, self)

    @classmethod
    def load(cls, folder: Path) -> Self:
        model = cls(read_branch_config(folder))
        load_weights(model, folder, "cpu")
        return model.eval()


def read_branch_config(folder: Path) -> TextBranchConfig:
    """A saved branch's config, without its weights (what a projector's width needs)."""
    from speechllm_cli.core.encoders.saved_folder import WEIGHTS_FILE

    return read_config(folder, MODEL_TYPE, TextBranchConfig, WEIGHTS_FILE)


@dataclass(frozen=True)
class Pair:
    """One utterance: its LSD segments' labels and their pooled hidden states [L, H]."""

    labels: list[int]
    target: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class PairBatch:
    ids: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor


def pad_ids(sequences: list[list[int]], device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    ids = torch.zeros(len(sequences), int(lengths.max()) if sequences else 0, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return ids.to(device or "cpu"), lengths


def collate(pairs: list[Pair], generator: torch.Generator, progress: float) -> PairBatch:
    ids, lengths = pad_ids([p.labels for p in pairs])
    targets = torch.nn.utils.rnn.pad_sequence([p.target.float() for p in pairs], batch_first=True)
    return PairBatch(ids, lengths, targets)


def _mse(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((predicted - target) ** 2).mean(dim=-1)


def _cosine(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 1 - torch.nn.functional.cosine_similarity(predicted, target, dim=-1)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"mse": _mse, "cosine": _cosine}


def loss(model: torch.nn.Module, batch: PairBatch) -> torch.Tensor:
    """The configured regression loss per segment, averaged over the batch's valid segments."""
    branch: TextBranch = model.module if hasattr(model, "module") else model
    device = branch.device
    predicted = model(batch.ids.to(device), batch.lengths)
    mask = valid_mask(batch.lengths.to(device), batch.ids.shape[1])
    per_segment = LOSSES[branch.config.loss](predicted, batch.targets.to(device))
    return per_segment[mask].mean()


def text_vectors(branch: TextBranch, labels: list[list[int]], scale: float,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Text-side vectors ([B, L, H], lengths) of label sequences (a transcript's units, noised or not): the
    branch, then Gaussian noise at ``scale`` times the measured spread, drawn from ``generator``."""
    ids, lengths = pad_ids(labels, branch.device)
    with torch.no_grad():
        vectors = branch(ids, lengths)
    if scale > 0 and branch.config.residual_std:
        std = torch.tensor(branch.config.residual_std, device=vectors.device)
        noise = torch.randn(vectors.shape, generator=generator, device=generator.device).to(vectors.device)
        inside = valid_mask(lengths.to(vectors.device), vectors.shape[1])[..., None]
        vectors = vectors + scale * std * noise * inside
    return vectors, lengths


def residual_std(branch: TextBranch, pairs: list[Pair], batch_size: int = 32) -> list[float]:
    """Per dimension, the standard deviation of speech vectors around the branch's predictions."""
    residuals = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            batch = collate(pairs[start: start + batch_size], torch.Generator(), 1.0)
            predicted = branch(batch.ids.to(branch.device), batch.lengths)
            mask = valid_mask(batch.lengths, batch.ids.shape[1])
            residuals.append((batch.targets - predicted.cpu())[mask])
    return torch.cat(residuals).std(dim=0).tolist() if residuals else []
