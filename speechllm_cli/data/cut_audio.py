"""A split's audio read one utterance at a time, in the order batches are made.

A split of hundreds of hours does not fit in memory; every stage that reads audio asks for a batch's
waveforms when it builds that batch, and nothing else holds them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from speechllm_cli.data.audio import downmix

if TYPE_CHECKING:
    import torch
    from lhotse import CutSet


class CutAudio:
    def __init__(self, cuts: CutSet) -> None:
        self._cuts = list(cuts)
        self.ids = [cut.id for cut in self._cuts]
        self.seconds = [float(cut.duration) for cut in self._cuts]

    def __len__(self) -> int:
        return len(self._cuts)

    def load(self, index: int) -> torch.Tensor:
        """Mono float32 samples, channels mixed as ``decode FILE`` mixes them."""
        import torch

        return torch.from_numpy(downmix(self._cuts[index].load_audio()))

    def batches(self, batch_size: int) -> list[list[int]]:
        """Indices sorted by duration, then chunked: batches of similar length pad little."""
        order = sorted(range(len(self)), key=lambda i: self.seconds[i])
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
