"""A split's audio, read utterance by utterance when a batch needs it.

The manifest (ids, durations, paths) is small and stays in memory; the waveforms do not. Holding a split's
audio costs 230 MB per hour of 16 kHz float32 speech, so LibriSpeech's 100 h split would not fit: every
reader that goes through a split (encoder training, front-state caching, decoding) reads one batch at a
time from here and lets it go.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from speechllm_cli.data.audio import downmix

if TYPE_CHECKING:
    from lhotse import CutSet
    from lhotse.cut import Cut


class CutAudio:
    """Lazy access to the audio of a CutSet's cuts by position in the manifest."""

    def __init__(self, cuts: CutSet) -> None:
        """``cuts`` as :func:`speechllm_cli.stages.inputs.load_cuts` gives them, their audio paths already
        prefixed with the experiment folder."""
        self._cuts: list[Cut] = list(cuts)
        self.ids: list[str] = [cut.id for cut in self._cuts]
        """Cut ids in manifest order."""
        self.seconds: list[float] = [cut.duration for cut in self._cuts]
        """Durations in manifest order, known without reading any audio."""

    def __len__(self) -> int:
        return len(self._cuts)

    def load(self, index: int) -> torch.Tensor:
        """The mono float32 waveform of cut ``index`` at the manifest's rate (16 kHz as prepare-data writes
        it), its channels mixed as ``decode FILE`` mixes them, so both paths give a model the same samples."""
        return torch.from_numpy(downmix(self._cuts[index].load_audio()))

    def batches(self, batch_size: int, max_seconds: float | None = None) -> list[list[int]]:
        """All indices, longest first, in batches of at most ``batch_size``: similar lengths pad little.

        Longest first, because the first batch then needs the most memory and every later one fits in what
        it freed. Shortest first makes each batch a little larger than any freed before it, and glibc's
        allocator serves that by growing the heap: caching the mini recipe's front states grew by 15 MB a
        batch that way, in proportion to the split (bench/README.md). A batch too large for the machine
        also fails at once, not at the end of a long run.

        ``max_seconds`` also bounds a batch's padded audio (utterances x its longest, the first), the size
        its encoder pass allocates, so batches of long utterances get fewer of them; an utterance longer
        than ``max_seconds`` makes a batch of its own. Equal durations keep manifest order: the plan is a
        pure function of the manifest, so a cache built batch by batch is found again batch by batch.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        batches: list[list[int]] = []
        current: list[int] = []
        for index in sorted(range(len(self)), key=lambda i: -self.seconds[i]):
            full = len(current) == batch_size
            too_long = bool(current) and max_seconds is not None and \
                (len(current) + 1) * self.seconds[current[0]] > max_seconds
            if full or too_long:
                batches.append(current)
                current = []
            current.append(index)
        if current:
            batches.append(current)
        return batches
