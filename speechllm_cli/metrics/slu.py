"""SLU metrics as SLURP defines them: scenario / action / intent accuracy, span F1 and SLU-F1.

SLU-F1 (Bastianelli et al., 2020) gives a prediction with the right entity type one true positive and
charges its filler's distance from the gold filler as fractional false positive and false negative;
it does so once with a word-level distance (word edit distance over the gold word count) and once with
a character-level one (Levenshtein distance over the longer string), and pools the two count tables.
Span F1 demands an exact (type, filler) match. Counts are micro-averaged over entity types.

A hypothesis that is not a JSON frame is scored as an empty prediction (wrong scenario, action and
intent, no entities) and counted, never raised.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import jiwer


@dataclass(frozen=True)
class Frame:
    scenario: str
    action: str
    entities: list[tuple[str, str]]
    """(type, filler) pairs, in order."""

    @property
    def intent(self) -> str:
        return f"{self.scenario}_{self.action}"


EMPTY = Frame("", "", [])


def parse_frame(text: str) -> Frame | None:
    """The frame in ``text``, or None when it is not a JSON object with the frame's fields."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("entities", []), list):
        return None
    entities = []
    for entity in data.get("entities", []):
        if not isinstance(entity, dict):
            return None
        entities.append((str(entity.get("type", "unknown")), str(entity.get("filler", ""))))
    return Frame(str(data.get("scenario", "")), str(data.get("action", "")), entities)


def word_distance(gold: str, predicted: str) -> float:
    """Word edit distance over the gold word count (not capped: insertions can exceed 1)."""
    if not gold.split():
        return 0.0 if not predicted.split() else float(len(predicted.split()))
    return float(jiwer.wer(gold, predicted)) if predicted.split() else 1.0


def char_distance(gold: str, predicted: str) -> float:
    """Levenshtein distance over the length of the longer string, in [0, 1]."""
    longest = max(len(gold), len(predicted))
    if longest == 0:
        return 0.0
    previous = list(range(len(predicted) + 1))
    for i, a in enumerate(gold, 1):
        current = [i]
        for j, b in enumerate(predicted, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return previous[-1] / longest


@dataclass
class Counts:
    tp: float = 0.0
    fp: float = 0.0
    fn: float = 0.0

    def add(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def f1(self) -> float:
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def span_counts(gold: list[tuple[str, str]], predicted: list[tuple[str, str]]) -> Counts:
    remaining = list(gold)
    counts = Counts()
    for entity in predicted:
        if entity in remaining:
            remaining.remove(entity)
            counts.tp += 1
        else:
            counts.fp += 1
    counts.fn += len(remaining)
    return counts


def distance_counts(gold: list[tuple[str, str]], predicted: list[tuple[str, str]],
                    distance: Callable[[str, str], float]) -> Counts:
    """Each predicted entity takes the closest remaining gold entity of its type (first on ties)."""
    remaining = list(gold)
    counts = Counts()
    for kind, filler in predicted:
        candidates = [(distance(g_filler, filler), index) for index, (g_kind, g_filler) in enumerate(remaining)
                      if g_kind == kind]
        if not candidates:
            counts.fp += 1
            continue
        best, index = min(candidates)
        remaining.pop(index)
        counts.tp += 1
        counts.fp += best
        counts.fn += best
    counts.fn += len(remaining)
    return counts


@dataclass(frozen=True)
class SLUScore:
    utterances: int
    invalid_json: int
    scenario_acc: float
    action_acc: float
    intent_acc: float
    span_f1: float
    slu_f1: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_slu(pairs: Iterable[tuple[str, str]]) -> SLUScore:
    """Score (reference, hypothesis) frame strings; references must parse, hypotheses may not."""
    n = invalid = scenario = action = intent = 0
    span, word, char = Counts(), Counts(), Counts()
    for reference, hypothesis in pairs:
        gold = parse_frame(reference)
        if gold is None:
            raise ValueError(f"reference is not an SLU frame: {reference[:80]!r}")
        predicted = parse_frame(hypothesis)
        if predicted is None:
            invalid += 1
            predicted = EMPTY
        n += 1
        scenario += gold.scenario == predicted.scenario
        action += gold.action == predicted.action
        intent += gold.intent == predicted.intent
        span = span.add(span_counts(gold.entities, predicted.entities))
        word = word.add(distance_counts(gold.entities, predicted.entities, word_distance))
        char = char.add(distance_counts(gold.entities, predicted.entities, char_distance))
    share = (lambda k: k / n) if n else (lambda k: 0.0)
    return SLUScore(n, invalid, share(scenario), share(action), share(intent), span.f1(), word.add(char).f1())
