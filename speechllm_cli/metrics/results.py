"""Markdown result tables for a recipe's ``RESULTS.md``: one metric, systems by test sets, with commands.

Every number in a results table must be reproducible, so each row carries the exact command line that
produced its hypotheses and the table is followed by those commands. The renderer knows nothing about
ASR: any metric stored as a fraction (WER, CER, intent accuracy, SLU-F1) is shown in percent by key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from speechllm_cli.common.errors import SpeechLLMError

MISSING = "-"
"""Shown where a system has no score for a test set (not run, or the metric does not apply)."""


@dataclass(frozen=True)
class ResultRow:
    """The scores of one system on one test set, and the command that decoded it."""

    system: str
    test_set: str
    metrics: dict[str, float]
    """Metric key -> value as a fraction (0.0512 for 5.12%)."""
    command: str


def render_results(title: str, rows: Sequence[ResultRow], metric: str = "wer",
                   extra: tuple[str, dict[str, str]] | None = None) -> str:
    """Markdown: a systems x test-sets table of ``metric`` in percent, then each system's commands.

    ``extra`` adds one last column (title, system -> text), e.g. what a system cost to train.

    Systems and test sets keep their first-seen order, so a rerun renders the same text and diffs of
    ``RESULTS.md`` show only real changes. Two rows for the same system and test set are ambiguous and
    rejected rather than one silently winning.
    """
    cells = _cells(rows)
    systems = first_seen(row.system for row in rows)
    test_sets = first_seen(row.test_set for row in rows)
    parts = [
        f"## {title}",
        f"`{metric}` in percent; `{MISSING}` where a system has no score for a test set.",
        _table(systems, test_sets, {key: row.metrics.get(metric) for key, row in cells.items()}, extra),
        "### Commands",
        _commands(systems, rows),
    ]
    return "\n\n".join(parts) + "\n"


def _cells(rows: Sequence[ResultRow]) -> dict[tuple[str, str], ResultRow]:
    cells: dict[tuple[str, str], ResultRow] = {}
    for row in rows:
        key = (row.system, row.test_set)
        if key in cells:
            raise SpeechLLMError(f"two results for system {row.system!r} on test set {row.test_set!r}")
        cells[key] = row
    return cells


def first_seen(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _table(systems: list[str], test_sets: list[str], values: dict[tuple[str, str], float | None],
           extra: tuple[str, dict[str, str]] | None = None) -> str:
    titles = [extra[0]] if extra else []
    lines = [
        table_line(["System", *test_sets, *titles]),
        table_line(["---", *("---:" for _ in [*test_sets, *titles])], escape=False),
    ]
    for system in systems:
        cells = [_percent(values.get((system, t))) for t in test_sets]
        if extra:
            cells.append(extra[1].get(system, MISSING))
        lines.append(table_line([system, *cells]))
    return "\n".join(lines)


def table_line(cells: Sequence[str], escape: bool = True) -> str:
    """A pipe inside a system or test-set name would split the cell, so it is escaped."""
    return "| " + " | ".join(cell.replace("|", "\\|") if escape else cell for cell in cells) + " |"


def _percent(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.2f}"


def _commands(systems: list[str], rows: Sequence[ResultRow]) -> str:
    """Each system's distinct commands, with the test sets each one produced."""
    lines: list[str] = []
    for system in systems:
        by_command: dict[str, list[str]] = {}
        for row in rows:
            if row.system == system:
                by_command.setdefault(row.command, []).append(row.test_set)
        lines.append(f"- {system}")
        lines += [f"  - {', '.join(sets)}: {code_span(command)}" for command, sets in by_command.items()]
    return "\n".join(lines)


def code_span(text: str) -> str:
    """Inline code that survives backticks in the command (a fence longer than any run inside)."""
    if not text:
        return "(command not recorded)"
    fence = "`" * (1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
