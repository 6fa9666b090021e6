"""What every reader of utterance audio offers: durations up front, samples on demand, batches by length.

A prepared split (:class:`speechllm_cli.data.cut_audio.CutAudio`) and a user's files (:class:`Waves`) look
the same to the encoder front end and to peer systems, so both are decoded by one path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from speechllm_cli.common.batching import length_batches

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16000


class AudioSource(Protocol):
    seconds: list[float]

    def __len__(self) -> int: ...

    def load(self, index: int) -> torch.Tensor:
        """Mono float32 samples at 16 kHz."""
        ...

    def batches(self, batch_size: int) -> list[list[int]]:
        """Every index once, in batches of similar duration."""
        ...


class Waves:
    """Waveforms already in memory: a user's few files, read and checked before any model loads."""

    def __init__(self, waves: Sequence[torch.Tensor]) -> None:
        self._waves = list(waves)
        self.seconds = [len(wave) / SAMPLE_RATE for wave in self._waves]

    def __len__(self) -> int:
        return len(self._waves)

    def load(self, index: int) -> torch.Tensor:
        return self._waves[index]

    def batches(self, batch_size: int) -> list[list[int]]:
        return length_batches(self.seconds, batch_size)


class Subset:
    """Some utterances of another source, by position: one process's shard of a split."""

    def __init__(self, source: AudioSource, indices: Sequence[int]) -> None:
        self._source, self._indices = source, list(indices)
        self.seconds = [source.seconds[i] for i in self._indices]

    def __len__(self) -> int:
        return len(self._indices)

    def load(self, index: int) -> torch.Tensor:
        return self._source.load(self._indices[index])

    def batches(self, batch_size: int) -> list[list[int]]:
        return length_batches(self.seconds, batch_size)



class AudioFiles:
    """Mono 16 kHz files a stage wrote itself (synthesized speech), read when a batch needs them."""

    def __init__(self, paths: Sequence[Path]) -> None:
        import soundfile

        self._paths = list(paths)
        self.seconds = [soundfile.info(str(path)).duration for path in self._paths]

    def __len__(self) -> int:
        return len(self._paths)

    def load(self, index: int) -> torch.Tensor:
        import soundfile
        import torch

        samples, rate = soundfile.read(str(self._paths[index]), dtype="float32", always_2d=True)
        if rate != SAMPLE_RATE:
            raise ValueError(f"{self._paths[index]}: {rate} Hz audio where {SAMPLE_RATE} Hz is expected")
        return torch.from_numpy(samples.mean(axis=1))

    def batches(self, batch_size: int) -> list[list[int]]:
        return length_batches(self.seconds, batch_size)
