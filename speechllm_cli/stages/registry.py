"""Stage name -> implementation; the CLI reports stages missing here as not implemented yet."""

from __future__ import annotations

from collections.abc import Callable

from speechllm_cli.stages import (
                                  align,
                                  calibrate,
                                  curriculum_finetune,
                                  decode,
                                  distill,
                                  prepare_data,
                                  prepare_text,
                                  score,
                                  train_encoder,
)
from speechllm_cli.stages.runner import Context, StageResult

STAGES: dict[str, Callable[[Context], StageResult]] = {
    "prepare-data": prepare_data.run,
    "prepare-text": prepare_text.run,
    "train-encoder": train_encoder.run,
    "calibrate": calibrate.run,
    "align": align.run,
    "curriculum-finetune": curriculum_finetune.run,
    "distill": distill.run,
    "decode": decode.run,
    "score": score.run,
}
