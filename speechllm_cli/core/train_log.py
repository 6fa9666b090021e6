"""What a training run says about itself: ``train_log.jsonl`` and the same scalars as TensorBoard events.

Every ``log_every`` steps the shared loop writes one record: loss, learning rate, gradient norm (before
clipping), throughput in items and in positions (frames or tokens, as the job measures its items) per
second over the steps since the last record, and the process's peak memory (the GPU's allocator on CUDA,
the resident set on a CPU); with validation on, a record of the held-out loss follows each validation. The
JSON lines are what tests and tools read; ``tensorboard/`` beside them is what a person watches
(``tensorboard --logdir exp/<recipe>``). A resumed run first drops what it will log again, from both.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Any

import torch

from speechllm_cli.common.io import write_jsonl

LOG = "train_log.jsonl"
EVENTS = "tensorboard"


class TrainLog:
    """The log of one training output folder, written by the main process only."""

    def __init__(self, out_dir: Path, start: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / LOG
        trim(self.path, start)
        self.events = SummaryWriter(str(out_dir / EVENTS), purge_step=start + 1 if start else None)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        for name, value in record.items():
            if name != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                self.events.add_scalar(f"train/{name}", value, record["step"])
        self.events.flush()

    def close(self) -> None:
        self.events.close()


def trim(path: Path, step: int) -> None:
    """Keep the log's records up to ``step``: the steps after it are trained (and logged) again.

    A line cut short by a kill is dropped too.
    """
    if not path.is_file():
        return
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            records.append(record)
    write_jsonl(path, records)


def peak_memory_mb(device: torch.device) -> float:
    """The most memory this process has held so far: allocated tensors on a GPU, the resident set on a CPU."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)
