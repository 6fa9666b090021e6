"""Training on several instructions from text: each task is an instruction over its own text sets, at a share of
the examples a system trains on, answered with the text set's targets or the original LLM's own reply.

Align's multi-task systems and distill's SALAD over varied instructions draw their examples here, so that a
system learns to behave on speech as the LLM behaves on text for every instruction, not only to transcribe.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.names import Name
from speechllm_cli.stages.inputs import load_text_set
from speechllm_cli.stages.runner import Context

if TYPE_CHECKING:
    from speechllm_cli.core.configs import GenerationConfig
    from speechllm_cli.core.speech_llm import Prompt, SpeechLLM


class InstructionTask(StrictModel):
    """One instruction of a multi-task system, and the text its examples are made from."""

    instruction: str
    text_sets: list[Name] = Field(min_length=1)
    share: float = Field(gt=0.0, le=1.0)
    """Its part of the examples the system trains on (the shares of a system's tasks add up to 1)."""
    targets: Literal["dataset", "teacher"] = "dataset"
    """dataset: the text set's targets (transcripts, answers); teacher: what the original LLM replies to the
    instruction and the text, so that the student learns to behave on speech as the LLM does on text."""


def check_shares(tasks: list[InstructionTask]) -> None:
    """Raises ValueError (a config error naming ``tasks``) when the shares do not add up to 1."""
    total = sum(task.share for task in tasks)
    if tasks and abs(total - 1.0) > 1e-6:
        raise ValueError(f"tasks: the shares add up to {total:g}, not 1")


def text_sets_read(text_sets: list[str], tasks: list[InstructionTask]) -> list[str]:
    """Every text set a system reads, its own and its tasks', once each in order (the unit's inputs)."""
    return list(dict.fromkeys([*text_sets, *(name for task in tasks for name in task.text_sets)]))


@dataclass(frozen=True)
class TaskRows:
    task: InstructionTask
    prompt: Prompt
    rows: list[dict[str, Any]]
    """``share`` x the total, taken in a seeded order from the task's text, from the start again when it runs
    out."""


def task_rows(context: Context, tasks: list[InstructionTask], total: int, seed: int,
              prompt: Callable[[str], Prompt]) -> list[TaskRows]:
    """Each task's rows and prompt; ``prompt`` builds the chat prompt of an instruction."""
    rng = random.Random(seed)
    drawn = []
    for task in tasks:
        rows = [row for name in task.text_sets for row in load_text_set(context, name)]
        if not rows:
            raise SpeechLLMError(f"the text sets {task.text_sets} of task {task.instruction!r} are empty")
        rng.shuffle(rows)
        drawn.append(TaskRows(task, prompt(task.instruction), [rows[i % len(rows)]
                                                               for i in range(round(task.share * total))]))
    return drawn


def task_targets(part: TaskRows, model: SpeechLLM, tokenizer: Any, generation: GenerationConfig,
                 batch_size: int) -> list[list[int]]:
    """The target token ids of a task's rows: the dataset's, or the original LLM's reply under the task's
    prompt (each distinct text answered once)."""
    from speechllm_cli.core.distill import teacher_responses
    from speechllm_cli.core.llm import encode_text, target_ids

    if part.task.targets == "dataset":
        return [target_ids(tokenizer, row["target"]) for row in part.rows]
    distinct = list(dict.fromkeys(row["text"] for row in part.rows))
    training = model.training
    try:
        replies = teacher_responses(model.eval(), [encode_text(tokenizer, text) for text in distinct], generation,
                                    batch_size, part.prompt)
    finally:
        model.train(training)
    answered = dict(zip(distinct, replies, strict=True))
    return [answered[row["text"]] for row in part.rows]
