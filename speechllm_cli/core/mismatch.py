"""How far simulated posterior frames are from the real ones an encoder gives: the mismatch report.

A projector trained on simulated frames transfers to speech only as far as the two look alike. The same
statistics are taken of any set of frame sequences with their reference units, real or simulated:

- positions per reference unit (how many LLM positions a unit costs, and how LSD segments);
- unit errors of the non-blank argmax sequence against the reference, as substitutions, deletions and
  insertions per reference unit;
- the share of frames whose argmax is blank;
- the distributions of the top-1 probability and of the entropy of frames (sharpness).

:func:`distance` folds them into one number, so simulations can be ranked: the absolute differences of
the five rates, plus the 1-Wasserstein distances of the top-1 distributions and of the entropies (the
latter over log V, so that both lie in 0..1). Zero means indistinguishable by these statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from rapidfuzz.distance import Levenshtein

RATES = ("positions_per_unit", "substitution", "deletion", "insertion", "blank_share")
QUANTILES = 101
HISTOGRAM_BINS = 20


@dataclass(frozen=True)
class FrameStats:
    utterances: int
    reference_units: int
    frames: int
    substitutions: int
    deletions: int
    insertions: int
    blank_frames: int
    top1: torch.Tensor
    """Top-1 probability of every frame."""
    entropy: torch.Tensor
    """Entropy of every frame, in nats."""
    vocab_size: int

    def rates(self) -> dict[str, float]:
        units, frames = max(self.reference_units, 1), max(self.frames, 1)
        return {"positions_per_unit": self.frames / units, "substitution": self.substitutions / units,
                "deletion": self.deletions / units, "insertion": self.insertions / units,
                "blank_share": self.blank_frames / frames}

    def summary(self) -> dict[str, Any]:
        """JSON-ready: counts, rates, medians, quantiles (for the distance) and histograms (for the plot)."""
        levels = torch.linspace(0, 1, QUANTILES)
        top1 = self.top1 if self.frames else torch.zeros(1)
        entropy = self.entropy if self.frames else torch.zeros(1)
        max_entropy = math.log(self.vocab_size)
        return {"utterances": self.utterances, "reference_units": self.reference_units, "frames": self.frames,
                "vocab_size": self.vocab_size, **self.rates(),
                "top1_median": float(top1.median()), "top1_p10": float(top1.quantile(0.1)),
                "entropy_median": float(entropy.median()),
                "top1_quantiles": top1.quantile(levels).tolist(),
                "entropy_quantiles": entropy.quantile(levels).tolist(),
                "top1_histogram": torch.histc(top1, HISTOGRAM_BINS, 0, 1).tolist(),
                "entropy_histogram": torch.histc(entropy, HISTOGRAM_BINS, 0, max_entropy).tolist()}


def frame_stats(frames: Sequence[torch.Tensor], references: Sequence[Sequence[int]], vocab_size: int,
                blank_id: int = 0) -> FrameStats:
    """Statistics of frame sequences ([L_i, V] probabilities, padding excluded) against their references."""
    substitutions = deletions = insertions = blanks = units = count = 0
    top1, entropy = [], []
    for sequence, reference in zip(frames, references, strict=True):
        probs = sequence.float()
        argmax = probs.argmax(dim=-1)
        hypothesis = argmax[argmax != blank_id].tolist()
        for operation in Levenshtein.editops(list(reference), hypothesis):
            if operation.tag == "replace":
                substitutions += 1
            elif operation.tag == "delete":
                deletions += 1
            else:
                insertions += 1
        blanks += int((argmax == blank_id).sum())
        units += len(reference)
        count += probs.shape[0]
        top1.append(probs.max(dim=-1).values)
        entropy.append(-(probs * probs.clamp(min=1e-12).log()).sum(dim=-1))
    return FrameStats(len(frames), units, count, substitutions, deletions, insertions, blanks,
                      torch.cat(top1) if top1 else torch.zeros(0), torch.cat(entropy) if entropy else torch.zeros(0),
                      vocab_size)


def distance(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The report's one number between two :meth:`FrameStats.summary` dicts (see the module docstring)."""
    rates = sum(abs(a[key] - b[key]) for key in RATES)
    top1 = _wasserstein(a["top1_quantiles"], b["top1_quantiles"])
    entropy = _wasserstein(a["entropy_quantiles"], b["entropy_quantiles"]) / math.log(a["vocab_size"])
    return rates + top1 + entropy


def _wasserstein(a: Sequence[float], b: Sequence[float]) -> float:
    """1-Wasserstein distance of two distributions given by equally spaced quantiles."""
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)
