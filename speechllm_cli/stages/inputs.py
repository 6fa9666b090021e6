"""Reading what earlier stages wrote: split manifests, normalised text sets, the trained encoder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechllm_cli.common import device
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import read_json, read_jsonl
from speechllm_cli.data.normalize import NormalizerConfig
from speechllm_cli.stages.runner import Context

if TYPE_CHECKING:
    from lhotse import CutSet

    from speechllm_cli.core.encoders import CTCEncoder


def cuts_path(context: Context, split: str) -> Path:
    return context.exp_dir / "data" / split / "cuts.jsonl.gz"


def load_cuts(context: Context, split: str) -> CutSet:
    from lhotse import CutSet

    path = cuts_path(context, split)
    if not path.is_file():
        raise SpeechLLMError(f"{path}: split {split!r} is not prepared (run prepare-data first)")
    return CutSet.from_file(path).with_recording_path_prefix(str(context.exp_dir)).to_eager()


def text_set_path(context: Context, name: str) -> Path:
    return context.exp_dir / "text" / f"{name}.jsonl"


def load_text_set(context: Context, name: str) -> list[dict[str, Any]]:
    path = text_set_path(context, name)
    if not path.is_file():
        raise SpeechLLMError(f"{path}: text set {name!r} does not exist (run prepare-text first)")
    return read_jsonl(path)


def text_normalizer(context: Context) -> NormalizerConfig:
    """The recipe's text normalisation (``prepare_text.normalize``), which made the training targets: what
    every reference and hypothesis goes through before it is scored."""
    text = context.config.prepare_text
    return text.normalize if text is not None else NormalizerConfig()


def encoder_dir(context: Context) -> Path:
    return context.exp_dir / "encoder" / "model"


def encoder_name_path(context: Context) -> Path:
    """Which registry entry reads ``encoder_dir`` (written by train-encoder)."""
    return context.exp_dir / "encoder" / "encoder.json"


def load_trained_encoder(context: Context) -> CTCEncoder:
    """The frozen encoder, on a GPU when there is one: every later stage runs it over whole splits."""

    from speechllm_cli.core.encoders import load_encoder

    path = encoder_name_path(context)
    if not path.is_file():
        raise SpeechLLMError(f"{path}: no trained encoder (run train-encoder first)")
    encoder = load_encoder(read_json(path)["encoder"], encoder_dir(context))
    return encoder.to(device.torch_device())
