"""The SLU part of ``RESULTS.md``: one table per track, and SLU-F1 against speech budget as a PNG.

Each row is one fine-tuning run scored twice on the same test utterances, with the speech and with the
transcript as input; the gap between the two is the text-speech gap the methods try to close.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from speechllm_cli.metrics.results import code_span, first_seen, table_line
from speechllm_cli.metrics.slu import SLUScore


@dataclass(frozen=True)
class SLURow:
    track: str
    scheme: str
    budget: float
    speech_utterances: int
    """Speech examples the run trained on (budget share plus any target-language ones)."""
    speech: SLUScore
    text: SLUScore
    command: str
    cascades: Mapping[str, SLUScore] = field(default_factory=dict)
    """The same model reading a transcriber's transcript of the test speech, by transcriber."""


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def render_slu(rows: Sequence[SLURow], plot: str | None) -> str:
    """Markdown tables (one per track), the plot link and the commands."""
    parts = ["## SLU", "Percent. Columns under *speech* score the test utterances' speech as input; *text* "
             "the same model with the transcripts as input; *gap* is text minus speech SLU-F1. *invalid* counts "
             "speech-input outputs that are not a JSON frame (scored as empty frames)."]
    for track in first_seen(row.track for row in rows):
        lines = [f"### Track {track}", "",
                 table_line(["scheme", "budget %", "speech utts", "intent acc", "entity F1", "SLU-F1", "invalid",
                              "text intent acc", "text SLU-F1", "gap"]),
                 table_line(["---", *["---:"] * 9], escape=False)]
        for row in (r for r in rows if r.track == track):
            lines.append(table_line([row.scheme, f"{row.budget:g}", str(row.speech_utterances),
                                      _pct(row.speech.intent_acc), _pct(row.speech.span_f1), _pct(row.speech.slu_f1),
                                      str(row.speech.invalid_json), _pct(row.text.intent_acc), _pct(row.text.slu_f1),
                                      _pct(row.text.slu_f1 - row.speech.slu_f1)]))
        parts.append("\n".join(lines))
        cascades = [(row, name, score) for row in rows if row.track == track for name, score in row.cascades.items()]
        if cascades:
            parts.append(_cascade_table(track, cascades))
    if plot:
        parts.append(f"![SLU-F1 against speech budget]({plot})")
    commands = first_seen(row.command for row in rows)
    parts.append("### Commands\n\n" + "\n".join(f"- {code_span(command)}" for command in commands))
    return "\n\n".join(parts) + "\n"


def _cascade_table(track: str, cascades: Sequence[tuple[SLURow, str, SLUScore]]) -> str:
    """The cascades of a track: each run's model reading a transcriber's transcript instead of the speech."""
    lines = [f"#### Track {track}: cascades (the same model reading a transcript of the speech)", "",
             table_line(["scheme", "budget %", "transcript", "intent acc", "entity F1", "SLU-F1", "invalid",
                         "SLU-F1 from speech"]),
             table_line(["---", "---:", "---", *["---:"] * 5], escape=False)]
    for row, name, score in cascades:
        lines.append(table_line([row.scheme, f"{row.budget:g}", name, _pct(score.intent_acc), _pct(score.span_f1),
                                 _pct(score.slu_f1), str(score.invalid_json), _pct(row.speech.slu_f1)]))
    return "\n".join(lines)


def plot_slu(rows: Sequence[SLURow], path: Path) -> None:
    """Speech-input SLU-F1 against speech budget: a panel per track, a line per scheme, text-input dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tracks = first_seen(row.track for row in rows)
    figure, axes = plt.subplots(1, len(tracks), figsize=(5 * len(tracks), 4), squeeze=False, sharey=True)
    for axis, track in zip(axes[0], tracks, strict=True):
        for index, scheme in enumerate(first_seen(row.scheme for row in rows if row.track == track)):
            points = sorted((r.budget, r) for r in rows if r.track == track and r.scheme == scheme)
            budgets = [b for b, _ in points]
            color = f"C{index}"
            axis.plot(budgets, [100 * r.speech.slu_f1 for _, r in points], marker="o", color=color, label=scheme)
            axis.plot(budgets, [100 * r.text.slu_f1 for _, r in points], linestyle="--", color=color, alpha=0.5)
        axis.set_xscale("symlog", linthresh=5)
        ticks = sorted({r.budget for r in rows if r.track == track})
        axis.set_xticks(ticks, [f"{b:g}" for b in ticks])
        axis.minorticks_off()
        axis.set_xlabel("speech budget (% of training utterances)")
        axis.set_title(f"track {track}")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("SLU-F1 % (solid: speech input, dashed: text input)")
    axes[0][0].legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
