"""The folder layout of encoders trained here: ``config.json`` (with ``model_type``) + ``model.safetensors``.

One reader and one writer, so every such encoder saves, checks and reloads alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import torch
from safetensors.torch import save_file

from speechllm_cli.common.config import StrictModel, validate
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import load_tensors, read_json

C = TypeVar("C", bound=StrictModel)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def write_model(folder: Path, model_type: str, config: StrictModel, model: torch.nn.Module) -> None:
    """Config and weights into ``folder`` (the caller's temporary folder of an atomic write)."""
    data = {"model_type": model_type, **config.model_dump(mode="json")}
    (folder / CONFIG_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    save_file({name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()},
              str(folder / WEIGHTS_FILE))


def read_config(folder: Path, model_type: str, config_class: type[C], *needed: str) -> C:
    """The validated config of a saved ``model_type`` folder that also holds the ``needed`` files."""
    missing = [name for name in (CONFIG_FILE, *needed) if not (folder / name).is_file()]
    if missing:
        raise SpeechLLMError(f"{folder}: not a saved {model_type} encoder (no {' / '.join(missing)})")
    path = folder / CONFIG_FILE
    data = read_json(path)
    if data.pop("model_type", None) != model_type:
        raise SpeechLLMError(f"{path}: model_type is not {model_type!r}")
    return validate(config_class, data, str(path))


def load_weights(model: torch.nn.Module, folder: Path, map_location: str | torch.device) -> None:
    model.load_state_dict(load_tensors(folder / WEIGHTS_FILE, str(map_location)))
