"""The distillation table of RESULTS.md: Spearman's rho of log M with word accuracy, rows and plot."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from speechllm_cli.metrics.gap_report import GapRow, correlation, plot_gap, render_gap, spearman


def _row(name: str, m: float, wer: float | None) -> GapRow:
    return GapRow(name, "align", 0.1, m, {} if wer is None else {"dev": wer, "test": wer + 0.1}, f"make {name}")


def test_spearman_on_monotone_tied_and_degenerate_data() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [9, 1, 0.5, -3]) == pytest.approx(-1.0)
    # ranks of y: 1, 2.5, 2.5, 4 -> rho is the Pearson correlation of the ranks
    assert spearman([1, 2, 3, 4], [5, 7, 7, 9]) == pytest.approx(0.9486833, abs=1e-6)
    assert spearman([1, 2], [3, 4]) is None
    assert spearman([1, 2, 3], [5, 5, 5]) is None
    with pytest.raises(ValueError, match="3 x values against 2"):
        spearman([1, 2, 3], [1, 2])


def test_correlation_uses_decoded_systems_and_log_m() -> None:
    rows = [_row("a", 0.5, 0.2), _row("b", 1.0, 0.4), _row("c", 2.0, 0.6), _row("undecoded", 0.1, None)]
    assert rows[0].accuracy == pytest.approx(75.0)
    rho, points = correlation(rows)
    assert (rho, points) == (pytest.approx(-1.0), 3)


def test_table_names_every_system_with_f_m_and_the_correlation(tmp_path: Path) -> None:
    rows = [_row("calibrated", 2.0, 0.6), _row("salad", 1.0, 0.3), _row("other", 1.5, None)]
    text = render_gap(rows, "plots/gap.png")
    assert "| salad | align | 30.00 | 40.00 | 65.00 | 0.1000 | 1.0000 | 0.000 |" in text
    assert "| other | align | - | - | - | 0.1000 | 1.5000 | 0.405 |" in text
    assert f"| {2.0:.4f} | {math.log(2.0):.3f} |" in text
    assert "undefined over 2 decoded systems" in text and "- `make salad`" in text
    assert plot_gap(rows, tmp_path / "gap.png") and (tmp_path / "gap.png").stat().st_size > 1000
    assert not plot_gap([_row("x", 1.0, None)], tmp_path / "none.png") and not (tmp_path / "none.png").exists()
