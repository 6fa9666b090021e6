"""The shared training loop: it learns, logs, checkpoints, and resumes to the uninterrupted result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from speechllm_cli.core.train_config import TrainConfig
from speechllm_cli.core.training import TrainJob, epoch_batches, train


def no_track(items, total, description):  # noqa: ANN001, ANN201
    return items


class Crash(Exception):
    pass


def _job(out_dir: Path, crash_at: int | None = None) -> TrainJob:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))
    frozen = torch.nn.Linear(4, 4)
    frozen.requires_grad_(False)
    model.add_module("frozen", frozen)
    xs = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    items = [(x, float(x.sum())) for x in xs]
    calls = {"n": 0}

    def collate(batch, generator, progress):  # noqa: ANN001, ANN202
        noise = torch.randn(len(batch), 1, generator=generator) * 0.01
        return torch.stack([x for x, _ in batch]), torch.tensor([[y] for _, y in batch]) + noise

    def loss(m, batch):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if crash_at is not None and calls["n"] > crash_at:
            raise Crash
        x, y = batch
        return torch.nn.functional.mse_loss(m[2](m[1](m[0](x))), y)

    return TrainJob(model, items, [len(str(y)) for _, y in items], collate, loss, out_dir)


CONFIG = TrainConfig(steps=30, batch_size=8, lr=0.02, warmup_steps=5, checkpoint_every=10, log_every=5)


def test_loss_falls_and_log_is_written(tmp_path: Path) -> None:
    report = train(_job(tmp_path), CONFIG, no_track)
    assert report.last_loss < report.first_loss * 0.5
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [5, 10, 15, 20, 25, 30]
    state = torch.load(tmp_path / "checkpoint/state.pt", weights_only=False)
    assert state["step"] == 30
    assert not any(k.startswith("frozen") for k in state["model"])


def test_resume_after_crash_matches_uninterrupted_run(tmp_path: Path) -> None:
    reference = _job(tmp_path / "ref")
    train(reference, CONFIG, no_track)
    with pytest.raises(Crash):
        train(_job(tmp_path / "run", crash_at=23), CONFIG, no_track)
    assert torch.load(tmp_path / "run/checkpoint/state.pt", weights_only=False)["step"] == 20
    resumed = _job(tmp_path / "run")
    report = train(resumed, CONFIG, no_track)
    assert report.resumed_from == 20
    for (name, a), (_, b) in zip(reference.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_batches_cover_every_item_once_per_epoch_and_group_lengths() -> None:
    lengths = [i % 7 for i in range(100)]
    batches = epoch_batches(lengths, TrainConfig(batch_size=10, sort_window=10), epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(100))
    assert batches == epoch_batches(lengths, TrainConfig(batch_size=10, sort_window=10), epoch=0)
    assert batches != epoch_batches(lengths, TrainConfig(batch_size=10, sort_window=10), epoch=1)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert spread < 10 * 6 / 2


def test_collate_sees_the_training_progress_of_each_step(tmp_path: Path) -> None:
    """Schedules over training (the calibrated simulation's error level) read step / steps from the loop,
    also after a resume."""
    from speechllm_cli.core.calibration import LevelSchedule

    schedule = LevelSchedule([(0.0, 0.0), (0.5, 1.0), (1.0, 1.5)])
    seen: list[float] = []
    job = _job(tmp_path)
    collate = job.collate

    def recording(batch, generator, progress):  # noqa: ANN001, ANN202
        seen.append(schedule.level_at(progress))
        return collate(batch, generator, progress)

    job.collate = recording
    train(job, TrainConfig(steps=10, batch_size=8, warmup_steps=1, checkpoint_every=5), no_track)
    assert seen == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.1, 1.2, 1.3, 1.4])
