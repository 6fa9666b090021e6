"""The word n-gram LM and the LM-fused search over label-synchronous posteriors."""

from __future__ import annotations

import math

import pytest
import torch

from speechllm_cli.core.lm_search import LMSearch, SearchSettings
from speechllm_cli.core.ngram import EOS, UNK, NgramLM

SENTENCES = ["turn on the lights", "turn off the lights", "set an alarm for six", "play some music",
             "turn on the music"]
UNITS = ["<blk>", "\u2581turn", "\u2581on", "\u2581the", "\u2581lights", "\u2581lites", "\u2581light", "s"]


def _lm(order: int = 3) -> NgramLM:
    return NgramLM.estimate([s.split() for s in SENTENCES], order=order)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("history", [("<s>",), ("turn", "on"), ("the",), ("never", "seen"), ()])
def test_every_history_gives_a_distribution_over_the_vocabulary(order: int, history: tuple[str, ...]) -> None:
    lm = _lm(order)
    words = [*sorted(lm.vocabulary), UNK]
    assert EOS in lm.vocabulary and "<s>" not in lm.vocabulary
    assert sum(math.exp(lm.log_prob(history, w)) for w in words) == pytest.approx(1.0, abs=1e-9)


def test_known_continuations_and_spellings_are_preferred() -> None:
    lm = _lm()
    assert lm.log_prob(("turn", "on"), "the") > lm.log_prob(("turn", "on"), "six")
    assert lm.sentence_log_prob("turn on the lights".split()) > lm.sentence_log_prob("turn on the lites".split()) + 3
    assert lm.log_prob(("the",), "lites") == lm.log_prob(("the",), "anything-unseen")


def test_estimation_refuses_what_it_cannot_model() -> None:
    with pytest.raises(ValueError, match="order"):
        NgramLM.estimate([["a"]], order=0)
    with pytest.raises(ValueError, match="no sentence"):
        NgramLM.estimate([], order=2)
    with pytest.raises(ValueError, match="discount"):
        NgramLM.estimate([["a"]], discount=1.0)


def _rows(*columns: dict[int, float]) -> torch.Tensor:
    """LSD rows: each a distribution with the given mass on units, the rest on blank."""
    rows = torch.zeros(len(columns), len(UNITS))
    for row, mass in zip(rows, columns, strict=True):
        for unit, p in mass.items():
            row[unit] = p
        row[0] = 1.0 - sum(mass.values())
    return rows


def _search(weight: float, bonus: float = 0.0) -> LMSearch:
    return LMSearch(_lm(), UNITS, 0, SearchSettings(weight, bonus, beam=8, unit_beam=4, min_prob=1e-4))


def test_without_the_lm_the_search_is_greedy_and_the_lm_fixes_a_near_miss() -> None:
    rows = _rows({1: 0.95}, {2: 0.95}, {3: 0.95}, {5: 0.55, 4: 0.40})
    assert _search(0.0).decode(rows) == [1, 2, 3, 5]
    assert _search(1.0).decode(rows) == [1, 2, 3, 4]


def test_a_word_spelled_in_two_units_is_scored_as_one_word() -> None:
    rows = _rows({1: 0.95}, {2: 0.95}, {3: 0.95}, {6: 0.5, 5: 0.45}, {7: 0.9})
    assert _search(1.0).decode(rows) == [1, 2, 3, 6, 7]


def test_a_row_can_emit_the_unit_of_the_row_before() -> None:
    rows = _rows({1: 0.95}, {1: 0.95})
    assert _search(0.0).decode(rows) == [1, 1]
    assert _search(0.0).decode(_rows()) == []
