"""Stage name -> implementation. Planned stages are listed so the CLI can say they do not exist yet."""

from __future__ import annotations

from collections.abc import Callable

from speechllm_cli.stages import prepare_data, prepare_text
from speechllm_cli.stages.runner import Context, StageResult

STAGES: dict[str, Callable[[Context], StageResult]] = {
    "prepare-data": prepare_data.run,
    "prepare-text": prepare_text.run,
}

PLANNED = ("train-encoder", "align", "curriculum-finetune", "distill", "decode", "score")
