"""The King James Bible (public domain), read from Debian's ``bible-kjv`` package."""

from __future__ import annotations

import random
import shutil
import subprocess

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.data.text_domains.base import TextItem


def kjv_items(seed: int) -> list[TextItem]:
    """All distinct verses, shuffled with ``seed``; the verse reference is dropped."""
    if shutil.which("bible") is None:
        raise SpeechLLMError("bible: not installed; the kjv text domain needs Debian's bible-kjv (run tools/setup.sh)")
    result = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], capture_output=True, check=False)
    if result.returncode != 0:
        raise SpeechLLMError(f"bible failed: {result.stderr.decode(errors='replace').strip()}")
    verses: dict[str, None] = {}
    for line in result.stdout.decode("utf-8", errors="replace").splitlines():
        _, _, text = line.partition(" ")
        text = " ".join(text.split())
        if text:
            verses[text] = None
    items = [TextItem(text) for text in verses]
    random.Random(seed).shuffle(items)
    return items
