"""Projectors map a posterior frame (a distribution over the encoder's units) into the LLM's embedding space.

Registered by name. ``tasu-mlp`` is the paper's LayerNorm-Linear-SiLU-Linear. ``unit-lookup`` starts as
an exact lookup of the LLM's own embedding of each unit's text (a posterior mixes those embeddings) plus
a zero-initialised residual MLP: on this project's CPU budget it begins near a working transcriber
instead of at random (PROBES §2: initial loss 2.8 against 6.4). ``unit-embedding`` is the lookup alone,
for inventories of word pieces the LLM reads as they are.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import atomic_dir
from speechllm_cli.core.configs import ProjectorConfig


class TasuMLP(torch.nn.Module):
    kind = "tasu-mlp"

    def __init__(self, vocab_size: int, llm_dim: int, config: ProjectorConfig) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.LayerNorm(vocab_size), torch.nn.Linear(vocab_size, config.hidden), torch.nn.SiLU(),
            torch.nn.Linear(config.hidden, llm_dim))

    @property
    def width(self) -> int:
        """The input vectors' size."""
        return self.net[1].in_features

    def forward(self, posteriors: torch.Tensor) -> torch.Tensor:
        return self.net(posteriors)


class UnitEmbedding(torch.nn.Module):
    """The LLM's embedding of each unit's text, trained as the projector's only weights: for unit inventories
    near the LLM's own tokens (Whisper's word pieces), where a posterior already reads as text and whatever
    is added on top only drowns it (RESULTS.md: ``unit-lookup``'s residual learnt an offset larger than the
    embeddings themselves, and the answers went with it)."""

    kind = "unit-embedding"

    def __init__(self, vocab_size: int, llm_dim: int, config: ProjectorConfig) -> None:
        super().__init__()
        self.lookup = torch.nn.Linear(vocab_size, llm_dim, bias=False)

    def init_from_embeddings(self, unit_embeddings: torch.Tensor) -> None:
        """Set the lookup to the LLM embedding of each unit's text, shape [V, llm_dim]."""
        with torch.no_grad():
            self.lookup.weight.copy_(unit_embeddings.T)

    @property
    def width(self) -> int:
        return self.lookup.in_features

    def forward(self, posteriors: torch.Tensor) -> torch.Tensor:
        return self.lookup(posteriors)


class UnitLookup(UnitEmbedding):
    """``unit-embedding`` plus a zero-initialised residual MLP, for small inventories (BPE-256) whose units the
    LLM cannot read as they are."""

    kind = "unit-lookup"

    def __init__(self, vocab_size: int, llm_dim: int, config: ProjectorConfig) -> None:
        super().__init__(vocab_size, llm_dim, config)
        self.residual = TasuMLP(vocab_size, llm_dim, config)
        torch.nn.init.zeros_(self.residual.net[-1].weight)
        torch.nn.init.zeros_(self.residual.net[-1].bias)

    def forward(self, posteriors: torch.Tensor) -> torch.Tensor:
        return self.lookup(posteriors) + self.residual(posteriors)


class HiddenLookup(torch.nn.Module):
    """The unified interface's counterpart of ``unit-lookup``: hidden states are read by a copy of the encoder's
    own CTC output layer into unit probabilities, which look up the LLM's embeddings of each unit's text, plus
    a zero-initialised residual MLP on the hidden states. It starts where the posterior interface starts and
    may learn what the posteriors throw away."""

    kind = "hidden-lookup"

    def __init__(self, width: int, vocab_size: int, llm_dim: int, config: ProjectorConfig) -> None:
        super().__init__()
        self.readout = torch.nn.Linear(width, vocab_size)
        self.lookup = torch.nn.Linear(vocab_size, llm_dim, bias=False)
        self.residual = TasuMLP(width, llm_dim, config)
        torch.nn.init.zeros_(self.residual.net[-1].weight)
        torch.nn.init.zeros_(self.residual.net[-1].bias)

    @property
    def width(self) -> int:
        return self.readout.in_features

    def init_from_encoder(self, output_layer: torch.nn.Linear, unit_embeddings: torch.Tensor) -> None:
        """The encoder's output layer, and the LLM embedding of each unit's text [V, llm_dim]."""
        with torch.no_grad():
            self.readout.load_state_dict(output_layer.state_dict())
            self.lookup.weight.copy_(unit_embeddings.T)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lookup(torch.softmax(self.readout(hidden), dim=-1)) + self.residual(hidden)


PROJECTORS: dict[str, Callable[[int, int, ProjectorConfig], torch.nn.Module]] = {
    "tasu-mlp": TasuMLP,
    "unit-lookup": UnitLookup,
    "unit-embedding": UnitEmbedding,
}


UNIFIED_PROJECTORS: dict[str, Callable[[int, int, int, ProjectorConfig], torch.nn.Module]] = {
    "tasu-mlp": lambda width, vocab_size, llm_dim, config: TasuMLP(width, llm_dim, config),
    "unit-lookup": HiddenLookup,
}
"""What each kind becomes over hidden states of ``width`` (the unified interface)."""


def build_projector(vocab_size: int, llm_dim: int, config: ProjectorConfig,
                    width: int | None = None) -> torch.nn.Module:
    """Over posteriors of ``vocab_size`` units, or with ``width`` over hidden states of that size."""
    if width is None:
        return PROJECTORS[config.kind](vocab_size, llm_dim, config)
    if config.kind not in UNIFIED_PROJECTORS:
        raise SpeechLLMError(f"model.projector.kind: {config.kind} reads posteriors only; the unified interface "
                             f"takes {', '.join(UNIFIED_PROJECTORS)}")
    return UNIFIED_PROJECTORS[config.kind](width, vocab_size, llm_dim, config)


def save_projector(projector: torch.nn.Module, folder: Path, llm_dim: int, config: ProjectorConfig) -> None:
    """A ``config.json`` + ``model.safetensors`` folder, written atomically; the kind and input width are the
    projector's own (the unified interface builds a tasu-mlp over hidden states whatever ``config.kind``)."""
    with atomic_dir(folder) as tmp:
        meta = {"vocab_size": projector.width, "llm_dim": llm_dim, **config.model_dump(), "kind": projector.kind}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        save_file({k: v.detach().cpu().contiguous() for k, v in projector.state_dict().items()},
                  str(tmp / "model.safetensors"))


def unit_text(unit: str) -> str | None:
    """The text a CTC unit stands for: sentencepiece's ``▁`` and wav2vec2's ``|`` are spaces; specials have none."""
    if unit.startswith("<") and unit.endswith(">"):
        return None
    return unit.replace("▁", " ").replace("|", " ")


def compact_ids(text: str, tokenizer: object) -> list[int]:
    """The LLM's token ids of a unit's text as written or capitalised, whichever takes fewer tokens.

    Lowercase units (the word-piece front end writes every piece lowercase) would otherwise reach the LLM
    as the mean of several fragments exactly for proper names (" france": " fr" + "ance"), the words
    questions turn on; the LLM spells " France" as one token."""
    written = tokenizer(text, add_special_tokens=False).input_ids
    if len(written) <= 1:
        return written
    capitalised = text[: len(text) - len(text.lstrip())] + text.lstrip().capitalize()
    return min(written, tokenizer(capitalised, add_special_tokens=False).input_ids, key=len)


def unit_text_embeddings(units: list[str], tokenizer: object, embeddings: torch.nn.Embedding) -> torch.Tensor:
    """[V, d]: the mean LLM input embedding of each unit's text (zero for blank and other specials), in its
    most compact spelling (:func:`compact_ids`)."""
    table = torch.zeros(len(units), embeddings.embedding_dim)
    with torch.no_grad():
        for index, unit in enumerate(units):
            text = unit_text(unit)
            ids = compact_ids(text, tokenizer) if text else []
            if ids:
                vectors = embeddings(torch.tensor(ids, device=embeddings.weight.device))
                table[index] = vectors.float().mean(dim=0).cpu()
    return table
