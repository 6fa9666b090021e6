"""Text generators for corpora built without downloads, looked up by name.

Each generator returns a deterministic list of unique :class:`TextItem` for a seed, so recipes can
slice disjoint train/test/text-only sets from it.
"""

from __future__ import annotations

from collections.abc import Callable

from speechllm_cli.data.text_domains.base import TextItem
from speechllm_cli.data.text_domains.commands import command_items
from speechllm_cli.data.text_domains.commands_de import command_items_de
from speechllm_cli.data.text_domains.fortunes import fortune_items
from speechllm_cli.data.text_domains.kjv import kjv_items
from speechllm_cli.data.text_domains.questions import question_items
from speechllm_cli.data.text_domains.trivia import trivia_items

TextGenerator = Callable[[int], list[TextItem]]

GENERATORS: dict[str, TextGenerator] = {
    "kjv": kjv_items,
    "commands": command_items,
    "commands-de": command_items_de,
    "questions": question_items,
    "trivia": trivia_items,
    "fortunes": fortune_items,
}

__all__ = ["GENERATORS", "TextGenerator", "TextItem"]
