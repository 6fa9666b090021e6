"""The mismatch part of ``RESULTS.md`` and its plot: real against simulated posterior frames, side by side.

Input is the ``report.json`` the calibrate stage writes: per source (real frames of a split, or a
simulation of the same transcripts) the summary of :mod:`speechllm_cli.core.mismatch`, and each source's
distance to the reference source.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from speechllm_cli.metrics.results import table_line

ROWS = (
    ("positions per reference unit", "positions_per_unit", "{:.2f}"),
    ("substituted units %", "substitution", "pct"),
    ("deleted units %", "deletion", "pct"),
    ("inserted units %", "insertion", "pct"),
    ("blank-argmax frames %", "blank_share", "pct"),
    ("top-1 probability, median", "top1_median", "{:.2f}"),
    ("top-1 probability, 10th percentile", "top1_p10", "{:.2f}"),
    ("entropy, median (nats)", "entropy_median", "{:.2f}"),
)


def _cell(value: float, style: str) -> str:
    return f"{100 * value:.1f}" if style == "pct" else style.format(value)


def render_mismatch(report: dict[str, Any], plot: str | None, command: str) -> str:
    """Markdown: one column per source, a row per statistic, the distance last."""
    sources = report["order"]
    lines = [table_line(["", *sources]), table_line(["---", *["---:"] * len(sources)], escape=False)]
    for label, key, style in ROWS:
        lines.append(table_line([label, *(_cell(report["sources"][s][key], style) for s in sources)]))
    lines.append(table_line([f"**distance to {report['reference']}**",
                             *(f"**{report['distance'][s]:.3f}**" for s in sources)]))
    counts = ", ".join(f"{s}: {report['sources'][s]['utterances']} utterances" for s in sources)
    parts = ["## Simulated against real posteriors",
             "Label-synchronous frames of the encoder against the simulations of the same transcripts "
             f"({counts}). Unit errors are those of the non-blank argmax sequence against the reference units; "
             "the distance adds the absolute differences of the five rates and the 1-Wasserstein distances of "
             "top-1 probability and entropy/log V.", "\n".join(lines)]
    if plot:
        parts.append(f"![Simulated against real posterior frames]({plot})")
    parts.append(f"Made by `{command}`." if command else "")
    return "\n\n".join(p for p in parts if p) + "\n"


def plot_mismatch(report: dict[str, Any], path: Path) -> None:
    """Histograms of top-1 probability and entropy, and the unit error rates, one colour per source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = {name: report["sources"][name] for name in report["order"]}
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for index, (name, stats) in enumerate(sources.items()):
        color = f"C{index}"
        for axis, key, top in ((axes[0], "top1_histogram", 1.0),
                               (axes[1], "entropy_histogram", math.log(stats["vocab_size"]))):
            counts = stats[key]
            total = max(sum(counts), 1)
            width = top / len(counts)
            centres = [(i + 0.5) * width for i in range(len(counts))]
            axis.plot(centres, [c / total for c in counts], marker=".", color=color, label=name)
        keys = ("substitution", "deletion", "insertion", "blank_share")
        offsets = [k + (index - (len(sources) - 1) / 2) * 0.8 / len(sources) for k in range(len(keys))]
        axes[2].bar(offsets, [100 * stats[k] for k in keys], width=0.8 / len(sources), color=color, label=name)
    axes[0].set_xlabel("top-1 probability of a frame")
    axes[1].set_xlabel("entropy of a frame (nats)")
    for axis in axes[:2]:
        axis.set_ylabel("share of frames")
        axis.grid(alpha=0.3)
    axes[2].set_xticks(range(4), ["substituted", "deleted", "inserted", "blank-argmax\nframes"])
    axes[2].set_ylabel("% of reference units (blank: of frames)")
    axes[2].grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


UNIFIED_ROWS = (
    ("positions per reference unit", "positions_per_unit", "{:.2f}"),
    ("mean norm / speech's", "norm_ratio", "{:.2f}"),
)


def render_unified_mismatch(report: dict[str, Any]) -> str:
    """Markdown for the unified interface's report (``encoder/text_branch/report.json``): text-side against
    speech-side vectors in the encoder's hidden space."""
    sources = report["order"]
    lines = [table_line(["", *sources]), table_line(["---", *["---:"] * len(sources)], escape=False)]
    for label, key, style in UNIFIED_ROWS:
        lines.append(table_line([label, *(_cell(report["sources"][s][key], style) for s in sources)]))
    lines.append(table_line(["**DTW cosine distance to speech**", *(f"**{report['distance'][s]:.3f}**"
                                                                     for s in sources)]))
    utterances = report["sources"][sources[0]]["utterances"]
    parts = ["## Text branch against speech (unified-encoder interface)",
             f"The encoder's hidden states pooled over LSD segments of {report['split']} ({utterances} utterances) "
             "against the text branch's vectors of the same transcripts, aligned by dynamic time warping on "
             "cosine distance.", "\n".join(lines),
             f"Made by `{report['command']}`." if report.get("command") else ""]
    return "\n\n".join(p for p in parts if p) + "\n"
