"""The one training loop, shared by every stage that trains (train-encoder, align, and later ones).

Stages differ only in what they feed and which loss; this module owns the rest: batching by length,
warmup-cosine schedule, gradient accumulation and clipping, mixed precision, multi-process data
parallelism (through Accelerate), JSON-lines logs, and full-state checkpoints from which a killed run
resumes to the same result as an uninterrupted one.

Determinism across a resume rests on two choices: the batch plan of an epoch is a pure function of
(seed, epoch), and each step gets its own generator seeded from (seed, step) for any randomness the
stage's collate function needs (CPS simulation, augmentation). Module randomness (dropout) is covered
by saving and restoring the torch RNG state with the checkpoint.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from speechllm_cli.common.io import atomic_path
from speechllm_cli.core.train_config import TrainConfig

Track = Callable[[Iterable[int], int, str], Iterable[int]]


@dataclass
class TrainJob:
    """What a stage hands to :func:`train`."""

    model: torch.nn.Module
    """The whole model; parameters with ``requires_grad`` are trained and checkpointed."""
    items: Sequence[Any]
    lengths: Sequence[int]
    """A size per item (frames, tokens) used to group similar lengths into a batch."""
    collate: Callable[[list[Any], torch.Generator, float], Any]
    """Items, the step's generator and the training progress (step / steps, for schedules) -> a batch."""
    loss: Callable[[torch.nn.Module, Any], torch.Tensor]
    out_dir: Path
    precision: str = "fp32"
    """fp32, bf16 (autocast) or auto: bf16 on CUDA, fp32 on CPUs. bench/align_bench.py measured bf16 autocast
    at 0.58x the speed of fp32 for a LoRA step of SmolLM2-135M on this project's avx512_bf16 CPU."""


@dataclass
class TrainReport:
    steps: int
    resumed_from: int
    first_loss: float | None
    last_loss: float | None
    seconds: float


def epoch_batches(lengths: Sequence[int], config: TrainConfig, epoch: int) -> list[list[int]]:
    """The batches of one epoch: shuffled, sorted by length within windows, batch order shuffled."""
    rng = random.Random(f"{config.seed}/epoch/{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = config.batch_size * config.sort_window
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + config.batch_size] for i in range(0, len(chunk), config.batch_size)]
    rng.shuffle(batches)
    return batches


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


def _lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        span = max(1, config.steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class BatchCursor:
    """Where the loop is in the data: epoch and batch index, saved with each checkpoint."""

    def __init__(self, lengths: Sequence[int], config: TrainConfig) -> None:
        self.lengths, self.config = lengths, config
        self.epoch, self.index = 0, 0
        self._plan = epoch_batches(lengths, config, 0)

    def next(self) -> list[int]:
        if self.index >= len(self._plan):
            self.epoch, self.index = self.epoch + 1, 0
            self._plan = epoch_batches(self.lengths, self.config, self.epoch)
        batch = self._plan[self.index]
        self.index += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index = state["epoch"], state["index"]
        self._plan = epoch_batches(self.lengths, self.config, self.epoch)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only the trained parameters: a frozen LLM's weights are never copied into checkpoints."""
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}


def _checkpoint_path(out_dir: Path) -> Path:
    return out_dir / "checkpoint" / "state.pt"


def _save(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler, cursor: BatchCursor, step: int) -> None:
    state = {"step": step, "model": trainable_state(model), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "cursor": cursor.state_dict(),
             "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _restore(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, cursor: BatchCursor) -> int:
    state = torch.load(path, map_location="cpu", weights_only=False)
    missing = set(trainable_state(model)) - set(state["model"])
    if missing:
        raise RuntimeError(f"{path}: checkpoint lacks trained parameters {sorted(missing)[:3]}")
    model.load_state_dict(state["model"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    cursor.load_state_dict(state["cursor"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"])


def _log(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def mixed_precision(precision: str) -> str:
    """Accelerate's ``mixed_precision`` for a :class:`TrainJob` precision."""
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    return "bf16" if precision == "bf16" else "no"


def seed_everything(seed: int) -> None:
    """Call before building a model too: its random initialisation is part of what a seed must fix."""
    torch.manual_seed(seed)
    random.seed(seed)


def train(job: TrainJob, config: TrainConfig, track: Track) -> TrainReport:
    """Train ``job.model`` for ``config.steps`` steps, resuming from ``job.out_dir/checkpoint`` if present."""
    from accelerate import Accelerator

    seed_everything(config.seed)
    accelerator = Accelerator(mixed_precision=mixed_precision(job.precision))
    params = [p for p in job.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    cursor = BatchCursor(job.lengths, config)
    checkpoint = _checkpoint_path(job.out_dir)
    start = _restore(checkpoint, job.model, optimizer, scheduler, cursor) if checkpoint.is_file() else 0
    model, optimizer, scheduler = accelerator.prepare(job.model, optimizer, scheduler)
    log_path = job.out_dir / "train_log.jsonl"
    job.out_dir.mkdir(parents=True, exist_ok=True)
    first = last = None
    started = time.time()
    model.train()
    description = "training" if start == 0 else f"training (resumed at step {start})"
    for step in track(range(start, config.steps), config.steps - start, description):
        total = 0.0
        for micro in range(config.grad_accum):
            indices = cursor.next()[accelerator.process_index::accelerator.num_processes]
            batch = job.collate([job.items[i] for i in indices], step_generator(config.seed, step * 1000 + micro),
                                step / config.steps)
            with accelerator.autocast():
                loss = job.loss(model, batch) / config.grad_accum
            accelerator.backward(loss)
            total += float(loss.detach())
        accelerator.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        first = total if first is None else first
        last = total
        done = step + 1
        if accelerator.is_main_process and (done % config.log_every == 0 or done == config.steps):
            _log(log_path, {"step": done, "loss": round(total, 5), "lr": scheduler.get_last_lr()[0],
                            "epoch": cursor.epoch, "seconds": round(time.time() - started, 2)})
        if accelerator.is_main_process and (done % config.checkpoint_every == 0 or done == config.steps):
            _save(checkpoint, accelerator.unwrap_model(model), optimizer, scheduler, cursor, done)
        accelerator.wait_for_everyone()
    model.eval()
    return TrainReport(config.steps, start, first, last, time.time() - started)
