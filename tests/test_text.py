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
