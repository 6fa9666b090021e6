"""A cell's schedule as phases, each keyed by everything that decides it, the phases before it included.

Phases that several cells share (the text phase of ``curriculum`` at every budget, ``text-only`` at every
budget) get the same key, hence the same folder, and are trained once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.stages.curriculum.config import Cell, CurriculumConfig
from speechllm_cli.stages.curriculum.pools import draw
from speechllm_cli.stages.curriculum.records import curriculum_dir
from speechllm_cli.stages.curriculum.schedules import PRESETS, PhaseConfig
from speechllm_cli.stages.inputs import encoder_dir, text_set_path
from speechllm_cli.stages.runner import Context, input_digests, settings_key
from speechllm_cli.stages.speech_llm_io import system_dir, system_model

if TYPE_CHECKING:
    from speechllm_cli.core.feeds import Example


@dataclass(frozen=True)
class PhasePlan:
    phase: PhaseConfig
    key: str
    folder: Path
    previous: Path | None
    """Where the starting weights come from: the previous phase's folder or the init system's."""
    previous_lora: bool
    """Whether those weights hold LoRA: not for an init system that trained its projector alone
    (``frozen_llm``), whose cell starts a fresh LoRA (B = 0, so it starts exactly as that system)."""
    examples: list[Example]
    """The phase's examples for one epoch, drawn once from the pools by its mixture."""

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(e.kind for e in self.examples))


def plan_phases(context: Context, config: CurriculumConfig, cell: Cell,
          by_kind: dict[str, list[Example]], speech_ids: list[str]) -> list[PhasePlan]:
    schedule = config.schedules.get(cell.scheme) or PRESETS[cell.scheme](config.epochs, config.lr)
    available = {kind: len(pool) for kind, pool in by_kind.items()}
    track = config.tracks[cell.track]
    inputs = input_digests(context.exp_dir, (text_set_path(context, track.text), text_set_path(context, track.speech),
                                             encoder_dir(context)))
    shared = {"inputs": inputs, "warmup_ratio": config.warmup_ratio, "max_target_tokens": config.max_target_tokens,
              "model": context.config.model.model_dump(mode="json"), "instruction": config.instruction,
              "train": config.train.model_dump(mode="json"),
}
    previous = system_dir(context, config.init) if config.init is not None else None
    previous_lora = config.init is not None and system_model(context, config.init).llm.lora is not None
    chain = "scratch"
    if previous is not None:
        weights = input_digests(context.exp_dir, (previous / "projector", previous / "lora"))
        chain = settings_key({"init": config.init, "weights": weights})
    plans = []
    for index, phase in enumerate(schedule):
        effective = phase.effective(available)
        if effective is None:
            continue
        if "lora" in effective.train and context.config.model.llm.lora is None:
            raise SpeechLLMError(f"curriculum_finetune: scheme {cell.scheme!r} phase {index + 1} trains lora, "
                                 "but the LLM has no lora settings (model.llm.lora)")
        pools_used = {kind: (speech_ids, track.speech, track.target_speech) if kind == "speech" else track.text
                      for kind in effective.inputs}
        settings = {"previous": chain, "phase": effective.model_dump(mode="json"), "pools": pools_used, **shared}
        chain = settings_key(settings)
        folder = curriculum_dir(context) / "phases" / chain[:16]
        examples = [e for kind, weight in effective.inputs.items()
                    for e in draw(by_kind[kind], weight, config.train.seed)]
        plans.append(PhasePlan(effective, chain, folder, previous, previous_lora, examples))
        previous, previous_lora = folder, context.config.model.llm.lora is not None
    if not plans:
        raise SpeechLLMError(f"curriculum-finetune {cell.name}: no phase of the schedule has examples to train on")
    return plans
