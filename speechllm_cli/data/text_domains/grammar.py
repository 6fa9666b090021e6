"""Small generative grammars of assistant commands, with a SLURP-style frame for every sentence.

A template fixes the scenario and action; its slots are the entities. The frame is
``{"scenario", "action", "entities": [{"type", "filler"}]}`` as SLURP annotates it, serialised without
spaces because every character of a target is a token the LLM has to emit. Grammars of different
languages share scenarios, actions and slot types, so a model trained on one language's frames can be
scored on another's: that is what cross-lingual SLU runs need.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass

from speechllm_cli.data.text_domains.base import TextItem

POOL_SIZE = 20_000
_SLOT = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Grammar:
    slots: dict[str, list[str]]
    """Slot type -> the fillers it can take."""
    prefixes: list[str]
    """Politeness prefixes for commands."""
    question_prefixes: list[str]
    templates: list[tuple[str, str, str, bool]]
    """``(scenario, action, pattern with {slot} holes, takes a command prefix)``."""


def frame_json(scenario: str, action: str, entities: list[dict[str, str]]) -> str:
    """The SLU target string, in the one serialisation training and scoring share."""
    frame = {"scenario": scenario, "action": action, "entities": entities}
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def _realise(grammar: Grammar, pattern: str, rng: random.Random) -> tuple[str, list[dict[str, str]]]:
    entities: list[dict[str, str]] = []

    def fill(match: re.Match[str]) -> str:
        filler = rng.choice(grammar.slots[match.group(1)])
        entities.append({"type": match.group(1), "filler": filler})
        return filler

    return _SLOT.sub(fill, pattern), entities


def grammar_items(grammar: Grammar, seed: int) -> list[TextItem]:
    """Up to ``POOL_SIZE`` distinct commands, templates drawn uniformly, fillers at random."""
    rng = random.Random(seed)
    seen: dict[str, TextItem] = {}
    for _ in range(POOL_SIZE * 5):
        if len(seen) >= POOL_SIZE:
            break
        scenario, action, pattern, is_command = rng.choice(grammar.templates)
        body, entities = _realise(grammar, pattern, rng)
        text = rng.choice(grammar.prefixes if is_command else grammar.question_prefixes) + body
        if text not in seen:
            seen[text] = TextItem(text, frame_json(scenario, action, entities))
    return list(seen.values())
