"""Where a sweep's cells leave their records, and a cell named as a speech-LLM system.

A finished cell is a trained speech LLM like an align or distill system: ``track/scheme/b<budget>`` names it
wherever a system is named (distill's ``init``, the gap measurement), its weights being its last phase's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import read_json
from speechllm_cli.stages.curriculum.config import Cell, cells
from speechllm_cli.stages.runner import Context


def curriculum_dir(context: Context) -> Path:
    return context.exp_dir / "curriculum"


def cell_record_path(context: Context, cell: Cell) -> Path:
    return curriculum_dir(context) / cell.track / cell.scheme / f"b{cell.budget:g}" / "cell.json"


def cascade_file(transcriber: str) -> str:
    """The evaluation file of a cell's model reading ``transcriber``'s transcript of the test speech."""
    return f"cascade-{transcriber}.jsonl"


def read_cell(context: Context, cell: Cell) -> dict[str, Any] | None:
    """A cell's record, or None when the cell has not been run."""
    path = cell_record_path(context, cell)
    return read_json(path) if path.is_file() else None


def cell_of(context: Context, system: str) -> Cell | None:
    """The cell ``system`` names, or None for an align or distill system's name."""
    if "/" not in system:
        return None
    track, scheme, budget = system.split("/")
    config = context.config.curriculum_finetune
    cell = Cell(track, scheme, float(budget[1:]))
    if config is None or cell not in cells(config):
        raise SpeechLLMError(f"{system!r}: not a cell of curriculum_finetune (its tracks x schemes x budgets)")
    return cell


def cell_weights(context: Context, cell: Cell) -> Path:
    """The folder of the cell's last phase, whose weights are the cell's."""
    record = read_cell(context, cell)
    if record is None:
        raise SpeechLLMError(f"{cell_record_path(context, cell)}: cell {cell.name} has not been run (speechllm "
                             f"curriculum-finetune --track {cell.track} --scheme {cell.scheme} "
                             f"--budget {cell.budget:g})")
    return curriculum_dir(context) / "phases" / record["phases"][-1]["key"]
