"""Which utterances keep their speech under a speech budget.

Utterances are ranked by a hash of (seed, id), and a budget takes the top of that ranking: the choice
is reproducible, independent of file order, and nested (the 5 % set lies inside the 25 % set), so a
sweep over budgets adds speech rather than drawing a new sample at every point.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence


def budget_count(total: int, percent: float) -> int:
    """Utterances that ``percent`` % of ``total`` allows, rounded half up."""
    if not 0 <= percent <= 100:
        raise ValueError(f"a speech budget is a percentage in [0, 100], got {percent}")
    return min(total, math.floor(total * percent / 100 + 0.5))


def ranked(ids: Sequence[str], seed: int) -> list[str]:
    return sorted(ids, key=lambda i: hashlib.sha256(f"{seed}/{i}".encode()).hexdigest())


def speech_subset(ids: Sequence[str], percent: float, seed: int) -> list[str]:
    """The ids whose speech a ``percent`` % budget keeps."""
    return ranked(ids, seed)[:budget_count(len(ids), percent)]
