"""Fine-tuning schedules: lists of phases, each a mixture of input kinds, and the ready presets.

A phase's ``inputs`` say how many copies of each input pool one epoch holds: ``text`` and ``cps`` draw
from the track's text set, ``speech`` from the utterances the speech budget keeps. So
``{text: 1, speech: 1}`` is direct mixing in its natural proportion (at a 5 % budget, about one example
in 21 is speech), and ``{text: 0.5}`` is half the text per epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import NonNegativeFloat, PositiveFloat, model_validator

from speechllm_cli.common.config import StrictModel

InputKind = Literal["text", "cps", "speech"]
Part = Literal["projector", "lora"]
POSTERIOR_KINDS = ("cps", "speech")
"""Kinds that reach the LLM through the projector; a phase fed none of them cannot train it."""


class PhaseConfig(StrictModel):
    epochs: PositiveFloat = 1.0
    """Passes over this phase's examples; the phase's steps are epochs x examples / batch size, rounded up."""
    lr: PositiveFloat = 5e-4
    """Peak learning rate of the phase's own warmup-cosine schedule."""
    inputs: dict[InputKind, NonNegativeFloat]
    """Copies of each input pool per epoch."""
    train: list[Part] = ["projector", "lora"]
    """The parts that learn in this phase; everything else stays as the previous phase left it."""

    @model_validator(mode="after")
    def _something_to_do(self) -> PhaseConfig:
        if not any(self.inputs.values()):
            raise ValueError("inputs gives no input kind a weight above 0")
        if not self.train:
            raise ValueError("train names no part (projector, lora)")
        return self

    def effective(self, available: dict[str, int]) -> PhaseConfig | None:
        """This phase with empty pools left out, or None when nothing is left to train on.

        Also drops the projector from ``train`` when no posterior input remains; two phases that train the
        same way then look the same (and are trained once)."""
        inputs = {kind: weight for kind, weight in self.inputs.items() if weight > 0 and available.get(kind, 0) > 0}
        parts = [p for p in self.train if p != "projector" or any(k in inputs for k in POSTERIOR_KINDS)]
        if not inputs or not parts:
            return None
        return self.model_copy(update={"inputs": inputs, "train": parts})


def _text_only(epochs: float, lr: float) -> list[PhaseConfig]:
    return [PhaseConfig(epochs=2 * epochs, lr=lr, inputs={"text": 1.0}, train=["lora"])]


def _direct_mix(epochs: float, lr: float) -> list[PhaseConfig]:
    return [PhaseConfig(epochs=2 * epochs, lr=lr, inputs={"text": 1.0, "speech": 1.0})]


def _curriculum(epochs: float, lr: float) -> list[PhaseConfig]:
    return [PhaseConfig(epochs=epochs, lr=lr, inputs={"text": 1.0}, train=["lora"]),
            PhaseConfig(epochs=epochs, lr=lr / 2, inputs={"text": 1.0, "speech": 1.0})]


def _tasu_then_speech(epochs: float, lr: float) -> list[PhaseConfig]:
    return [PhaseConfig(epochs=epochs, lr=lr, inputs={"cps": 1.0}),
            PhaseConfig(epochs=epochs, lr=lr / 2, inputs={"speech": 1.0})]


PRESETS: dict[str, Callable[[float, float], list[PhaseConfig]]] = {
    "text-only": _text_only,
    "direct-mix": _direct_mix,
    "curriculum": _curriculum,
    "tasu-then-speech": _tasu_then_speech,
}
"""Ready schedules as functions of the epoch unit and the peak learning rate. Every preset spends two
epoch units, so schemes compare at equal passes over the text."""
