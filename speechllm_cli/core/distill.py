"""SALAD's cross-modal distillation, and the two parts of the text-speech gap: forgetting F and misalignment M.

The teacher is the original LLM: the student's own LLM with its LoRA adapters switched off (peft's
``disable_adapter``), so no second copy sits in memory. It reads the transcript where the student reads
speech (real, synthesized, or simulated posteriors), inside the same prompt, and both are scored on the same
response tokens. The two prefixes differ in length, so logits are taken at the response positions only, and
inside the LLM's own forward (``logits_to_keep``), which then projects just those hidden states onto the
vocabulary: row k of the student's and of the teacher's logits predict the same response token.

Training goes through :class:`Distiller`, a module whose forward returns the loss, so that the one training
loop (``core.training.train``) trains it through its data-parallel wrapper like every other stage::

    TrainJob(Distiller(speech_llm, config), pairs, [len(p) for p in pairs], pair_collate(simulate), loss, out_dir)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import PeftModel

from speechllm_cli.common.batching import length_batches
from speechllm_cli.core.configs import DistillConfig, GenerationConfig, KLDirection
from speechllm_cli.core.feeds import Batch, Example, Simulate, collate_fn, embed
from speechllm_cli.core.speech_llm import Prompt, SpeechLLM


@dataclass(frozen=True)
class Pair:
    """One item: what the student reads, and the transcript of the same content the teacher reads instead."""

    student: Example
    """Speech, cps or text input; its ``target`` is the response both sides are scored on. A text student
    reading the transcript itself is a plain-text (forgetting-control) item."""
    transcript: list[int]
    """LLM token ids of the content (no chat-template tokens: the prompt adds those)."""

    def __len__(self) -> int:
        return len(self.student)


@dataclass
class PairBatch:
    student: Batch
    transcripts: list[list[int]]

    @property
    def responses(self) -> list[list[int]]:
        return [example.target for example in self.student.examples]

    @property
    def prompts(self) -> list[Prompt | None] | None:
        """Each item's instruction prompt (multi-task items), which teacher and student both read; None: the
        model's own for all."""
        prompts = [example.prompt for example in self.student.examples]
        return prompts if any(p is not None for p in prompts) else None


@dataclass
class ResponseLogits:
    """Logits at the positions that predict the response tokens of a batch, row by row and in order."""

    logits: torch.Tensor
    """[N, V]: N is the number of response tokens in the whole batch."""
    targets: torch.Tensor
    """[N]: the response token each row of ``logits`` predicts."""


def pair_collate(simulate: Simulate) -> Callable[[list[Pair], torch.Generator, float], PairBatch]:
    """A ``TrainJob.collate``: the student side collates as in every stage (CPS drawn from the step's generator,
    so a resumed run draws the same)."""
    collate = collate_fn(simulate)

    def collate_pairs(pairs: list[Pair], generator: torch.Generator, progress: float) -> PairBatch:
        return PairBatch(collate([p.student for p in pairs], generator, progress), [p.transcript for p in pairs])

    return collate_pairs


@contextlib.contextmanager
def adapters_off(llm: torch.nn.Module) -> Iterator[None]:
    """The original LLM for the duration: LoRA disabled in place; a plain LLM is frozen and already original."""
    if isinstance(llm, PeftModel):
        with llm.disable_adapter():
            yield
    else:
        yield


def response_logits(model: SpeechLLM, inserted: Sequence[torch.Tensor], responses: Sequence[Sequence[int]],
                    prompts: Sequence[Prompt | None] | None = None) -> ResponseLogits:
    """Logits of ``model``'s LLM predicting each response token after its inserted sequence, in the prompt: any
    prefix length gives the same N rows in the same order."""
    return ResponseLogits(*model.response_logits(inserted, responses, prompts))


def teacher_logits(model: SpeechLLM, transcripts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                   prompts: Sequence[Prompt | None] | None = None) -> ResponseLogits:
    """The original LLM reading the transcripts in the student's prompts; no gradient reaches anything."""
    with torch.no_grad(), adapters_off(model.llm):
        return response_logits(model, model.embed_texts(transcripts), responses, prompts)


def token_kl(student: torch.Tensor, teacher: torch.Tensor, direction: KLDirection,
             temperature: float = 1.0) -> torch.Tensor:
    """KL per row of two [N, V] logit tensors, times T^2: forward = KL(teacher || student), reverse =
    KL(student || teacher). Computed in fp32, since bf16 log-probabilities lose the small differences."""
    student_logp = F.log_softmax(student.float() / temperature, dim=-1)
    teacher_logp = F.log_softmax(teacher.float() / temperature, dim=-1)
    # kl_div(q, p) is KL(p || q), both given as log-probabilities
    reference, approximation = (teacher_logp, student_logp) if direction == "forward" else (student_logp, teacher_logp)
    kl = F.kl_div(approximation, reference, reduction="none", log_target=True).sum(-1)
    return kl * temperature**2


def distill_loss(student: ResponseLogits, teacher: ResponseLogits | None, config: DistillConfig) -> torch.Tensor:
    """``a * KL + (1 - a) * NLL``, each the mean over the batch's response tokens (as the cross-entropy of
    ``SpeechLLM.loss`` is). ``teacher`` may be None when a = 0."""
    weight = config.kl_weight
    loss = student.logits.new_zeros((), dtype=torch.float32)
    if weight > 0:
        if teacher is None:
            raise ValueError("kl_weight > 0 needs the teacher's logits")
        if not torch.equal(student.targets, teacher.targets):
            raise ValueError("student and teacher logits predict different response tokens")
        loss = loss + weight * token_kl(student.logits, teacher.logits, config.direction, config.temperature).mean()
    if weight < 1:
        loss = loss + (1 - weight) * F.cross_entropy(student.logits.float(), student.targets)
    return loss


class Distiller(torch.nn.Module):
    """A speech LLM whose forward is the distillation loss of a :class:`PairBatch`, for the training loop.

    Its parameters are the speech LLM's (named ``speech_llm.<name>`` in checkpoints); save what trained from
    ``distiller.speech_llm``. The teacher pass runs inside the forward under ``no_grad`` with the adapters off,
    in whatever mode the module is in: the LLMs supported have no dropout outside LoRA's.
    """

    def __init__(self, speech_llm: SpeechLLM, config: DistillConfig) -> None:
        super().__init__()
        self.speech_llm = speech_llm
        self.config = config

    def forward(self, batch: PairBatch) -> torch.Tensor:
        responses, prompts = batch.responses, batch.prompts
        student = response_logits(self.speech_llm, embed(self.speech_llm, batch.student), responses, prompts)
        teacher = (teacher_logits(self.speech_llm, batch.transcripts, responses, prompts)
                   if self.config.kl_weight > 0 else None)
        return distill_loss(student, teacher, self.config)


def loss(model: torch.nn.Module, batch: PairBatch) -> torch.Tensor:
    """A ``TrainJob.loss``: calls ``model`` (a :class:`Distiller` or its data-parallel wrapper) so that the
    wrapper sees every parameter the loss uses."""
    return model(batch)


def teacher_responses(model: SpeechLLM, transcripts: Sequence[Sequence[int]], generation: GenerationConfig,
                      batch_size: int, prompt: Prompt | None = None) -> list[list[int]]:
    """The original LLM's own answer to each transcript in the student's prompt, or in ``prompt``
    (``SpeechLLM.generate``, adapters off), closed by the end-of-turn token like a dataset target; a student then
    learns what its LLM would say."""
    responses: list[list[int]] = [[] for _ in transcripts]
    with torch.no_grad(), adapters_off(model.llm), model.prompted(prompt):
        for indices in length_batches([len(t) for t in transcripts], batch_size):
            inserted = model.embed_texts([transcripts[i] for i in indices])
            for index, ids in zip(indices, model.generate(inserted, generation), strict=True):
                responses[index] = [*ids, model.prompt.end_of_turn]
    return responses


def _no_simulation(ids: list[list[int]], generator: torch.Generator,
                   progress: float) -> tuple[torch.Tensor, torch.Tensor]:
    raise ValueError("cps inputs need a simulate function")


@torch.no_grad()
def misalignment(model: SpeechLLM, pairs: Sequence[Pair], batch_size: int,
                 simulate: Simulate = _no_simulation) -> float:
    """M of METHODS.md §4: KL(original LLM on the transcript || ``model`` on the student input), per response
    token over ``pairs`` (forward KL at T = 1, as SALAD defines it). With text student input it is F.

    Call it on a model in eval mode. CPS inputs are drawn from a fixed generator, so M is reproducible.
    """
    collate = pair_collate(simulate)
    total, count = 0.0, 0
    for indices in length_batches([len(p) for p in pairs], batch_size):
        batch = collate([pairs[i] for i in indices], torch.Generator().manual_seed(0), 1.0)
        student = response_logits(model, embed(model, batch.student), batch.responses, batch.prompts)
        teacher = teacher_logits(model, batch.transcripts, batch.responses, batch.prompts)
        total += float(token_kl(student.logits, teacher.logits, "forward").sum())
        count += student.targets.numel()
    if count == 0:
        raise ValueError("no response tokens to measure the divergence on")
    return total / count


def forgetting(model: SpeechLLM, transcripts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
               batch_size: int) -> float:
    """F of METHODS.md §4: KL(original LLM on the text || adapted ``model`` on the same text), per response token."""
    pairs = [Pair(Example("text", list(text), list(response)), list(text))
             for text, response in zip(transcripts, responses, strict=True)]
    return misalignment(model, pairs, batch_size)
