"""Text normalisation and the text generators of the mini corpus."""

from __future__ import annotations

import json

import pytest

from speechllm_cli.data.normalize import NormalizerConfig, normalize
from speechllm_cli.data.text_domains import GENERATORS


@pytest.mark.parametrize(("config", "text", "expected"), [
    (NormalizerConfig(), "And God said, Let there be light: and there was light.",
     "and god said let there be light and there was light"),
    (NormalizerConfig(), "I've 23 sheep-dogs, 3.5 kg!", "i've twenty three sheep dogs three point five kg"),
    (NormalizerConfig(punctuation="basic"), "Wait: 'Stop!' he said.", "wait 'stop!' he said."),
    (NormalizerConfig(lowercase=False, numbers="keep", punctuation="keep"), "  Keep  1 THIS. ", "Keep 1 THIS."),
    (NormalizerConfig(), "Ça coûte 21 euros", "ça coûte twenty one euros"),
])
def test_normalize(config: NormalizerConfig, text: str, expected: str) -> None:
    assert normalize(text, config) == expected


def test_numbers_are_spelled_in_the_utterance_language() -> None:
    assert normalize("Il y a 21 chiens.", NormalizerConfig(), lang="fr") == "il y a vingt et un chiens"


def test_commands_are_unique_with_frames_whose_fillers_are_in_the_text() -> None:
    items = GENERATORS["commands"](0)
    assert len(items) == len({i.text for i in items}) >= 10_000
    for item in items[:500]:
        frame = json.loads(item.target)
        assert frame["scenario"] and frame["action"]
        for entity in frame["entities"]:
            assert entity["filler"] in item.text
    assert GENERATORS["commands"](0)[:50] == items[:50]
    assert GENERATORS["commands"](1)[:50] != items[:50]


def test_kjv_verses_without_references() -> None:
    items = GENERATORS["kjv"](0)
    assert len(items) > 30_000
    assert "In the beginning God created the heaven and the earth." in {i.text for i in items}
    assert not any(i.text[:3].rstrip().endswith(":") for i in items[:1000])


def test_fortunes_are_plain_everyday_sentences_and_a_missing_package_is_named(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    from speechllm_cli.common.errors import SpeechLLMError
    from speechllm_cli.data.text_domains import fortunes

    items = GENERATORS["fortunes"](0)
    assert len(items) == len({i.text for i in items}) > 3_000
    for item in items:
        assert 4 <= len(item.text.split()) <= 20 and item.text[-1] in ".!?" and "--" not in item.text
        assert not any(ch.isdigit() for ch in item.text)
    assert {i.text for i in GENERATORS["fortunes"](1)} == {i.text for i in items}
    assert GENERATORS["fortunes"](1)[:20] != items[:20]
    assert fortunes._sentences("Do it right now. It may be 2 late.\n\t\t-- Anon") == ["Do it right now."]
    monkeypatch.setattr(fortunes, "FOLDER", tmp_path)
    with pytest.raises(SpeechLLMError, match=f"^{tmp_path}/fortunes: not installed; .*Debian's fortunes"):
        fortunes.fortune_items(0)


def test_questions_are_unique_with_an_answer_that_the_question_does_not_give_away() -> None:
    items = GENERATORS["questions"](0)
    assert len(items) == len({i.text for i in items}) == 320
    for item in items:
        assert item.label == "answer" and item.target and item.target not in item.text.split()
    assert {i.text for i in GENERATORS["questions"](1)} == {i.text for i in items}
    assert GENERATORS["questions"](1)[:20] != items[:20]
    assert [i.target for i in items if i.text == "what is the capital of france"] == ["paris"]


def test_qa_text_sets_take_the_answer_and_count_questions_without_one(tmp_path) -> None:  # noqa: ANN001
    from speechllm_cli.data.manifests import BadInputPolicy
    from speechllm_cli.data.text_sets import TextSetConfig, build_text_set

    corpus = tmp_path / "corpora" / "qa.jsonl"
    corpus.parent.mkdir()
    corpus.write_text(json.dumps({"id": "q1", "text": "What is the capital of Peru?", "custom": {"answer": "Lima"}})
                      + "\n" + json.dumps({"id": "q2", "text": "What is the opposite of hot?", "custom": {}}) + "\n")
    rows, skipped = build_text_set("qa", TextSetConfig(corpus="qa", task="qa"), tmp_path, NormalizerConfig(),
                                   BadInputPolicy.skip)
    assert [(r["text"], r["target"], r["task"]) for r in rows] == [("what is the capital of peru", "Lima", "qa")]
    assert skipped == {"no_answer": 1}
