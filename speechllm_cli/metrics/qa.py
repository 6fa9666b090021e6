"""Short-answer accuracy: a response is right when it contains the answer as a whole word.

Small instruct LLMs answer in a sentence ("the capital of france is paris") however they are asked, so an
exact match would score the phrasing, not the knowledge. Both sides go through the recipe's normalisation
first, so case and punctuation do not decide.
"""

from __future__ import annotations

from collections.abc import Sequence


def contains_answer(answer: str, response: str) -> bool:
    words = answer.split()
    tokens = response.split()
    return bool(words) and any(tokens[i:i + len(words)] == words for i in range(len(tokens) - len(words) + 1))


def answer_accuracy(answers: Sequence[str], responses: Sequence[str]) -> float:
    """The share of responses that contain their answer (normalised text on both sides)."""
    if len(answers) != len(responses):
        raise ValueError(f"{len(answers)} answers against {len(responses)} responses")
    if not answers:
        raise ValueError("no answers to score")
    return sum(contains_answer(a, r) for a, r in zip(answers, responses, strict=True)) / len(answers)
