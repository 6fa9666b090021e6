"""Everyday questions for teaching a speech LLM to answer, in categories the spoken QA test never asks.

Multi-task alignment (METHODS.md 4b) trains on questions whose answers the original LLM writes itself
from their text, so what counts is that they are questions, varied in form, and disjoint from the test's
capitals and opposites: colours, animals, numbers, the calendar, plurals, and what things are for. No
target is kept: the teacher's reply is the target, whether or not it is right.
"""

from __future__ import annotations

import random

from speechllm_cli.data.text_domains.base import TextItem

_THINGS = ["the sky", "grass", "snow", "a banana", "a lemon", "a tomato", "an orange", "coal", "milk", "the sun",
           "a strawberry", "a frog", "a carrot", "chocolate", "an elephant", "a pumpkin", "a cherry", "the sea"]
_ANIMALS = ["dog", "cat", "cow", "horse", "sheep", "pig", "duck", "lion", "owl", "frog", "goat", "chicken",
            "spider", "bird", "snake", "fish", "ant", "bee", "mouse", "bear", "wolf", "monkey"]
_NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
_DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december"]
_NOUNS = ["mouse", "child", "foot", "tooth", "man", "woman", "goose", "box", "city", "knife", "leaf", "wolf",
          "person", "baby", "fish", "bus", "glass", "story"]
_TOOLS = ["a hammer", "a spoon", "a key", "an umbrella", "a pencil", "a clock", "a ladder", "a towel", "soap",
          "a map", "a bucket", "scissors", "a fork", "a camera", "a needle", "a broom"]

_FORMS: list[tuple[list[str], list[str]]] = [
    (["what colour is {}", "what color is {} usually", "tell me the colour of {}"], _THINGS),
    (["what sound does a {} make", "what noise does a {} make"], _ANIMALS),
    (["how many legs does a {} have", "where does a {} live", "what does a {} eat", "what is a baby {} called"],
     _ANIMALS),
    (["what comes after {}", "which day is after {}", "what day comes before {}"], _DAYS),
    (["which month comes after {}", "how many days are there in {}", "what season is {} in"], _MONTHS),
    (["what is the plural of {}", "how do you spell {}"], _NOUNS),
    (["what is {} used for", "why do people use {}", "where would you keep {}"], _TOOLS),
]


def _arithmetic() -> list[str]:
    return [form.format(a, b) for a in _NUMBERS for b in _NUMBERS
            for form in ("what is {} plus {}", "what is {} times {}")]


def trivia_items(seed: int) -> list[TextItem]:
    """Every question once, in a seeded order; no target (the LLM's own reply becomes it)."""
    questions = [form.format(filler) for forms, fillers in _FORMS for form in forms for filler in fillers]
    questions += _arithmetic()
    items = [TextItem(question) for question in dict.fromkeys(questions)]
    random.Random(seed).shuffle(items)
    return items
