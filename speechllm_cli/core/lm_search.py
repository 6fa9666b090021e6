"""Beam search over label-synchronous posteriors with a word n-gram LM (shallow fusion).

Greedy CTC writes what it hears in the spelling its head learned ("shoping", "sattery"); a search that
weighs known words of the target text fixes such near misses without touching the encoder. It runs on
the LSD rows the front end caches (one row per non-blank run, plus uncertain blank frames), where each row
emits at most one unit: the most probable single path through those rows is greedy CTC's output. Paths
that spell the same units are merged (their acoustic probabilities summed), as in CTC prefix search, so
without an LM the search finds the most probable unit sequence, which is greedy's wherever rows are sure.
Units that start with ``▁`` start a word; a word is scored by the LM when the next one starts, and the last
one at the end with ``</s>``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from speechllm_cli.core.ngram import BOS, EOS, UNK, NgramLM

WORD_START = "\u2581"


@dataclass(frozen=True)
class SearchSettings:
    lm_weight: float
    """Scale of the LM's natural-log probability against the acoustic one."""
    word_bonus: float
    """Added per word, against the LM's preference for short outputs."""
    beam: int
    """Hypotheses kept after each row."""
    unit_beam: int
    """Units tried per row (the most probable ones, blank aside)."""
    min_prob: float
    """Units below this posterior are not tried (blank, the no-emission choice, always is)."""


@dataclass(frozen=True)
class _Hyp:
    acoustic: float
    lm: float
    history: tuple[str, ...]
    word: str
    """The word being spelled, without its ``▁``; empty before the first unit."""
    astray: float = 0.0
    """The LM's price of an unknown word, charged ahead while ``word`` begins no known word (so that a
    misspelling does not outlive its alternatives in the beam until its next word starts)."""

    def score(self) -> float:
        return self.acoustic + self.lm + self.astray


class LMSearch:
    """A word LM and a unit inventory, searched together; one instance decodes any number of utterances."""

    def __init__(self, lm: NgramLM, units: Sequence[str], blank_id: int, settings: SearchSettings) -> None:
        self.lm, self.units, self.blank_id, self.settings = lm, list(units), blank_id, settings
        self.prefixes = {word[:end] for word in lm.vocabulary for end in range(len(word) + 1)}

    def decode(self, rows: torch.Tensor) -> list[int]:
        """The best unit sequence for LSD rows [L, V] of probabilities."""
        log_rows = rows.float().clamp_min(1e-12).log()
        beams: dict[tuple[int, ...], _Hyp] = {(): _Hyp(0.0, 0.0, (BOS,), "")}
        for log_row in log_rows:
            beams = self._step(beams, log_row)
        return list(max(beams.items(), key=lambda item: self._final(item[1]))[0])

    def _step(self, beams: dict[tuple[int, ...], _Hyp], log_row: torch.Tensor) -> dict[tuple[int, ...], _Hyp]:
        candidates = self._candidates(log_row)
        blank = float(log_row[self.blank_id])
        grown: dict[tuple[int, ...], _Hyp] = {}
        for prefix, hyp in beams.items():
            self._merge(grown, prefix, hyp, hyp.acoustic + blank)
            for unit, log_p in candidates:
                self._merge(grown, (*prefix, unit), self._extend(hyp, unit), hyp.acoustic + log_p)
        kept = sorted(grown.items(), key=lambda item: item[1].score(), reverse=True)[:self.settings.beam]
        return dict(kept)

    def _candidates(self, log_row: torch.Tensor) -> list[tuple[int, float]]:
        row = log_row.clone()
        row[self.blank_id] = -math.inf
        values, ids = row.topk(min(self.settings.unit_beam, row.numel() - 1))
        floor = math.log(self.settings.min_prob)
        return [(int(i), float(v)) for v, i in zip(values, ids, strict=True) if float(v) >= floor]

    @staticmethod
    def _merge(grown: dict[tuple[int, ...], _Hyp], prefix: tuple[int, ...], hyp: _Hyp, acoustic: float) -> None:
        """Add a path's probability to its unit sequence (the LM part depends on the sequence alone)."""
        seen = grown.get(prefix)
        total = acoustic if seen is None else _log_add(seen.acoustic, acoustic)
        grown[prefix] = _Hyp(total, hyp.lm, hyp.history, hyp.word, hyp.astray)

    def _extend(self, hyp: _Hyp, unit: int) -> _Hyp:
        piece = self.units[unit]
        if not piece.startswith(WORD_START):
            return self._spelling(hyp.acoustic, hyp.lm, hyp.history, hyp.word + piece)
        lm, history = self._word_done(hyp)
        return self._spelling(hyp.acoustic, lm, history, piece[len(WORD_START):])

    def _spelling(self, acoustic: float, lm: float, history: tuple[str, ...], word: str) -> _Hyp:
        known = word in self.prefixes
        astray = 0.0 if known else self.settings.lm_weight * self.lm.log_prob(history, UNK)
        return _Hyp(acoustic, lm, history, word, astray)

    def _word_done(self, hyp: _Hyp) -> tuple[float, tuple[str, ...]]:
        """LM score and history once the word being spelled ends (nothing changes if none is)."""
        if not hyp.word:
            return hyp.lm, hyp.history
        settings = self.settings
        lm = hyp.lm + settings.lm_weight * self.lm.log_prob(hyp.history, hyp.word) + settings.word_bonus
        return lm, (*hyp.history, hyp.word)[-max(self.lm.order - 1, 1):]

    def _final(self, hyp: _Hyp) -> float:
        lm, history = self._word_done(hyp)
        return hyp.acoustic + lm + self.settings.lm_weight * self.lm.log_prob(history, EOS)


def _log_add(a: float, b: float) -> float:
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))
