"""A recipe: a folder with ``config.yaml`` holding one section per stage.

The section models live with the layer that uses them; this module only assembles them into the
typed :class:`RecipeConfig` and finds recipe folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import PositiveInt, model_validator

import speechllm_cli
from speechllm_cli.common.config import StrictModel, apply_overrides, read_yaml, validate
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.data.manifests import BadInputPolicy
from speechllm_cli.data.normalize import NormalizerConfig
from speechllm_cli.data.sources import SOURCES, KaldiConfig, LibriSpeechConfig, MiniConfig, TsvConfig
from speechllm_cli.data.text_sets import TextSetConfig
from speechllm_cli.data.tokenizer import TokenizerConfig

RECIPES_DIR = Path(speechllm_cli.__file__).resolve().parent.parent / "recipes"
ADHOC = "adhoc"


class PrepareDataConfig(StrictModel):
    source: str
    """Which corpus source builds the splits: mini, librispeech, kaldi or tsv."""
    on_bad_input: BadInputPolicy = BadInputPolicy.fail
    sample_rate: PositiveInt = 16000
    mini: MiniConfig | None = None
    librispeech: LibriSpeechConfig | None = None
    kaldi: KaldiConfig | None = None
    tsv: TsvConfig | None = None

    @model_validator(mode="after")
    def _source_configured(self) -> PrepareDataConfig:
        if self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r} (known: {', '.join(SOURCES)})")
        if getattr(self, self.source) is None:
            raise ValueError(f"source is {self.source!r} but the {self.source!r} section is missing")
        return self

    @property
    def source_config(self) -> StrictModel:
        return getattr(self, self.source)


class PrepareTextConfig(StrictModel):
    on_bad_input: BadInputPolicy = BadInputPolicy.fail
    normalize: NormalizerConfig = NormalizerConfig()
    sets: dict[str, TextSetConfig] = {}
    tokenizer: TokenizerConfig | None = TokenizerConfig()

    @model_validator(mode="after")
    def _tokenizer_sets_exist(self) -> PrepareTextConfig:
        if self.tokenizer is not None:
            missing = [s for s in self.tokenizer.train_sets if s not in self.sets]
            if missing:
                raise ValueError(f"tokenizer.train_sets names {missing[0]!r}, which is not in sets")
        return self


class RecipeConfig(StrictModel):
    name: str
    description: str = ""
    prepare_data: PrepareDataConfig | None = None
    prepare_text: PrepareTextConfig | None = None


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


def load_recipe(name_or_path: str | None, overrides: list[str]) -> Recipe:
    """Read, override and validate a recipe config; ``None`` gives an empty ad-hoc recipe."""
    if name_or_path is None:
        data, path, source = {"name": ADHOC}, None, "--set"
    else:
        path = find_recipe(name_or_path)
        data, source = read_yaml(path), str(path)
    data = apply_overrides(data, overrides)
    return Recipe(validate(RecipeConfig, data, source), path)
