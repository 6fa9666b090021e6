"""The text-speech gap table of RESULTS.md: Spearman's rho of log M with accuracy, rows and plot."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from speechllm_cli.metrics.gap_report import GapRow, correlation, plot_gap, render_gap, spearman


def _row(name: str, m: float, wer: float | None, speech_acc: float = 0.5) -> GapRow:
    return GapRow(name, "align", 0.1, m, speech_acc, 0.9, {} if wer is None else {"dev": wer, "test": wer + 0.1},
                  f"make {name}")


def test_spearman_on_monotone_tied_and_degenerate_data() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [9, 1, 0.5, -3]) == pytest.approx(-1.0)
    # ranks of y: 1, 2.5, 2.5, 4 -> rho is the Pearson correlation of the ranks
    assert spearman([1, 2, 3, 4], [5, 7, 7, 9]) == pytest.approx(0.9486833, abs=1e-6)
    assert spearman([1, 2], [3, 4]) is None
    assert spearman([1, 2, 3], [5, 5, 5]) is None
    with pytest.raises(ValueError, match="3 x values against 2"):
        spearman([1, 2, 3], [1, 2])


def test_correlation_uses_the_systems_with_an_accuracy_and_log_m() -> None:
    rows = [_row("a", 0.5, 0.2, 0.3), _row("b", 1.0, 0.4, 0.6), _row("c", 2.0, 0.6, 0.5), _row("new", 0.1, None, 0.1)]
    assert rows[0].accuracy == pytest.approx(75.0) and rows[0].gap == pytest.approx(60.0)
    assert correlation(rows, lambda row: row.accuracy) == (pytest.approx(-1.0), 3)
    assert correlation(rows, lambda row: row.speech_acc) == (pytest.approx(0.8), 4)


def test_table_names_every_system_with_accuracies_gap_f_m_and_the_correlations(tmp_path: Path) -> None:
    rows = [_row("calibrated", 2.0, 0.6, 0.2), _row("salad", 1.0, 0.3, 0.4), _row("other", 1.5, None, 0.3)]
    text = render_gap(rows, "plots/gap.png")
    assert "| salad | align | 40.0 | 90.0 | 50.0 | 0.1000 | 1.0000 | 0.000 | 30.00 | 40.00 | 65.00 |" in text
    assert f"| other | align | 30.0 | 90.0 | 60.0 | 0.1000 | 1.5000 | {math.log(1.5):.3f} | - | - | - |" in text
    assert "held-out speech accuracy over 3 systems: **-1.00**" in text
    assert "test word accuracy: undefined over 2 systems" in text and "- `make salad`" in text
    plot_gap(rows, tmp_path / "gap.png")
    assert (tmp_path / "gap.png").stat().st_size > 1000
