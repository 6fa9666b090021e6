"""Projectors map a posterior frame (a distribution over the encoder's units) into the LLM's embedding space.

Registered by name. ``tasu-mlp`` is the paper's LayerNorm-Linear-SiLU-Linear. ``unit-lookup`` starts as
an exact lookup of the LLM's own embedding of each unit's text (a posterior mixes those embeddings) plus
a zero-initialised residual MLP: on this project's CPU budget it begins near a working transcriber
instead of at random (PROBES §2: initial loss 2.8 against 6.4).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from speechllm_cli.common.io import atomic_dir
from speechllm_cli.core.configs import ProjectorConfig


class TasuMLP(torch.nn.Module):
    def __init__(self, vocab_size: int, llm_dim: int, config: ProjectorConfig) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.LayerNorm(vocab_size), torch.nn.Linear(vocab_size, config.hidden), torch.nn.SiLU(),
            torch.nn.Linear(config.hidden, llm_dim))

    def forward(self, posteriors: torch.Tensor) -> torch.Tensor:
        return self.net(posteriors)


class UnitLookup(torch.nn.Module):
    def __init__(self, vocab_size: int, llm_dim: int, config: ProjectorConfig) -> None:
        super().__init__()
        self.lookup = torch.nn.Linear(vocab_size, llm_dim, bias=False)
        self.residual = TasuMLP(vocab_size, llm_dim, config)
        torch.nn.init.zeros_(self.residual.net[-1].weight)
        torch.nn.init.zeros_(self.residual.net[-1].bias)

    def init_from_embeddings(self, unit_embeddings: torch.Tensor) -> None:
        """Set the lookup to the LLM embedding of each unit's text, shape [V, llm_dim]."""
        with torch.no_grad():
            self.lookup.weight.copy_(unit_embeddings.T)

    def forward(self, posteriors: torch.Tensor) -> torch.Tensor:
        return self.lookup(posteriors) + self.residual(posteriors)


PROJECTORS: dict[str, Callable[[int, int, ProjectorConfig], torch.nn.Module]] = {
    "tasu-mlp": TasuMLP,
    "unit-lookup": UnitLookup,
}


def build_projector(vocab_size: int, llm_dim: int, config: ProjectorConfig) -> torch.nn.Module:
    return PROJECTORS[config.kind](vocab_size, llm_dim, config)


def save_projector(projector: torch.nn.Module, folder: Path, vocab_size: int, llm_dim: int,
                   config: ProjectorConfig) -> None:
    """A ``config.json`` + ``model.safetensors`` folder, written atomically."""
    with atomic_dir(folder) as tmp:
        meta = {"vocab_size": vocab_size, "llm_dim": llm_dim, **config.model_dump()}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        save_file({k: v.detach().cpu().contiguous() for k, v in projector.state_dict().items()},
                  str(tmp / "model.safetensors"))


def load_projector(folder: Path) -> torch.nn.Module:
    meta = json.loads((folder / "config.json").read_text())
    vocab_size, llm_dim = meta.pop("vocab_size"), meta.pop("llm_dim")
    projector = build_projector(vocab_size, llm_dim, ProjectorConfig(**meta))
    projector.load_state_dict(load_file(str(folder / "model.safetensors")))
    return projector


def unit_text(unit: str) -> str | None:
    """The text a CTC unit stands for: sentencepiece's ``▁`` and wav2vec2's ``|`` are spaces; specials have none."""
    if unit.startswith("<") and unit.endswith(">"):
        return None
    return unit.replace("▁", " ").replace("|", " ")


def unit_text_embeddings(units: list[str], tokenizer: object, embeddings: torch.nn.Embedding) -> torch.Tensor:
    """[V, d]: the mean LLM input embedding of each unit's text (zero for blank and other specials)."""
    table = torch.zeros(len(units), embeddings.embedding_dim)
    with torch.no_grad():
        for index, unit in enumerate(units):
            text = unit_text(unit)
            ids = tokenizer(text, add_special_tokens=False).input_ids if text else []
            if ids:
                vectors = embeddings(torch.tensor(ids, device=embeddings.weight.device))
                table[index] = vectors.float().mean(dim=0).cpu()
    return table
