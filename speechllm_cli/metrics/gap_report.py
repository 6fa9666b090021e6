"""The text-speech gap part of ``RESULTS.md``: accuracy on speech and on text, forgetting F, misalignment M.

METHODS.md §4 splits the text-speech gap into F (the adapted LLM on text against the original) and M (the
adapted LLM on speech against the original on text). If M is what costs accuracy, systems with a smaller
log M transcribe better: the table gives each system's held-out speech accuracy, the original LLM's
accuracy on the same transcripts, their gap, F, M and test word accuracy (100 - WER, averaged over the
decoded test splits), then the rank correlation of log M with accuracy across systems, and a scatter plot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
    speech_acc: float
    """Word accuracy (fraction) of the system on the held-out speech."""
    text_acc: float
    """Word accuracy (fraction) of the original LLM on the same utterances' transcripts."""
    wer: dict[str, float]
    """Split -> WER as a fraction, for the splits decoded so far."""
    command: str
    qa_speech_acc: float | None = None
    """Share of spoken questions the system answered right (None: no question set measured)."""
    qa_text_acc: float | None = None
    """The original LLM's share on the questions' text."""

    @property
    def accuracy(self) -> float | None:
        """Test word accuracy in percent, averaged over the decoded splits (None before decoding)."""
        return 100 * (1 - sum(self.wer.values()) / len(self.wer)) if self.wer else None

    @property
    def gap(self) -> float:
        """Text minus speech accuracy on the held-out set, in points."""
        return 100 * (self.text_acc - self.speech_acc)


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


def correlation(rows: Sequence[GapRow], accuracy: Callable[[GapRow], float | None]) -> tuple[float | None, int]:
    """Spearman's rho of log M with ``accuracy`` over the rows that have one, and their number."""
    points = [(math.log(row.misalignment), value) for row in rows
              if (value := accuracy(row)) is not None and row.misalignment > 0]
    return spearman([p[0] for p in points], [p[1] for p in points]), len(points)


def _verdict(rows: Sequence[GapRow], accuracy: Callable[[GapRow], float | None], what: str) -> str:
    rho, points = correlation(rows, accuracy)
    if rho is None:
        return f"Spearman's rho of log M with {what}: undefined over {points} systems."
    return f"Spearman's rho of log M with {what} over {points} systems: **{rho:.2f}**."


def _figure(value: float | None, digits: int) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _qa_cells(row: GapRow) -> list[str]:
    if row.qa_speech_acc is None or row.qa_text_acc is None:
        return [MISSING] * 3
    return [_figure(100 * row.qa_speech_acc, 1), _figure(100 * row.qa_text_acc, 1),
            _figure(100 * (row.qa_text_acc - row.qa_speech_acc), 1)]


def render_gap(rows: Sequence[GapRow], plot: str | None) -> str:
    splits = first_seen(split for row in rows for split in row.wer)
    questions = any(row.qa_speech_acc is not None for row in rows)
    qa_columns = ["QA speech", "QA text", "QA gap"] if questions else []
    lines = [table_line(["system", "made by", "speech acc", "text acc", "gap", *qa_columns, "F", "M", "log M",
                         *(f"WER {s}" for s in splits), "test word acc"]),
             table_line(["---", "---", *["---:"] * (len(splits) + len(qa_columns) + 7)], escape=False)]
    for row in rows:
        lines.append(table_line([row.system, row.made_by, _figure(100 * row.speech_acc, 1),
                                 _figure(100 * row.text_acc, 1), _figure(row.gap, 1),
                                 *(_qa_cells(row) if questions else []), f"{row.forgetting:.4f}",
                                 f"{row.misalignment:.4f}",
                                 _figure(math.log(row.misalignment) if row.misalignment > 0 else None, 3),
                                 *(_figure(100 * row.wer[s] if s in row.wer else None, 2) for s in splits),
                                 _figure(row.accuracy, 2)]))
    parts = ["## Text-speech gap: forgetting and misalignment",
             "Measured on the recipe's held-out set (`distill.measure`): *speech acc* is the system's word "
             "accuracy (100 - WER) on the speech, *text acc* the original LLM's on the transcripts in the same "
             "prompt, *gap* their difference in points; F = KL(original LLM on text || system's LLM on text) and "
             "M = KL(original LLM on text || system on speech), in nats per response token. *test word acc* is "
             "100 - WER averaged over the decoded test splits; `-` where a system is not decoded yet. *QA*: "
             "the share of spoken questions (held-out voices) the system answers right, asked with the question "
             "set's instruction, against the original LLM on their text.",
             "\n".join(lines),
             " ".join([_verdict(rows, lambda row: 100 * row.speech_acc, "held-out speech accuracy"),
                       _verdict(rows, lambda row: row.accuracy, "test word accuracy"),
                       *([_verdict(rows, lambda row: row.qa_speech_acc, "spoken-question accuracy")]
                         if questions else []),
                       "(Negative: the less misaligned, the more accurate.)"])]
    if plot:
        parts.append(f"![accuracy against log M]({plot})")
    commands = first_seen(row.command for row in rows if row.command)
    if commands:
        parts.append("### Commands\n\n" + "\n".join(f"- {code_span(command)}" for command in commands))
    return "\n\n".join(parts) + "\n"


def plot_gap(rows: Sequence[GapRow], path: Path) -> None:
    """Held-out speech accuracy (and test word accuracy where decoded) against log M, a labelled point per
    system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for row in (r for r in rows if r.misalignment > 0):
        x = math.log(row.misalignment)
        axis.scatter([x], [100 * row.speech_acc], color="C0", label="held-out speech")
        if row.accuracy is not None:
            axis.scatter([x], [row.accuracy], color="C1", marker="s", label="test splits")
        axis.annotate(row.system, (x, 100 * row.speech_acc), textcoords="offset points", xytext=(4, 4),
                      fontsize="small")
    handles, labels = axis.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    axis.legend(unique.values(), unique.keys(), fontsize="small")
    axis.set_xlabel("log M (nats per response token, held-out speech)")
    axis.set_ylabel("word accuracy %")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
