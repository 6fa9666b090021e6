"""A recipe: a folder with ``config.yaml`` holding one section per stage.

The section models live with the stage that uses them; this module only assembles them into the
typed :class:`RecipeConfig` and finds recipe folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import speechllm_cli
from speechllm_cli.common.config import StrictModel, apply_overrides, apply_values, read_yaml, validate
from speechllm_cli.common.device import Choice
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.core.configs import ModelConfig
from speechllm_cli.stages.align import AlignConfig
from speechllm_cli.stages.calibrate import CalibrateConfig
from speechllm_cli.stages.curriculum.config import CurriculumConfig
from speechllm_cli.stages.decode import DecodeConfig
from speechllm_cli.stages.distill import DistillStageConfig
from speechllm_cli.stages.prepare_data import PrepareDataConfig
from speechllm_cli.stages.prepare_text import PrepareTextConfig
from speechllm_cli.stages.train_encoder import TrainEncoderConfig

RECIPES_DIR = Path(speechllm_cli.__file__).resolve().parent.parent / "recipes"
ADHOC = "adhoc"


class RecipeConfig(StrictModel):
    name: str
    description: str = ""
    device: Choice = "auto"
    """Where models compute: auto (a GPU when torch sees one, else the CPU), cuda (a GPU, or a one-line error
    when torch cannot use one), cpu (any GPU left alone). Every stage that runs work names it on stderr."""
    model: ModelConfig = ModelConfig()
    """The speech LLM every stage after train-encoder builds, trains or decodes."""
    prepare_data: PrepareDataConfig | None = None
    prepare_text: PrepareTextConfig | None = None
    train_encoder: TrainEncoderConfig | None = None
    calibrate: CalibrateConfig | None = None
    align: AlignConfig | None = None
    decode: DecodeConfig | None = None
    curriculum_finetune: CurriculumConfig | None = None
    distill: DistillStageConfig | None = None


@dataclass(frozen=True)
class Recipe:
    config: RecipeConfig
    path: Path | None
    """The config file it was read from; None for an ad-hoc run with no recipe."""


def find_recipe(name_or_path: str) -> Path:
    """A recipe folder or config file by path, else ``recipes/<name>`` here or in the installed checkout."""
    given = Path(name_or_path)
    candidates = [given, Path.cwd() / "recipes" / name_or_path, RECIPES_DIR / name_or_path]
    for candidate in candidates:
        config = candidate / "config.yaml" if candidate.is_dir() else candidate
        if config.is_file():
            return config
    raise SpeechLLMError(f"--recipe {name_or_path}: no such recipe (looked for {given}, "
                         f"recipes/{name_or_path}/config.yaml and {RECIPES_DIR / name_or_path})")


def load_recipe(name_or_path: str | None, overrides: list[str], values: dict[str, Any] | None = None) -> Recipe:
    """Read, override and validate a recipe config; ``None`` gives an empty ad-hoc recipe.

    ``overrides`` are ``--set`` strings (YAML values); ``values`` come from typed options and are literal.
    """
    if name_or_path is None:
        data, path, source = {"name": ADHOC}, None, "command line"
    else:
        path = find_recipe(name_or_path)
        data, source = read_yaml(path), str(path)
    data = apply_values(apply_overrides(data, overrides), values or {})
    return Recipe(validate(RecipeConfig, data, source), path)
