"""The settings of ``curriculum-finetune`` and the cells of its sweep."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.names import Name
from speechllm_cli.core.configs import GenerationConfig
from speechllm_cli.core.train_config import TrainConfig
from speechllm_cli.data.budget import budget_count
from speechllm_cli.stages.curriculum.schedules import PRESETS, PhaseConfig


class TrackConfig(StrictModel):
    """Names are text sets (``prepare_text.sets``); ``speech`` and ``test`` must be made from splits."""

    text: Name
    """Transcripts and SLU frames for the text and cps inputs."""
    speech: Name
    """The utterances whose speech the budget draws from (another language's, in a cross-lingual track)."""
    target_speech: NonNegativeInt = 0
    """Utterances of ``text``'s own split whose speech is added at every budget (a few target-language
    recordings in a cross-lingual track)."""
    test: Name


class CurriculumConfig(StrictModel):
    init: Name | None = "tasu"
    """The align system whose projector (and LoRA) every run starts from, and whose simulation (TASU's CPS or
    the calibrated one) the cps inputs use; None starts from scratch, on CPS. The model itself (LLM, LoRA,
    projector) is the recipe's ``model`` section, the one the init system was trained as."""
    instruction: str = "Give the scenario, action and entities of the command as JSON."
    tracks: dict[Name, TrackConfig]
    schemes: list[Name] = list(PRESETS)
    """Preset names or names under ``schedules``."""
    schedules: dict[Name, list[PhaseConfig]] = {}
    budgets: list[float] = [0, 5, 25, 100]
    """Percent of the ``speech`` set's utterances whose speech may be used."""
    epochs: PositiveFloat = 1.0
    """The presets' epoch unit."""
    lr: PositiveFloat = 5e-4
    """The presets' peak learning rate (later phases of a preset use half)."""
    warmup_ratio: float = 0.05
    max_target_tokens: PositiveInt = 96
    """Examples with longer targets are left out (counted)."""
    train: TrainConfig = TrainConfig(batch_size=8, checkpoint_every=25, log_every=5)
    """Batching, seed, checkpoints; steps, lr and warmup come from each phase."""
    generation: GenerationConfig = GenerationConfig(max_new_tokens=96, length_ratio=8.0)
    decode_batch_size: PositiveInt = 16
    cascades: list[Name] = []
    """Transcribers of ``decode`` (``ctc``, a search, a peer) whose transcript of the test speech, normalised as
    ``prepare_text`` normalises, each cell's model also reads as text: the cascade a user would otherwise
    build from the same fine-tuned model (a third file beside the speech and text hypotheses)."""

    @model_validator(mode="after")
    def _known(self) -> CurriculumConfig:
        unknown = [s for s in self.schemes if s not in PRESETS and s not in self.schedules]
        if unknown:
            raise ValueError(f"schemes: {unknown[0]!r} is neither a preset ({', '.join(PRESETS)}) nor in schedules")
        for budget in self.budgets:
            budget_count(1, budget)
        return self


@dataclass(frozen=True)
class Cell:
    track: str
    scheme: str
    budget: float

    @property
    def name(self) -> str:
        return f"{self.track}/{self.scheme}/b{self.budget:g}"


def cells(config: CurriculumConfig) -> list[Cell]:
    """The sweep: every track x scheme x budget (the CLI narrows these lists to run one cell at a time)."""
    return [Cell(t, s, b) for t in config.tracks for s in config.schemes for b in config.budgets]
