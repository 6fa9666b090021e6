"""Short spoken questions with one-word answers a small instruct LLM knows from text.

The text-speech gap (METHODS.md §4) needs a task the LLM does well when it reads the question: then a
system's failure on the spoken question is the speech path's, not the LLM's. SmolLM2-135M-Instruct
answered 14 of 15 capital questions and 13 of 15 opposite questions right from text in a first probe
(greedy, "Answer in one word."), so those two kinds are used, each phrased several ways. The target
is the answer word; a response is right when it contains it.
"""

from __future__ import annotations

import random

from speechllm_cli.data.text_domains.base import TextItem

_CAPITALS = [
    ("france", "paris"), ("italy", "rome"), ("spain", "madrid"), ("germany", "berlin"), ("japan", "tokyo"),
    ("england", "london"), ("russia", "moscow"), ("egypt", "cairo"), ("china", "beijing"), ("greece", "athens"),
    ("ireland", "dublin"), ("portugal", "lisbon"), ("austria", "vienna"), ("norway", "oslo"), ("canada", "ottawa"),
    ("sweden", "stockholm"), ("denmark", "copenhagen"), ("finland", "helsinki"), ("poland", "warsaw"),
    ("hungary", "budapest"), ("belgium", "brussels"), ("the netherlands", "amsterdam"), ("scotland", "edinburgh"),
    ("wales", "cardiff"), ("peru", "lima"), ("cuba", "havana"), ("kenya", "nairobi"), ("thailand", "bangkok"),
    ("south korea", "seoul"), ("iran", "tehran"), ("iraq", "baghdad"), ("turkey", "ankara"),
    ("argentina", "buenos"), ("chile", "santiago"), ("india", "delhi"), ("australia", "canberra"),
]
_OPPOSITES = [
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("day", "night"), ("black", "white"), ("fast", "slow"),
    ("happy", "sad"), ("open", "closed"), ("old", "new"), ("left", "right"), ("wet", "dry"), ("early", "late"),
    ("full", "empty"), ("yes", "no"), ("in", "out"), ("on", "off"), ("high", "low"), ("long", "short"),
    ("hard", "soft"), ("heavy", "light"), ("rich", "poor"), ("strong", "weak"), ("thick", "thin"),
    ("win", "lose"), ("push", "pull"), ("buy", "sell"), ("love", "hate"), ("alive", "dead"), ("north", "south"),
    ("east", "west"), ("first", "last"), ("inside", "outside"), ("above", "below"), ("before", "after"),
    ("clean", "dirty"), ("loud", "quiet"), ("near", "far"), ("true", "false"), ("war", "peace"),
    ("friend", "enemy"), ("summer", "winter"), ("young", "old"), ("start", "finish"), ("question", "answer"),
]
_CAPITAL_FORMS = ["what is the capital of {}", "what is the capital city of {}", "name the capital of {}",
                  "which city is the capital of {}"]
_OPPOSITE_FORMS = ["what is the opposite of {}", "what word means the opposite of {}",
                   "tell me the opposite of {}", "what is the antonym of {}"]


def question_items(seed: int) -> list[TextItem]:
    """Every question once (each subject in every phrasing), in a seeded order; the target is the answer."""
    pairs = [(form.format(country), capital) for country, capital in _CAPITALS for form in _CAPITAL_FORMS]
    pairs += [(form.format(word), opposite) for word, opposite in _OPPOSITES for form in _OPPOSITE_FORMS]
    items = [TextItem(question, answer, "answer") for question, answer in pairs]
    random.Random(seed).shuffle(items)
    return items
