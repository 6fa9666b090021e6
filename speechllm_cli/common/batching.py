"""Batches of similar length: what decoding, measuring and caching passes share so that little padding is
computed."""

from __future__ import annotations

from collections.abc import Sequence


def length_batches(lengths: Sequence[float], batch_size: int) -> list[list[int]]:
    """Indices shortest first (ties in input order), in chunks of ``batch_size``."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
