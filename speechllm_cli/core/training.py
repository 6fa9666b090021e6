"""The one training loop, shared by every stage that trains (train-encoder, align, and later ones).

Stages differ only in what they feed and which loss; this module owns the rest: batching by length,
warmup-cosine schedule, gradient accumulation and clipping, mixed precision, multi-process data
parallelism (through Accelerate), JSON-lines logs, and full-state checkpoints from which a killed run
resumes to the same result as an uninterrupted one.

Determinism across a resume rests on two choices: the batch plan of an epoch is a pure function of
(seed, epoch), and each micro-batch gets its own generator seeded from (seed, step, its place in the
step) for any randomness the stage's collate function needs (CPS simulation, augmentation). Module
randomness (dropout) is covered by saving and restoring every process's torch RNG state with the
checkpoint.

Batch sizes: ``batch_size`` items make one micro-batch of one process; an optimizer step takes
``batch_size x processes x grad_accum`` items (the global batch) as that many consecutive micro-batches of
the plan, and the loss it minimises is their mean. The plan and the schedule do not depend on how the
global batch is split between processes and accumulation.

Checkpoints are ``checkpoint/step-<N>/`` folders of safetensors and JSON with a manifest of their sha256:
reading one runs no code, and the last two are kept so that a damaged newest one costs a few steps,
not the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import random
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from speechllm_cli.common import device, distributed
from speechllm_cli.common.batching import budget_chunks
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import atomic_dir, write_json
from speechllm_cli.core.train_config import TrainConfig
from speechllm_cli.core.train_log import TrainLog, peak_memory_mb

if TYPE_CHECKING:
    from accelerate import Accelerator

Track = Callable[[Iterable[int], int, str], Iterable[int]]

CHECKPOINTS = "checkpoint"
"""Under a job's ``out_dir``; the stage runner drops this folder when a unit's config changes."""
BEST = "best"
"""The trained weights with the lowest validation loss so far, beside the step checkpoints."""
VALIDATION_DRAWS = 10**12
"""Where validation's collate generators start, far from any training step's."""
TENSORS = "tensors.safetensors"
META = "state.json"
MANIFEST = "manifest.json"
LEGACY_CHECKPOINT = "state.pt"
_STEP_DIR = re.compile(r"step-(\d+)")

log = logging.getLogger(__name__)


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
        batches += budget_chunks(chunk, lengths, config.batch_size, config.max_positions)
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


class UnreadableCheckpoint(Exception):
    """A saved folder that fails verification; the message is the reason, for a one-line note."""


def save_verified(folder: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Tensors (safetensors) and metadata (JSON) with a manifest of their sha256, appearing all at once.

    Neither format can run code when read, and the manifest tells a complete folder from one damaged
    afterwards (a full disk, an interrupted copy).
    """
    from safetensors.torch import save_file

    with atomic_dir(folder) as tmp:
        save_file({name: value.detach().cpu().contiguous() for name, value in tensors.items()}, str(tmp / TENSORS))
        write_json(tmp / META, meta)
        sha256 = {name: hashlib.sha256((tmp / name).read_bytes()).hexdigest() for name in (TENSORS, META)}
        write_json(tmp / MANIFEST, {"sha256": sha256})


def load_verified(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """What :func:`save_verified` wrote, or :class:`UnreadableCheckpoint` naming what is wrong with it.

    Each file is read once, into memory: the bytes hashed are the bytes used, and no tensor stays mapped to
    a file that a later save replaces.
    """
    from safetensors.torch import load

    manifest = _read(folder / MANIFEST, _read_manifest)
    blobs = {name: _read(folder / name, Path.read_bytes) for name in (TENSORS, META)}
    for name, blob in blobs.items():
        if hashlib.sha256(blob).hexdigest() != manifest[name]:
            raise UnreadableCheckpoint(f"{name} does not match its sha256 in {MANIFEST}")
    return (_read(folder / TENSORS, lambda _: load(blobs[TENSORS])),
            _read(folder / META, lambda _: json.loads(blobs[META].decode("utf-8"))))


def _read_manifest(path: Path) -> dict[str, str]:
    listed = json.loads(path.read_text(encoding="utf-8"))["sha256"]
    return {name: listed[name] for name in (TENSORS, META)}


T = TypeVar("T")


def _read(path: Path, read: Callable[[Path], T]) -> T:
    """``read(path)``, with any failure turned into the reason the folder is unusable."""
    from safetensors import SafetensorError

    try:
        return read(path)
    except FileNotFoundError:
        raise UnreadableCheckpoint(f"{path.name} is missing") from None
    except (KeyError, TypeError):
        raise UnreadableCheckpoint(f"{path.name}: unexpected content") from None
    except (OSError, ValueError, SafetensorError) as error:
        raise UnreadableCheckpoint(f"{path.name}: {error}") from None


@dataclass
class _Run:
    """Everything a checkpoint restores besides the step."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    cursor: BatchCursor
    first_loss: float | None = None
    """The run's first loss, kept across resumes so that the summary reports where training started."""
    last_loss: float | None = None


_META_KEYS = ("step", "cursor", "scheduler", "optimizer", "python_rng", "first_loss", "last_loss")


def _rng_states(accelerator: Accelerator) -> dict[str, torch.Tensor]:
    """Every process's torch RNG states (their dropout draws differ), gathered from all of them.

    Process 0's keep the names a single process uses; process r's are prefixed ``rank<r>.``.
    """
    local = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        local |= {f"rng.cuda.{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())}
    states = {}
    for name, state in local.items():
        gathered = accelerator.gather(state.to(accelerator.device)[None]).cpu()
        states |= {name if rank == 0 else f"rank{rank}.{name}": row for rank, row in enumerate(gathered)}
    return states


def _contents(run: _Run, step: int, rng: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A checkpoint as flat tensors (model, optimizer state, RNG states) and JSON (everything else)."""
    optimizer = run.optimizer.state_dict()
    tensors = {f"model.{name}": value for name, value in trainable_state(run.model).items()}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in optimizer["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.state.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    tensors |= rng
    version, internal, gauss = random.getstate()
    meta = {"step": step, "cursor": run.cursor.state_dict(), "scheduler": run.scheduler.state_dict(),
            "optimizer": {"param_groups": optimizer["param_groups"], "state": scalars},
            "python_rng": [version, list(internal), gauss], "first_loss": run.first_loss, "last_loss": run.last_loss}
    return tensors, meta


def _optimizer_state(tensors: dict[str, torch.Tensor], saved: dict[str, Any]) -> dict[str, Any]:
    """The nested optimizer state_dict rebuilt from its flat tensors and JSON scalars."""
    state: dict[int, dict[str, Any]] = {int(index): dict(values) for index, values in saved["state"].items()}
    prefix = "optimizer.state."
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, name = key[len(prefix):].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": saved["param_groups"]}


def _restore(tensors: dict[str, torch.Tensor], meta: dict[str, Any], run: _Run, step: int, rank: int) -> None:
    """Load a verified checkpoint into ``run`` for process ``rank``; one that does not fit the model changes
    nothing. A process missing from the checkpoint (it was saved by fewer) takes process 0's RNG states."""
    weights = {key[len("model."):]: value for key, value in tensors.items() if key.startswith("model.")}
    _check_fits(weights, tensors, meta, run.model, step)
    try:
        run.optimizer.load_state_dict(_optimizer_state(tensors, meta["optimizer"]))
    except (ValueError, KeyError, TypeError) as error:
        raise UnreadableCheckpoint(f"{META}: its optimizer state does not fit ({error})") from None
    run.model.load_state_dict(weights, strict=False)
    run.scheduler.load_state_dict(meta["scheduler"])
    run.cursor.load_state_dict(meta["cursor"])
    own = {key[len(f"rank{rank}."):]: value for key, value in tensors.items() if key.startswith(f"rank{rank}.")}
    rng = {key: value for key, value in tensors.items() if key.startswith("rng.")} | own
    torch.set_rng_state(rng["rng.torch"])
    cuda = [rng[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in rng]
    if cuda:
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = meta["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    run.first_loss, run.last_loss = meta["first_loss"], meta["last_loss"]


def _check_fits(weights: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                model: torch.nn.Module, step: int) -> None:
    missing = [key for key in _META_KEYS if key not in meta] + ([] if "rng.torch" in tensors else ["rng.torch"])
    if missing:
        raise UnreadableCheckpoint(f"it lacks {missing[0]}")
    if meta["step"] != step:
        raise UnreadableCheckpoint(f"{META} says step {meta['step']}")
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters() if p.requires_grad}
    differing = sorted(name for name in shapes.keys() | weights.keys()
                       if shapes.get(name) != (tuple(weights[name].shape) if name in weights else None))
    if differing:
        raise UnreadableCheckpoint(f"its trained parameters do not fit the model ({differing[0]})")


def _held_out(job: TrainJob, config: TrainConfig) -> tuple[TrainJob, list[Any]]:
    """The job without validation's items, and those items: a draw by the seed, so a rerun or a resume holds
    out the same ones."""
    count = config.validation_items
    if count == 0:
        return job, []
    if count >= len(job.items):
        raise SpeechLLMError(f"{job.out_dir}: validation_items {count} leaves nothing to train on "
                             f"({len(job.items)} items)")
    held = set(torch.randperm(len(job.items), generator=torch.Generator().manual_seed(config.seed))[:count].tolist())
    kept = [i for i in range(len(job.items)) if i not in held]
    return (replace(job, items=[job.items[i] for i in kept], lengths=[job.lengths[i] for i in kept]),
            [job.items[i] for i in sorted(held)])


def _validation_loss(job: TrainJob, items: list[Any], config: TrainConfig, accelerator: Any,
                     model: torch.nn.Module) -> float:
    """Mean loss per held-out item, each process taking every N-th batch; the collate's draws are fixed per
    batch, so every validation of a run sees the same inputs and the figures compare."""
    processes, rank = accelerator.num_processes, accelerator.process_index
    batches = [items[start:start + config.batch_size] for start in range(0, len(items), config.batch_size)]
    sums = torch.zeros(2)
    model.eval()
    with torch.no_grad(), accelerator.autocast():
        for number in range(rank, len(batches), processes):
            batch = job.collate(batches[number], step_generator(config.seed, VALIDATION_DRAWS + number), 1.0)
            sums += torch.tensor([float(job.loss(model, batch)) * len(batches[number]), len(batches[number])])
    model.train()
    total, count = accelerator.reduce(sums.to(accelerator.device), "sum").tolist()
    return total / count


def _best_loss(folder: Path) -> float:
    """The validation loss of the kept best weights; none kept (or a damaged folder, replaced by the next
    best): infinity."""
    if not folder.is_dir():
        return math.inf
    try:
        return float(load_verified(folder)[1]["valid_loss"])
    except (UnreadableCheckpoint, KeyError, TypeError, ValueError):
        return math.inf


def _checkpoints(root: Path) -> list[tuple[int, Path]]:
    """The ``step-<N>`` folders under ``root``, newest first."""
    found = [(int(match.group(1)), path) for path in root.glob("step-*")
             if path.is_dir() and (match := _STEP_DIR.fullmatch(path.name))]
    return sorted(found, reverse=True)


def _resume(root: Path, run: _Run, rank: int) -> int:
    """Restore the newest checkpoint that verifies and return its step; skipped ones are named in one line."""
    legacy = (root / LEGACY_CHECKPOINT).is_file()
    skipped = [f"{LEGACY_CHECKPOINT} (speechllm 0.1.0's format, not read)"] if legacy else []
    for step, folder in _checkpoints(root):
        try:
            _restore(*load_verified(folder), run, step, rank)
        except UnreadableCheckpoint as error:
            skipped.append(f"{folder.name} ({error})")
            continue
        if skipped:
            log.warning("%s: skipped %s; resuming from step %d", root, "; ".join(skipped), step)
        return step
    if skipped:
        log.warning("%s: skipped %s; no usable checkpoint, training from step 0", root, "; ".join(skipped))
    return 0


def _save(root: Path, run: _Run, step: int, previous: int | None, rng: dict[str, torch.Tensor]) -> None:
    """Write ``step-<step>``, then drop every other checkpoint but ``previous``, the fallback should this one
    be damaged later."""
    save_verified(root / f"step-{step}", *_contents(run, step, rng))
    for number, folder in _checkpoints(root):
        if number not in (step, previous):
            shutil.rmtree(folder, ignore_errors=True)
    for leftover in root.glob(".step-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    (root / LEGACY_CHECKPOINT).unlink(missing_ok=True)


def _require_finite(out_dir: Path, step: int, loss: float, norm: torch.Tensor | None, kept: int | None) -> None:
    """Stop before a non-finite update reaches the weights, so the checkpoints on disk stay good."""
    if math.isfinite(loss) and (norm is None or bool(torch.isfinite(norm))):
        return
    what = "gradient" if math.isfinite(loss) else "loss"
    kept_note = f"kept the last good checkpoint (step {kept})" if kept else "no checkpoint was saved before it"
    raise SpeechLLMError(f"{out_dir}: non-finite {what} at step {step}; {kept_note}")


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU computes bf16 itself (``avx512_bf16`` or AMX): without it, bf16 autocast is emulated and
    a LoRA step of the mini align took 98 s against 3.3 s in fp32 (bench/align_bench.py with AVX2 forced).
    Unknown (no cpuinfo) counts as yes, so that nothing is said where nothing is known."""
    try:
        flags = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True
    return "avx512_bf16" in flags or "amx_bf16" in flags


def mixed_precision(precision: str) -> str:
    """Accelerate's ``mixed_precision`` for a :class:`TrainJob` precision."""
    if precision == "auto":
        return "bf16" if device.use_cuda() else "no"
    if precision == "bf16" and not device.use_cuda() and not cpu_has_bf16():
        log.warning("precision bf16 on a CPU without bf16 instructions (avx512_bf16, amx_bf16) is emulated, "
                    "tens of times slower than fp32: set precision to auto or fp32 here")
    return "bf16" if precision == "bf16" else "no"


def seed_everything(seed: int) -> None:
    """Call before building a model too: its random initialisation is part of what a seed must fix."""
    torch.manual_seed(seed)
    random.seed(seed)


def step_batches(cursor: BatchCursor, processes: int, rank: int, grad_accum: int) -> list[tuple[int, list[int]]]:
    """Process ``rank``'s micro-batches of one optimizer step, each with its place in the step's global batch.

    Every step takes the plan's next ``processes * grad_accum`` micro-batches, and every process walks all
    of them so that the cursors stay equal: the items a step trains on depend on the global batch only, so
    one process with grad_accum 2 trains on what two processes with grad_accum 1 do.
    """
    batches = [cursor.next() for _ in range(processes * grad_accum)]
    return [(place, batch) for place, batch in enumerate(batches) if place % processes == rank]


def _release_accelerator_state() -> None:
    """Let this training choose its own precision.

    Accelerate keeps one precision per process and refuses a second ``Accelerator`` that asks for another, but
    ``speechllm run`` chains stages in one process (an fp32 encoder head, then a bf16 align on a GPU). Each
    training is whole in itself, so the previous one's state is dropped; the process group (``PartialState``)
    is kept, since every training of a multi-process run shares it.
    """
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def train(job: TrainJob, config: TrainConfig, track: Track) -> TrainReport:
    """Train ``job.model`` for ``config.steps`` steps, resuming from the newest good checkpoint if there is one.

    On several processes each computes its micro-batches' gradients through the data-parallel wrapper, which
    averages them, so a step's gradient is the mean over the global batch's micro-batches; the loss
    logged is that same mean. The schedule counts optimizer steps, never processes. Only the main process
    writes. Raises :class:`SpeechLLMError` on a non-finite loss or gradient (on every process alike), before
    the update, so that the checkpoints on disk stay good.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    distributed.joint_work_starts()
    device.announce()
    job, held_out = _held_out(job, config)
    seed_everything(config.seed)
    _release_accelerator_state()
    # a micro-batch may leave trainable parameters unused (text-only input never reaches the projector)
    accelerator = Accelerator(cpu=distributed.cpu_only(), mixed_precision=mixed_precision(job.precision),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    rank, main = accelerator.process_index, accelerator.is_main_process
    params = [p for p in job.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    run = _Run(job.model, optimizer, scheduler, BatchCursor(job.lengths, config))
    start = _resume(job.out_dir / CHECKPOINTS, run, rank)
    model, optimizer = accelerator.prepare(job.model, optimizer)
    started = time.time()
    log = TrainLog(job.out_dir, start) if main else None
    try:
        _steps(job, config, track, accelerator, model, optimizer, run, start, log, held_out)
    finally:
        if log is not None:
            log.close()
    model.eval()
    distributed.joint_work_ends()
    return TrainReport(config.steps, start, run.first_loss, run.last_loss, time.time() - started)


def _steps(job: TrainJob, config: TrainConfig, track: Track, accelerator: Any, model: torch.nn.Module,
           optimizer: Any, run: _Run, start: int, log: TrainLog | None, held_out: list[Any]) -> None:
    """The steps from ``start`` on (``model`` and ``optimizer`` as Accelerate prepared them), logged every
    ``log_every``, validated on ``held_out`` every ``validate_every`` and checkpointed every
    ``checkpoint_every`` steps."""
    processes, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    params = [p for p in model.parameters() if p.requires_grad]
    root = job.out_dir / CHECKPOINTS
    kept = start or None
    best = _best_loss(root / BEST)
    started = since = time.time()
    seen = torch.zeros(2)  # items and positions this process trained on since the last record
    model.train()
    description = "training" if start == 0 else f"training (resumed at step {start})"
    for step in track(range(start, config.steps), config.steps - start, description):
        total = 0.0
        mine = step_batches(run.cursor, processes, rank, config.grad_accum)
        for number, (place, indices) in enumerate(mine):
            seen += torch.tensor([len(indices), sum(job.lengths[i] for i in indices)])
            batch = job.collate([job.items[i] for i in indices], step_generator(config.seed, step * 1000 + place),
                                step / config.steps)
            sync = contextlib.nullcontext() if number == len(mine) - 1 else accelerator.no_sync(model)
            with sync:
                with accelerator.autocast():
                    loss = job.loss(model, batch) / config.grad_accum
                accelerator.backward(loss)
            total += float(loss.detach())
        total = float(accelerator.reduce(torch.tensor(total, device=accelerator.device), "mean"))
        norm = accelerator.clip_grad_norm_(params, config.grad_clip)
        done = step + 1
        _require_finite(job.out_dir, done, total, norm, kept)
        optimizer.step()
        run.scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        run.first_loss = total if run.first_loss is None else run.first_loss
        run.last_loss = total
        if done % config.log_every == 0 or done == config.steps:
            items, positions = accelerator.reduce(seen.to(accelerator.device), "sum").tolist()
            elapsed = max(time.time() - since, 1e-9)
            if log is not None:
                log.write({"step": done, "loss": round(total, 5), "lr": run.scheduler.get_last_lr()[0],
                           "grad_norm": round(float(norm), 5), "items_per_s": round(items / elapsed, 2),
                           "positions_per_s": round(positions / elapsed, 1),
                           "peak_memory_mb": peak_memory_mb(accelerator.device), "epoch": run.cursor.epoch,
                           "seconds": round(time.time() - started, 2)})
            seen.zero_()
            since = time.time()
        if config.validate_every and (done % config.validate_every == 0 or done == config.steps):
            loss = _validation_loss(job, held_out, config, accelerator, model)
            if log is not None:
                log.write({"step": done, "valid_loss": round(loss, 5), "best": loss < best})
            if main and loss < best:
                save_verified(root / BEST, trainable_state(run.model), {"step": done, "valid_loss": loss})
            best = min(best, loss)
        if done % config.checkpoint_every == 0 or done == config.steps:
            rng = _rng_states(accelerator)
            if main:
                _save(root, run, done, kept, rng)
            kept = done
