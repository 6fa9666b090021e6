"""The distillation part of ``RESULTS.md``: forgetting F and misalignment M against speech accuracy.

METHODS.md §4 splits the text-speech gap into F (the adapted LLM on text against the original) and M (the
adapted LLM on speech against the original on text). If M is what costs accuracy, systems with a smaller
log M transcribe better: the table gives each system's F, M and word accuracy (100 - WER, averaged over
the decoded test splits), the rank correlation of log M with accuracy across systems, and a scatter plot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechllm_cli.metrics.results import MISSING, code_span, first_seen, table_line


@dataclass(frozen=True)
class GapRow:
    system: str
    made_by: str
    """How it was trained: ``align`` for a distillation's starting point, else its init, input and selection."""
    forgetting: float
    misalignment: float
    wer: dict[str, float]
    """Split -> WER as a fraction, for the splits decoded so far."""
    command: str

    @property
    def accuracy(self) -> float | None:
        """Word accuracy in percent, averaged over the decoded splits (None before decoding)."""
        return 100 * (1 - sum(self.wer.values()) / len(self.wer)) if self.wer else None


def _ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank (as Spearman's rho needs)."""
    array = np.asarray(values, dtype=np.float64)
    order = array.argsort(kind="stable")
    ranks = np.empty(len(array))
    ranks[order] = np.arange(1, len(array) + 1)
    for value in np.unique(array):
        tied = array == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation; None when it is undefined (fewer than 3 points, or a constant side)."""
    if len(x) != len(y):
        raise ValueError(f"{len(x)} x values against {len(y)} y values")
    if len(x) < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def correlation(rows: Sequence[GapRow]) -> tuple[float | None, int]:
    """Spearman's rho of log M with word accuracy over the rows that were decoded, and their number."""
    points = [(math.log(row.misalignment), row.accuracy) for row in rows
              if row.accuracy is not None and row.misalignment > 0]
    return spearman([p[0] for p in points], [p[1] for p in points]), len(points)


def _figure(value: float | None, digits: int) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def render_gap(rows: Sequence[GapRow], plot: str | None) -> str:
    splits = first_seen(split for row in rows for split in row.wer)
    rho, points = correlation(rows)
    lines = [table_line(["system", "made by", *(f"WER {s}" for s in splits), "word acc", "F", "M", "log M"]),
             table_line(["---", "---", *["---:"] * (len(splits) + 4)], escape=False)]
    for row in rows:
        lines.append(table_line([row.system, row.made_by,
                                 *(_figure(100 * row.wer[s] if s in row.wer else None, 2) for s in splits),
                                 _figure(row.accuracy, 2), f"{row.forgetting:.4f}", f"{row.misalignment:.4f}",
                                 _figure(math.log(row.misalignment) if row.misalignment > 0 else None, 3)]))
    verdict = (f"Spearman's rho of log M with word accuracy over {points} systems: **{rho:.2f}** (negative: the "
               "less misaligned, the more accurate)." if rho is not None
               else f"Spearman's rho of log M with word accuracy: undefined over {points} decoded systems.")
    parts = ["## Distillation: forgetting and misalignment",
             "F and M in nats per response token on the recipe's held-out measure set: F = KL(original LLM on "
             "text || system's LLM on text), M = KL(original LLM on text || system on speech). *word acc* is "
             "100 - WER, averaged over the decoded splits; `-` where a system is not decoded yet. A starting "
             "point's F and M are those measured before its first distillation.",
             "\n".join(lines), verdict]
    if plot:
        parts.append(f"![word accuracy against log M]({plot})")
    commands = first_seen(row.command for row in rows if row.command)
    if commands:
        parts.append("### Commands\n\n" + "\n".join(f"- {code_span(command)}" for command in commands))
    return "\n\n".join(parts) + "\n"


def plot_gap(rows: Sequence[GapRow], path: Path) -> bool:
    """Word accuracy against log M, a labelled point per decoded system; False when none is decoded."""
    points = [row for row in rows if row.accuracy is not None and row.misalignment > 0]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for row in points:
        x, y = math.log(row.misalignment), row.accuracy
        axis.scatter([x], [y], color="C0")
        axis.annotate(row.system, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
    axis.set_xlabel("log M (nats per response token, held-out speech)")
    axis.set_ylabel("word accuracy % (100 - mean WER)")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
