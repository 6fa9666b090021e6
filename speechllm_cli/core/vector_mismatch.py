"""How far text-side vectors of the unified-encoder interface are from the speech-side ones: its mismatch report.

TASU's report compares posterior frames by their statistics (:mod:`~speechllm_cli.core.mismatch`). Here both
sides are vectors in the encoder's hidden space and the two sequences of an utterance need not have the same
length (LSD's segments of speech against a transcript's units), so they are aligned by dynamic time warping
on cosine distance first. The figures, per utterance then averaged:

- ``positions_per_unit``: sequence length per transcript unit;
- ``dtw_cosine``: mean cosine distance along the best alignment (the report's one distance: 0 when every
  text vector points where its speech vector does);
- ``norm_ratio``: mean vector norm of the side against the speech side's (scale, which cosine ignores).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def dtw_cosine(text: torch.Tensor, speech: torch.Tensor) -> float:
    """Mean cosine distance along the dynamic-time-warping path between [N, H] and [M, H] (steps right, down,
    diagonal), normalised by the path's length."""
    unit = torch.nn.functional.normalize
    distances = (1 - unit(text.float(), dim=-1) @ unit(speech.float(), dim=-1).T).clamp(min=0)
    table = distances.double().tolist()
    rows, cols = len(table), len(table[0]) if table else 0
    inf = float("inf")
    cost = [[inf] * (cols + 1) for _ in range(rows + 1)]
    steps = [[0] * (cols + 1) for _ in range(rows + 1)]
    cost[0][0] = 0.0
    for i in range(1, rows + 1):
        for j in range(1, cols + 1):
            best, length = min((cost[i - 1][j - 1], steps[i - 1][j - 1]), (cost[i - 1][j], steps[i - 1][j]),
                               (cost[i][j - 1], steps[i][j - 1]))
            cost[i][j], steps[i][j] = best + table[i - 1][j - 1], length + 1
    return cost[rows][cols] / steps[rows][cols]


def summarize(sides: Sequence[torch.Tensor], speech: Sequence[torch.Tensor], units: Sequence[int]) -> dict[str, float]:
    """The report's figures of one side (text-side or speech vectors) against the speech vectors."""
    count = len(speech)
    return {"utterances": count,
            "positions_per_unit": sum(len(s) for s in sides) / max(1, sum(units)),
            "dtw_cosine": sum(dtw_cosine(s, r) for s, r in zip(sides, speech, strict=True)) / max(1, count),
            "norm_ratio": float(torch.cat([s.float().norm(dim=-1) for s in sides]).mean()
                                / torch.cat([r.float().norm(dim=-1) for r in speech]).mean())}
