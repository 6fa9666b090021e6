"""What a speech LLM can be fed, and the one path that turns any mix of it into LLM input.

Three kinds of input fill the inserted positions of the prompt:
- ``text``: LLM token ids of a transcript, embedded by the LLM's own embedding table;
- ``cps``: unit ids of a transcript, from which the encoder's output is simulated afresh at every draw (a
  :data:`Simulate` function): posteriors by TASU's CPS or by a simulation calibrated to the encoder, or, for
  the unified interface, hidden-state vectors by the text branch;
- ``speech``: an utterance's real encoder output over LSD's segments: posteriors [L, V], or pooled hidden
  states [L, H] for the unified interface.
Training (``align``, ``curriculum-finetune``) and generation (``decode``) both go through :func:`embed`,
so a batch may mix kinds freely and every stage sees the model the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from speechllm_cli.common import device
from speechllm_cli.common.batching import Batching
from speechllm_cli.core.configs import CPSConfig, GenerationConfig
from speechllm_cli.core.posteriors import simulate_posteriors
from speechllm_cli.core.speech_llm import Prompt, SpeechLLM

Kind = Literal["text", "cps", "speech"]
KINDS: tuple[Kind, ...] = ("text", "cps", "speech")
Track = Callable[[Any, int, str], Any]
Simulate = Callable[[list[list[int]], torch.Generator, float], tuple[torch.Tensor, torch.Tensor]]
"""Unit ids, the step's generator and the training progress (0..1) -> padded encoder-space vectors [B, L, D]
(posteriors, or hidden states for the unified interface), lengths."""


@dataclass(frozen=True)
class StoredFrames:
    """An utterance's encoder output [L, D] left on disk until its batch is collated: a training set of real
    speech then holds its batches in memory, not its split (a 100 h split's posteriors are ~14 GB)."""

    shape: tuple[int, ...]
    read: Callable[[], torch.Tensor]


def frames(source: torch.Tensor | StoredFrames) -> torch.Tensor:
    return source.read() if isinstance(source, StoredFrames) else source


@dataclass(frozen=True)
class Example:
    kind: Kind
    source: Any
    """text: LLM token ids; cps: CTC unit ids; speech: [L, V] posteriors or [L, H] hidden states, in memory or
    :class:`StoredFrames`."""
    target: list[int]
    """LLM token ids to predict (empty when generating)."""
    prompt: Prompt | None = None
    """The instruction's prompt for this example (multi-task training); None: the model's own."""

    def __len__(self) -> int:
        return int(self.source.shape[0]) if self.kind == "speech" else len(self.source)


@dataclass
class Batch:
    examples: list[Example]
    posteriors: dict[int, torch.Tensor]
    """Batch position -> posteriors [L, V] of the cps and speech examples (CPS drawn at collate time)."""


def tasu_cps(vocab_size: int, config: CPSConfig) -> Simulate:
    """TASU's simulation: the same at every point of training."""
    return lambda ids, generator, progress: simulate_posteriors(ids, vocab_size, config, generator)


def collate_fn(simulate: Simulate) -> Callable[[list[Example], torch.Generator, float], Batch]:
    """Simulated posteriors come from the step's own generator, so a resumed run draws the same ones."""

    def collate(examples: list[Example], generator: torch.Generator, progress: float) -> Batch:
        posteriors = {i: frames(e.source).float() for i, e in enumerate(examples) if e.kind == "speech"}
        simulated = [i for i, e in enumerate(examples) if e.kind == "cps"]
        if simulated:
            padded, lengths = simulate([examples[i].source for i in simulated], generator, progress)
            posteriors |= {i: padded[row, : int(lengths[row])] for row, i in enumerate(simulated)}
        return Batch(examples, posteriors)

    return collate


def embed(model: SpeechLLM, batch: Batch) -> list[torch.Tensor]:
    """One [L_i, d] sequence per example, in batch order: posteriors through the projector, text through
    the LLM's embeddings."""
    order = sorted(batch.posteriors)
    inserted: list[torch.Tensor | None] = [None] * len(batch.examples)
    if order:
        chosen = [batch.posteriors[i] for i in order]
        lengths = torch.tensor([p.shape[0] for p in chosen])
        padded = torch.nn.utils.rnn.pad_sequence(chosen, batch_first=True)
        for i, sequence in zip(order, model.embed_posteriors(padded, lengths), strict=True):
            inserted[i] = sequence
    texts = [i for i, e in enumerate(batch.examples) if e.kind == "text"]
    for i, sequence in zip(texts, model.embed_texts([batch.examples[i].source for i in texts]), strict=True):
        inserted[i] = sequence
    return [x for x in inserted if x is not None]


def loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Cross-entropy on the targets, computed by calling ``model`` (a :class:`SpeechLLM`, or a data-parallel
    wrapper of one that averages the gradients of what the call uses), the projector included."""
    prompts = [e.prompt for e in batch.examples]
    return model(lambda speech_llm: embed(speech_llm, batch), [e.target for e in batch.examples],
                 prompts if any(p is not None for p in prompts) else None)


def generate_texts(model: SpeechLLM, tokenizer: Any, examples: Sequence[Example], vocab_size: int,
                   batching: Batching, generation: GenerationConfig, track: Track, description: str) -> list[str]:
    """Hypotheses in input order, decoded in batches of similar length (left-padded inside a batch).

    CPS inputs are drawn from a fixed generator, so decoding simulated input is reproducible."""
    device.announce()
    collate = collate_fn(tasu_cps(vocab_size, CPSConfig()))
    batches = batching.batches([len(e) for e in examples])
    texts = [""] * len(examples)
    with torch.no_grad():
        for indices in track(batches, len(batches), description):
            batch = collate([examples[i] for i in indices], torch.Generator().manual_seed(0), 1.0)
            for index, ids in zip(indices, model.generate(embed(model, batch), generation), strict=True):
                texts[index] = tokenizer.decode(ids, skip_special_tokens=True).strip()
    return texts
