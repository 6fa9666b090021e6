"""The assembled speech LLM: prompt prefix + projected speech (or text) positions + prompt suffix -> LLM.

Every training stage and the decoder use this one class; they differ only in the embedding sequences
they feed (projected CPS or LSD posteriors, or the LLM's own token embeddings of a transcript) and the
targets. Training batches are right-padded; generation batches are left-padded so that every
utterance's last prompt position is the last column.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from speechllm_cli.core.configs import GenerationConfig

IGNORE = -100


@dataclass
class Prompt:
    """Token ids around the inserted positions, from the LLM's chat template."""

    prefix: list[int]
    suffix: list[int]
    end_of_turn: int


class SpeechLLM(torch.nn.Module):
    def __init__(self, llm: torch.nn.Module, projector: torch.nn.Module, prompt: Prompt, pad_id: int) -> None:
        super().__init__()
        self.llm = llm
        self.projector = projector
        self.prompt = prompt
        self.pad_id = pad_id

    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    def embed_ids(self, ids: Sequence[int]) -> torch.Tensor:
        tensor = torch.tensor(list(ids), dtype=torch.long, device=self.device)
        return self.llm.get_input_embeddings()(tensor)

    def embed_posteriors(self, posteriors: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Project a padded posterior batch [B, L, V]; return one [L_i, d] sequence per utterance."""
        projected = self.projector(posteriors.to(self.device))
        return [projected[i, : int(n)] for i, n in enumerate(lengths)]

    def embed_texts(self, ids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Plain text input: the LLM's own token embeddings, for text-only training phases."""
        return [self.embed_ids(seq) for seq in ids]

    def _sequence(self, inserted: torch.Tensor, target: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
        dtype = self.llm.get_input_embeddings().weight.dtype
        parts = [self.embed_ids(self.prompt.prefix), inserted.to(dtype),
                 self.embed_ids(self.prompt.suffix)]
        if target:
            parts.append(self.embed_ids(target))
        embeds = torch.cat(parts)
        labels = [IGNORE] * (embeds.shape[0] - len(target)) + list(target)
        return embeds, labels

    def batch_inputs(self, inserted: Sequence[torch.Tensor], targets: Sequence[Sequence[int]] | None = None,
                     left_pad: bool = False) -> dict[str, torch.Tensor]:
        """``inputs_embeds``, ``attention_mask`` (and ``labels`` with targets) for the LLM."""
        seqs = [self._sequence(x, targets[i] if targets else []) for i, x in enumerate(inserted)]
        width = max(e.shape[0] for e, _ in seqs)
        dim = seqs[0][0].shape[1]
        embeds = seqs[0][0].new_zeros(len(seqs), width, dim)
        mask = torch.zeros(len(seqs), width, dtype=torch.long, device=self.device)
        labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long, device=self.device)
        for i, (embed, label) in enumerate(seqs):
            n = embed.shape[0]
            span = slice(width - n, width) if left_pad else slice(0, n)
            embeds[i, span], mask[i, span] = embed, 1
            labels[i, span] = torch.tensor(label, device=self.device)
        inputs = {"inputs_embeds": embeds, "attention_mask": mask}
        if targets:
            inputs["labels"] = labels
        return inputs

    def forward(self, inputs: Callable[[SpeechLLM], Sequence[torch.Tensor]],
                targets: Sequence[Sequence[int]]) -> torch.Tensor:
        """The training loss of the sequences ``inputs`` builds with this model (projected posteriors, embedded
        text). Built inside the call, so that a data-parallel wrapper sees every parameter the loss uses."""
        return self.loss(inputs(self), targets)

    def loss(self, inserted: Sequence[torch.Tensor], targets: Sequence[Sequence[int]]) -> torch.Tensor:
        """Cross-entropy on the target tokens only (prompt and inserted positions are ignored)."""
        return self.llm(**self.batch_inputs(inserted, targets)).loss

    @torch.no_grad()
    def generate(self, inserted: Sequence[torch.Tensor], config: GenerationConfig) -> list[list[int]]:
        """Batched greedy or beam search, stopped at the end-of-turn token and at a length bound."""
        inputs = self.batch_inputs(inserted, left_pad=True)
        bounds = [min(config.max_new_tokens, math.ceil(config.length_ratio * x.shape[0]) + 4) for x in inserted]
        output = self.llm.generate(
            **inputs, max_new_tokens=max(bounds), num_beams=config.beam, do_sample=False,
            repetition_penalty=config.repetition_penalty, no_repeat_ngram_size=config.no_repeat_ngram,
            eos_token_id=self.prompt.end_of_turn, pad_token_id=self.pad_id)
        hypotheses = []
        for row, bound in zip(output.tolist(), bounds, strict=True):
            tokens = []
            for token in row[:bound]:
                if token == self.prompt.end_of_turn:
                    break
                tokens.append(token)
            hypotheses.append(tokens)
        return hypotheses
