"""A word n-gram language model estimated from a recipe's text, for shallow fusion in CTC search.

The text-only methods assume text of the target domain is at hand; an LM of that text is the classic way an
ASR system uses it, and the floor a speech LLM trained on the same text should beat. Interpolated
Kneser-Ney with one absolute discount: lower orders count the contexts a word follows, not how often it
occurs, so a word frequent only after one neighbour does not dominate back-off. N-grams that start the
sentence keep their raw counts (nothing can precede ``<s>``). A word never seen gets only the share the
discount sets aside for the uniform distribution over the vocabulary plus ``<unk>``: the penalty that
makes a search prefer a known spelling.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


class NgramLM:
    """Log-probabilities (natural log) of a word given up to ``order - 1`` preceding words."""

    def __init__(self, order: int, counts: list[dict[tuple[str, ...], int]], discount: float) -> None:
        """``counts[k]``: the adjusted count of every (k + 1)-gram (raw for the top order and ``<s>``-initial)."""
        self.order, self.discount = order, discount
        self._counts = counts
        self._totals: list[dict[tuple[str, ...], int]] = [defaultdict(int) for _ in counts]
        self._types: list[dict[tuple[str, ...], int]] = [defaultdict(int) for _ in counts]
        for k, grams in enumerate(counts):
            for gram, count in grams.items():
                self._totals[k][gram[:-1]] += count
                self._types[k][gram[:-1]] += 1
        self.vocabulary = frozenset(gram[0] for gram in counts[0]) - {BOS}
        self._uniform = 1.0 / (len(self.vocabulary | {UNK}))
        self.log_prob = lru_cache(maxsize=1 << 18)(self._log_prob)

    @classmethod
    def estimate(cls, sentences: Iterable[Sequence[str]], order: int = 3, discount: float = 0.75) -> NgramLM:
        """The model of tokenized sentences (each scored with ``</s>`` at its end)."""
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        if not 0.0 < discount < 1.0:
            raise ValueError(f"discount must lie in (0, 1), got {discount}")
        raw: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order)]
        for sentence in sentences:
            tokens = (BOS, *sentence, EOS)
            for end in range(1, len(tokens)):
                for k in range(min(order, end + 1)):
                    raw[k][tokens[end - k:end + 1]] += 1
        if not raw[0]:
            raise ValueError("no sentence to estimate a language model from")
        return cls(order, _adjusted(raw), discount)

    def _log_prob(self, history: tuple[str, ...], word: str) -> float:
        word = word if word in self.vocabulary else UNK
        return math.log(self._prob(history[len(history) - self.order + 1:] if self.order > 1 else (), word))

    def _prob(self, history: tuple[str, ...], word: str) -> float:
        k = len(history)
        if k == 0:
            total = self._totals[0][()]
            kept = max(self._counts[0].get((word,), 0) - self.discount, 0.0)
            return kept / total + self.discount * self._types[0][()] / total * self._uniform
        lower = self._prob(history[1:], word)
        total = self._totals[k].get(history, 0)
        if total == 0:
            return lower
        kept = max(self._counts[k].get((*history, word), 0) - self.discount, 0.0)
        return kept / total + self.discount * self._types[k][history] / total * lower

    def sentence_log_prob(self, words: Sequence[str]) -> float:
        """Log-probability of a whole sentence, ``</s>`` included."""
        history: tuple[str, ...] = (BOS,)
        total = 0.0
        for word in (*words, EOS):
            total += self.log_prob(history, word)
            history = (*history, word)[-(self.order - 1):] if self.order > 1 else ()
        return total


def _adjusted(raw: list[Counter[tuple[str, ...]]]) -> list[dict[tuple[str, ...], int]]:
    """Kneser-Ney counts: below the top order, the number of distinct words seen before an n-gram."""
    adjusted: list[dict[tuple[str, ...], int]] = [dict(grams) for grams in raw]
    for k in range(len(raw) - 1):
        continuation: Counter[tuple[str, ...]] = Counter(gram[1:] for gram in raw[k + 1])
        adjusted[k] = {gram: count if gram[0] == BOS else continuation.get(gram, 0)
                       for gram, count in raw[k].items()}
        adjusted[k] = {gram: count for gram, count in adjusted[k].items() if count > 0}
    return adjusted
