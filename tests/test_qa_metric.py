"""Short-answer accuracy: the answer must appear in the response as whole words."""

from __future__ import annotations

import pytest

from speechllm_cli.metrics.qa import answer_accuracy, contains_answer


@pytest.mark.parametrize(("answer", "response", "right"), [
    ("paris", "the capital of france is paris", True),
    ("paris", "paris", True),
    ("buenos", "it is buenos aires", True),
    ("new", "the opposite of old is newer", False),
    ("cold", "what is the opposite of hot", False),
    ("", "anything", False),
    ("buenos aires", "buenos aires is the capital", True),
    ("buenos aires", "buenos is not aires", False),
])
def test_contains_answer_matches_whole_words(answer: str, response: str, right: bool) -> None:
    assert contains_answer(answer, response) is right


def test_answer_accuracy_is_the_share_right_and_refuses_mismatched_or_empty_input() -> None:
    assert answer_accuracy(["paris", "cold", "lima"], ["paris it is", "hot", "lima"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="2 answers against 1 responses"):
        answer_accuracy(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no answers"):
        answer_accuracy([], [])
