"""Batches of similar length: what decoding, measuring and caching passes share so that little padding is
computed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Batching:
    """What a decoding batch may hold: at most ``items`` items and, with ``positions``, at most that many padded
    input positions (see :func:`budget_chunks`)."""

    items: int
    positions: int | None = None

    def batches(self, lengths: Sequence[float]) -> list[list[int]]:
        return length_batches(lengths, self.items, self.positions)


def length_batches(lengths: Sequence[float], batch_size: int, max_positions: int | None = None) -> list[list[int]]:
    """Indices shortest first (ties in input order), in chunks of ``batch_size`` (and of ``max_positions``)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return budget_chunks(order, lengths, batch_size, max_positions)


def budget_chunks(order: Sequence[int], lengths: Sequence[float], batch_size: int,
                  max_positions: int | None) -> list[list[int]]:
    """``order`` cut into batches of at most ``batch_size`` items and, with ``max_positions``, at most that many
    padded positions (items x the longest item: what a padded batch computes). Sorted input keeps the
    padding small, so a budget gives short items large batches and long items small ones, as lhotse's
    dynamic bucketing does; an item longer than the budget is a batch of its own."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0.0
    for index in order:
        wider = max(longest, lengths[index])
        full = len(current) == batch_size or (max_positions is not None and (len(current) + 1) * wider > max_positions)
        if current and full:
            batches.append(current)
            current, wider = [], lengths[index]
        current.append(index)
        longest = wider
    return [*batches, current] if current else batches
