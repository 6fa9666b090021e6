"""The assembled speech LLM: prompt prefix + projected speech (or text) positions + prompt suffix -> LLM.

Every training stage and the decoder use this one class; they differ only in the embedding sequences
they feed (projected CPS or LSD posteriors, or the LLM's own token embeddings of a transcript) and the
targets. Training batches are right-padded; generation batches are left-padded so that every
utterance's last prompt position is the last column.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from speechllm_cli.core.configs import GenerationConfig

if TYPE_CHECKING:
    from transformers import LogitsProcessorList

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

    @contextlib.contextmanager
    def prompted(self, prompt: Prompt | None) -> Iterator[None]:
        """Generate under another instruction's prompt for the duration (None: the trained one), so that a
        system trained on one instruction can be asked any other and still be saved with its own."""
        trained = self.prompt
        self.prompt = prompt or trained
        try:
            yield
        finally:
            self.prompt = trained

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

    def _sequence(self, inserted: torch.Tensor, target: Sequence[int],
                  prompt: Prompt | None = None) -> tuple[torch.Tensor, list[int]]:
        dtype = self.llm.get_input_embeddings().weight.dtype
        prompt = prompt or self.prompt
        parts = [self.embed_ids(prompt.prefix), inserted.to(dtype), self.embed_ids(prompt.suffix)]
        if target:
            parts.append(self.embed_ids(target))
        embeds = torch.cat(parts)
        labels = [IGNORE] * (embeds.shape[0] - len(target)) + list(target)
        return embeds, labels

    def batch_inputs(self, inserted: Sequence[torch.Tensor], targets: Sequence[Sequence[int]] | None = None,
                     left_pad: bool = False,
                     prompts: Sequence[Prompt | None] | None = None) -> dict[str, torch.Tensor]:
        """``inputs_embeds``, ``attention_mask`` (and ``labels`` with targets) for the LLM; ``prompts`` gives a row
        its own instruction (multi-task training), None rows keep the model's."""
        seqs = [self._sequence(x, targets[i] if targets else [], prompts[i] if prompts else None)
                for i, x in enumerate(inserted)]
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

    def forward(self, inputs: Callable[[SpeechLLM], Sequence[torch.Tensor]], targets: Sequence[Sequence[int]],
                prompts: Sequence[Prompt | None] | None = None) -> torch.Tensor:
        """The training loss of the sequences ``inputs`` builds with this model (projected posteriors, embedded
        text). Built inside the call, so that a data-parallel wrapper sees every parameter the loss uses."""
        return self.loss(inputs(self), targets, prompts)

    def loss(self, inserted: Sequence[torch.Tensor], targets: Sequence[Sequence[int]],
             prompts: Sequence[Prompt | None] | None = None) -> torch.Tensor:
        """Cross-entropy on the target tokens only (prompt and inserted positions are ignored)."""
        logits, following = self.response_logits(inserted, targets, prompts)
        return F.cross_entropy(logits.float(), following)

    def response_logits(self, inserted: Sequence[torch.Tensor], targets: Sequence[Sequence[int]],
                        prompts: Sequence[Prompt | None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [N, V] at the N positions that predict a target token, and those tokens [N], in batch order.

        Only these positions are projected onto the vocabulary (``logits_to_keep``): the prompt and inserted
        positions are most of a sequence, and projecting them all (as ``labels=`` does) cost a quarter of a
        training step on the mini recipe (bench/loss_bench.py).
        """
        inputs = self.batch_inputs(inserted, targets, prompts=prompts)
        following = inputs.pop("labels")[:, 1:]
        predicting = following != IGNORE
        logits = self.llm(**inputs, logits_to_keep=F.pad(predicting, (0, 1), value=False)).logits
        return logits, following[predicting]

    @torch.no_grad()
    def generate(self, inserted: Sequence[torch.Tensor], config: GenerationConfig) -> list[list[int]]:
        """Batched greedy or beam search, each hypothesis stopped at the end-of-turn token or at its own length
        bound."""
        inputs = self.batch_inputs(inserted, left_pad=True)
        bounds = [min(config.max_new_tokens, math.ceil(config.length_ratio * x.shape[0]) + 4) for x in inserted]
        if config.beam == 1:
            return self._greedy(inputs, bounds, config)
        output = self.llm.generate(
            **inputs, max_new_tokens=max(bounds), num_beams=config.beam, do_sample=False,
            logits_processor=_processors(config), eos_token_id=self.prompt.end_of_turn, pad_token_id=self.pad_id)
        hypotheses = []
        for row, bound in zip(output.tolist(), bounds, strict=True):
            tokens = []
            for token in row[:bound]:
                if token == self.prompt.end_of_turn:
                    break
                tokens.append(token)
            hypotheses.append(tokens)
        return hypotheses

    def _greedy(self, inputs: dict[str, torch.Tensor], bounds: list[int], config: GenerationConfig) -> list[list[int]]:
        """Greedy search that takes each row out of the batch as soon as it ends.

        ``transformers``' ``generate`` keeps every row in every forward pass until the batch's longest
        hypothesis ends (a row ended at its own bound even runs on to the batch's largest one): on the
        mini recipe a third of the rows computed at batch 16 belonged to hypotheses already finished.
        Here a finished row leaves the KV cache, the mask and the position ids; the rows still running
        see the same keys, mask and positions as before, so each utterance decodes as it would alone.
        """
        from transformers import DynamicCache

        mask = inputs["attention_mask"]
        padded = not bool(mask.all())
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.llm.config)
        processors = _processors(config)
        live = list(range(len(bounds)))
        hypotheses: list[list[int]] = [[] for _ in bounds]
        history = mask.new_zeros(len(bounds), 0)
        logits = self.llm(inputs_embeds=inputs["inputs_embeds"], attention_mask=mask if padded else None,
                          position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
        while True:
            tokens = processors(history, logits[:, -1].float()).argmax(-1)
            history = torch.cat([history, tokens[:, None]], dim=1)
            keep = []
            for index, (row, token) in enumerate(zip(live, tokens.tolist(), strict=True)):
                if token != self.prompt.end_of_turn:
                    hypotheses[row].append(token)
                    if len(hypotheses[row]) < bounds[row]:
                        keep.append(index)
            if not keep:
                return hypotheses
            if len(keep) < len(live):
                kept = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(kept)
                mask, positions, history, tokens = mask[kept], positions[kept], history[kept], tokens[kept]
                live = [live[index] for index in keep]
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
            positions = positions[:, -1:] + 1
            logits = self.llm(input_ids=tokens[:, None], attention_mask=mask if padded else None,
                              position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1).logits


def _processors(config: GenerationConfig) -> LogitsProcessorList:
    """The repetition constraints, over the generated tokens only (the prompt is embeddings, not ids).

    Built here rather than by ``transformers``' ``generate``, whose repetition penalty skips as many
    generated tokens of each row as the row has left padding: with a penalty, an utterance would decode
    differently in a batch than alone.
    """
    from transformers import LogitsProcessorList, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

    processors = LogitsProcessorList()
    if config.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
    if config.no_repeat_ngram:
        processors.append(NoRepeatNGramLogitsProcessor(config.no_repeat_ngram))
    return processors
