"""WER/CER scoring, the error listing and the results table, checked against hand-counted examples."""

from __future__ import annotations

import json

import pytest

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.metrics.asr import ErrorCounts, score_asr
from speechllm_cli.metrics.results import ResultRow, render_results


def _section(listing: str, heading: str) -> list[str]:
    """The lines under one ``## heading`` of the listing, up to the next blank line."""
    block = listing.split(f"## {heading}\n", 1)[1]
    return block.split("\n\n", 1)[0].splitlines()


def test_one_substitution_and_one_insertion() -> None:
    score, listing = score_asr([("u1", "a b c d", "a x c d e")])
    assert score.words == ErrorCounts(substitutions=1, deletions=0, insertions=1, hits=3)
    assert score.words.ref_units == 4
    assert score.wer == pytest.approx(0.5)
    assert "a (b->x) c d (*->e)" in listing
    assert "u1  ref 4  S 1  D 0  I 1  WER 50.00%" in listing


def test_corpus_wer_is_total_errors_over_total_reference_words() -> None:
    rows = [
        ("long", "one two three four five six", "one two three four five six"),  # 0 / 6
        ("mid", "a b c d", "a x c d e"),                                          # 2 / 4
        ("short", "hello", ""),                                                   # 1 / 1
    ]
    score, _ = score_asr(rows)
    mean_of_utterance_rates = (0 / 6 + 2 / 4 + 1 / 1) / 3
    assert score.wer == pytest.approx(3 / 11)
    assert score.wer != pytest.approx(mean_of_utterance_rates)
    assert (score.num_utts, score.words.errors, score.words.ref_units) == (3, 3, 11)


def test_cer_ignores_whitespace() -> None:
    score, _ = score_asr([("u1", "ab cd", "ab ce")])
    assert score.cer == pytest.approx(1 / 4)  # 1 substitution over a, b, c, d; the space is not a char
    assert score.chars.ref_units == 4

    resegmented, _ = score_asr([("u1", "ab cd", "abcd")])
    assert resegmented.cer == 0.0
    assert resegmented.wer == pytest.approx(1.0)  # (ab->abcd) (cd->*)


def test_whitespace_runs_and_tabs_separate_words() -> None:
    score, _ = score_asr([("u1", " a  b\tc ", "a b c")])
    assert score.wer == 0.0 and score.cer == 0.0


def test_empty_hypothesis_is_all_deletions() -> None:
    score, listing = score_asr([("u1", "a b c", "")])
    assert score.words == ErrorCounts(deletions=3)
    assert score.wer == pytest.approx(1.0)
    assert score.chars == ErrorCounts(deletions=3)
    assert "(a->*) (b->*) (c->*)" in listing


def test_empty_reference_counts_insertions_per_one() -> None:
    score, listing = score_asr([("u1", "", "uh uh")])
    assert score.words == ErrorCounts(insertions=2)
    assert score.words.ref_units == 0
    assert score.wer == pytest.approx(2.0)
    assert "(*->uh) (*->uh)" in listing

    silent, listing = score_asr([("u1", "", "")])
    assert silent.wer == 0.0 and silent.cer == 0.0
    assert "(no words)" in listing


def test_empty_reference_adds_insertions_to_the_corpus() -> None:
    score, _ = score_asr([("u1", "a b c d", "a b c d"), ("u2", "", "yes yes")])
    assert score.words.insertions == 2
    assert score.wer == pytest.approx(2 / 4)


def test_summary_is_json_ready_and_carries_insertions() -> None:
    score, _ = score_asr([("u1", "a b c d", "a x c d e"), ("u2", "", "la la la")])
    summary = json.loads(json.dumps(score.as_dict()))
    assert summary["insertions"] == 4
    assert {k: summary[k] for k in ("num_utts", "substitutions", "deletions", "ref_words")} == {
        "num_utts": 2, "substitutions": 1, "deletions": 0, "ref_words": 4}
    assert summary["wer"] == pytest.approx(5 / 4)
    assert summary["cer"] == pytest.approx(score.cer)


def test_listing_header_shows_rates_and_insertions_apart() -> None:
    _, listing = score_asr([("u1", "a b c d", "a x c d e")])
    header = listing.split("\n\n", 1)[0]
    assert "%WER 50.00 [2 errors / 4 ref words]  S 1  D 0  I 1" in header
    assert "(insertions = 25.00% of ref words)" in header
    assert "%CER" in header


def test_listing_ranks_the_most_frequent_errors() -> None:
    rows = [("u1", "a b c", "a x y"), ("u2", "b b q", "x x q z"), ("u3", "d e", "e")]
    _, listing = score_asr(rows)
    assert _section(listing, "Most frequent substitutions") == ["     3  (b->x)", "     1  (c->y)"]
    assert _section(listing, "Most frequent insertions") == ["     1  (*->z)"]
    assert _section(listing, "Most frequent deletions") == ["     1  (d->*)"]


def test_listing_keeps_input_order() -> None:
    _, listing = score_asr([("zeta", "a", "a"), ("alpha", "b", "b")])
    assert listing.index("zeta  ref") < listing.index("alpha  ref")


@pytest.mark.parametrize("rows", [[], [("u1", "a", "a"), ("u1", "b", "b")]])
def test_bad_input_is_reported(rows: list[tuple[str, str, str]]) -> None:
    with pytest.raises(SpeechLLMError):
        score_asr(rows)


def _table(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


ROWS = [
    ResultRow("tasu", "test-clean", {"wer": 0.0512, "cer": 0.02}, "speechllm decode --system tasu"),
    ResultRow("baseline", "test-other", {"wer": 0.2}, "speechllm decode --system baseline"),
    ResultRow("tasu", "test-other", {"wer": 0.10104}, "speechllm decode --system tasu"),
    ResultRow("tasu", "dev", {"cer": 0.01}, "speechllm decode --system tasu --split dev"),
]


def test_results_table_cells_missing_and_order() -> None:
    table = _table(render_results("LibriSpeech", ROWS))
    assert table == [
        ["System", "test-clean", "test-other", "dev"],
        ["---", "---:", "---:", "---:"],
        ["tasu", "5.12", "10.10", "-"],
        ["baseline", "-", "20.00", "-"],
    ]


def test_results_list_each_systems_commands() -> None:
    markdown = render_results("LibriSpeech", ROWS)
    commands = markdown.split("### Commands\n\n", 1)[1].splitlines()
    assert commands == [
        "- tasu",
        "  - test-clean, test-other: `speechllm decode --system tasu`",
        "  - dev: `speechllm decode --system tasu --split dev`",
        "- baseline",
        "  - test-other: `speechllm decode --system baseline`",
    ]
    assert markdown.startswith("## LibriSpeech\n")


def test_results_render_any_metric_key() -> None:
    rows = [ResultRow("slu", "slurp", {"intent_accuracy": 0.875}, "speechllm decode --recipe slurp")]
    assert _table(render_results("SLURP", rows, metric="intent_accuracy"))[2] == ["slu", "87.50"]


def test_results_reject_two_rows_for_one_cell() -> None:
    with pytest.raises(SpeechLLMError, match="tasu"):
        render_results("x", [ROWS[0], ROWS[0]])
