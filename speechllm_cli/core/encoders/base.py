"""The one contract every CTC acoustic encoder meets, whatever its origin.

Input: a zero-padded float waveform batch [B, S] at 16 kHz plus sample counts [B] (or a list of 1-D
waveforms). Each encoder computes its own features inside, so callers never need to know whether
it wants fbank, raw samples or something else. Output: CTC log-posteriors [B, T, V] with blank at id
0, the number of valid frames per utterance, and the hidden states the output layer reads. Units
(id -> token) come with the encoder, so the same greedy decoding, CPS simulation and LSD compression
work for all of them.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import torch

from speechllm_cli.common.config import StrictModel
from speechllm_cli.core.features import SAMPLE_RATE, pad_waveforms

BLANK_ID = 0


@dataclass
class EncoderOutput:
    log_probs: torch.Tensor
    """[B, T, V] float32 log-softmax over units; frames at or beyond ``lengths`` are padding."""
    lengths: torch.Tensor
    """[B] valid frames per utterance."""
    hidden: torch.Tensor
    """[B, T, H] the last hidden layer, the input of the CTC output layer: the encoder's own space, where the
    unified-encoder interface (TESU) meets text."""


def greedy_ids(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best-path CTC decoding: argmax per frame, collapse repeats, drop blanks, ignore padded frames."""
    best = log_probs.argmax(dim=-1)
    previous = torch.nn.functional.pad(best[:, :-1], (1, 0), value=BLANK_ID)
    inside = torch.arange(best.shape[1], device=best.device) < lengths.to(best.device)[:, None]
    keep = (best != previous) & (best != BLANK_ID) & inside
    return [row[mask].tolist() for row, mask in zip(best.cpu(), keep.cpu(), strict=True)]


class CTCEncoder(torch.nn.Module, abc.ABC):
    """Speech -> CTC posteriors over the encoder's own units, blank = 0."""

    sample_rate: ClassVar[int] = SAMPLE_RATE
    config_class: ClassVar[type[StrictModel]]
    """The config section that :meth:`from_config` builds from (what a recipe writes under ``encoder``)."""

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: Any, **kwargs: Any) -> Self:
        """A new encoder from an instance of :attr:`config_class`."""

    @classmethod
    @abc.abstractmethod
    def load(cls, folder: str | Path, **kwargs: Any) -> Self:
        """The encoder saved by :meth:`save` (or a compatible folder / hub id), in eval mode."""

    @abc.abstractmethod
    def save(self, folder: Path) -> None:
        """Write a self-contained folder (config, weights, units), atomically."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """V, the width of the posteriors, blank included."""

    @abc.abstractmethod
    def units(self) -> list[str]:
        """Token of each output id; ``units()[0]`` is the blank."""

    @abc.abstractmethod
    def ids_to_text(self, ids: Sequence[int]) -> str:
        """Text of a blank-free, repeat-collapsed id sequence, as the encoder's tokenizer writes it."""

    @abc.abstractmethod
    def text_to_ids(self, text: str, lang: str = "en") -> list[int]:
        """The encoder's own units for a transcript in language ``lang`` (never the blank): CTC targets, and CPS
        input. Only phoneme units depend on the language."""

    def row_units(self, row: dict[str, Any]) -> list[int]:
        """:meth:`text_to_ids` of a text-set row, read in the row's own language."""
        return self.text_to_ids(row["text"], row.get("lang") or "en")

    @abc.abstractmethod
    def encode(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        """Posteriors for a padded batch already on this encoder's device."""

    @abc.abstractmethod
    def output_layer(self) -> torch.nn.Linear:
        """A copy of the layer from ``hidden`` to the CTC logits, columns in this encoder's unit order: what the
        unified interface's projector starts reading hidden states with."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, audio: torch.Tensor | Sequence[torch.Tensor],
                lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Accept a padded batch with lengths, or a list of 1-D waveforms, at 16 kHz."""
        if lengths is None:
            if isinstance(audio, torch.Tensor) and audio.dim() == 2:
                audio = list(audio)
            audio, lengths = pad_waveforms(audio)
        return self.encode(audio.to(self.device), lengths.to(self.device))

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """What an optimizer should update: parameters not frozen by the caller."""
        return [param for param in self.parameters() if param.requires_grad]

    def greedy_text(self, output: EncoderOutput) -> list[str]:
        """Best-path transcripts of a batch."""
        return [self.ids_to_text(ids) for ids in greedy_ids(output.log_probs, output.lengths)]

    @staticmethod
    def ctc_loss(output: EncoderOutput, targets: torch.Tensor, target_lengths: torch.Tensor,
                 reduction: str = "mean") -> torch.Tensor:
        """CTC loss with blank 0; impossible alignments (targets longer than frames) count as 0, not inf.

        ``targets`` is a padded [B, L] id batch (or all targets concatenated); ``mean`` divides each
        utterance's loss by its target length before averaging, as torch does.
        """
        return torch.nn.functional.ctc_loss(
            output.log_probs.float().transpose(0, 1), targets, output.lengths, target_lengths,
            blank=BLANK_ID, reduction=reduction, zero_infinity=True)


class FrozenFrontEncoder(CTCEncoder):
    """An encoder split into a front (features and frozen pretrained layers) and a trainable head.

    When the front is frozen its outputs never change, so training computes them once per utterance
    and runs only the head each epoch; the front's outputs are what gets cached.
    """

    @property
    @abc.abstractmethod
    def front_is_frozen(self) -> bool:
        """True when no front parameter trains (and the front is deterministic), so its outputs may be cached."""

    @abc.abstractmethod
    def front(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Front states [B, T, D] (zero beyond each utterance) and valid frames [B]."""

    @abc.abstractmethod
    def head(self, states: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        """Posteriors from front states."""

    def encode(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        states, frames = self.front(waveforms, lengths)
        return self.head(states, frames)

    def forward(self, audio: torch.Tensor | Sequence[torch.Tensor], lengths: torch.Tensor | None = None,
                from_states: bool = False) -> EncoderOutput:
        """``from_states=True`` takes cached front states [B, T, D] with frames [B] instead of audio.

        Going through ``forward`` (not :meth:`head` directly) keeps data-parallel wrappers in the loop.
        """
        if from_states:
            return self.head(audio.to(self.device), lengths.to(self.device))
        return super().forward(audio, lengths)
