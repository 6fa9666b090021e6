"""The shared training loop: it learns, logs, checkpoints, and resumes to the uninterrupted result."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.core.train_config import TrainConfig
from speechllm_cli.core.training import MANIFEST, META, TENSORS, TrainJob, epoch_batches, load_verified, train


def no_track(items, total, description):  # noqa: ANN001, ANN201
    return items


class Crash(Exception):
    pass


def _job(out_dir: Path, crash_at: int | None = None, nan_at: int | None = None,
         nan_grad_at: int | None = None) -> TrainJob:
    """A small real model; after ``crash_at`` loss calls it crashes, after ``nan_at`` its loss is NaN, after
    ``nan_grad_at`` its loss stays finite but its gradient is NaN."""
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
        value = torch.nn.functional.mse_loss(m[2](m[1](m[0](x))), y)
        if nan_at is not None and calls["n"] > nan_at:
            return value * float("nan")
        if nan_grad_at is not None and calls["n"] > nan_grad_at:
            zero = m[0].weight.sum() - m[0].weight.sum()
            return value + 0.0 * zero.sqrt()
        return value

    return TrainJob(model, items, [len(str(y)) for _, y in items], collate, loss, out_dir)


CONFIG = TrainConfig(steps=30, batch_size=8, lr=0.02, warmup_steps=5, checkpoint_every=10, log_every=5)


def _steps(out_dir: Path) -> list[str]:
    return sorted(p.name for p in (out_dir / "checkpoint").iterdir())


def _logged(out_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out_dir / "train_log.jsonl").read_text().splitlines()]


def _crashed_at_23(out_dir: Path) -> None:
    """A run killed after its step-20 checkpoint (step-10 is still there): 24 loss calls, the last one fails."""
    with pytest.raises(Crash):
        train(_job(out_dir, crash_at=23), CONFIG, no_track)
    assert _steps(out_dir) == ["step-10", "step-20"]


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.allclose(x, y, atol=1e-6), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainJob, float]:
    job = _job(tmp_path_factory.mktemp("reference"))
    report = train(job, CONFIG, no_track)
    return job, report.first_loss


def test_loss_falls_and_log_is_written(tmp_path: Path) -> None:
    report = train(_job(tmp_path), CONFIG, no_track)
    assert report.last_loss < report.first_loss * 0.5
    assert _logged(tmp_path) == [5, 10, 15, 20, 25, 30]
    assert _steps(tmp_path) == ["step-20", "step-30"]
    assert {p.name for p in (tmp_path / "checkpoint/step-30").iterdir()} == {TENSORS, META, MANIFEST}
    tensors, meta = load_verified(tmp_path / "checkpoint/step-30")
    assert meta["step"] == 30 and meta["first_loss"] == report.first_loss
    assert not any(k.startswith("model.frozen") for k in tensors)
    assert {k for k in tensors if k.startswith("model.")} == {"model.0.weight", "model.0.bias", "model.2.weight",
                                                              "model.2.bias"}
    assert tensors["rng.torch"].dtype == torch.uint8


def test_resume_after_crash_matches_uninterrupted_run(tmp_path: Path, reference: tuple[TrainJob, float]) -> None:
    _crashed_at_23(tmp_path)
    assert _logged(tmp_path) == [5, 10, 15, 20]
    resumed = _job(tmp_path)
    report = train(resumed, CONFIG, no_track)
    assert report.resumed_from == 20
    assert report.first_loss == reference[1], "the summary's first loss is the run's, not the resumed part's"
    assert _logged(tmp_path) == [5, 10, 15, 20, 25, 30]
    _assert_same_weights(reference[0].model, resumed.model)


def test_a_log_written_past_the_checkpoint_is_cut_back_to_it(tmp_path: Path) -> None:
    """Steps 21-23 were logged (log_every 1) before the kill; the resumed run logs them again, once."""
    config = CONFIG.model_copy(update={"log_every": 1})
    with pytest.raises(Crash):
        train(_job(tmp_path, crash_at=23), config, no_track)
    with (tmp_path / "train_log.jsonl").open("a") as log:
        log.write('{"step": 24, "lo')
    train(_job(tmp_path), config, no_track)
    assert _logged(tmp_path) == list(range(1, 31))


def _events(out_dir: Path) -> dict[str, list[int]]:
    """Scalar tag -> the steps it was written at, over every event file of the run's TensorBoard folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out_dir / "tensorboard"))
    events.Reload()
    return {tag: [event.step for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_the_log_says_how_fast_and_how_big_and_tensorboard_shows_it_once_after_a_resume(tmp_path: Path) -> None:
    """Gradient norm, throughput and peak memory in every record, the same scalars as TensorBoard events; a
    run killed past its checkpoint and resumed leaves each step once in both."""
    with pytest.raises(Crash):
        train(_job(tmp_path, crash_at=23), CONFIG, no_track)
    assert _events(tmp_path)["train/loss"] == [5, 10, 15, 20]
    train(_job(tmp_path), CONFIG, no_track)
    records = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    lengths = _job(tmp_path).lengths
    for record in records:
        assert record["grad_norm"] > 0 and record["peak_memory_mb"] > 50
        assert record["items_per_s"] > 0
        per_item = record["positions_per_s"] / record["items_per_s"]
        assert min(lengths) - 0.1 <= per_item <= max(lengths) + 0.1, "positions are the items' own lengths"
    events = _events(tmp_path)
    assert set(events) == {f"train/{name}" for name in ("loss", "lr", "grad_norm", "items_per_s", "positions_per_s",
                                                         "peak_memory_mb", "epoch", "seconds")}
    assert all(steps == [5, 10, 15, 20, 25, 30] for steps in events.values()), events


VALIDATED = CONFIG.model_copy(update={"validate_every": 10, "validation_items": 16})


def _validations(out_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]
    return [record for record in records if "valid_loss" in record]


def test_validation_holds_items_out_logs_their_loss_and_keeps_the_best_weights(tmp_path: Path) -> None:
    job = _job(tmp_path / "validated")
    train(job, VALIDATED, no_track)
    records = _validations(tmp_path / "validated")
    assert [r["step"] for r in records] == [10, 20, 30]
    losses = [r["valid_loss"] for r in records]
    assert losses[-1] < losses[0], "the held-out loss falls as the model learns"
    assert [r["best"] for r in records] == [loss == min(losses[: i + 1]) for i, loss in enumerate(losses)]
    tensors, meta = load_verified(tmp_path / "validated/checkpoint/best")
    best = min(records, key=lambda r: r["valid_loss"])
    assert meta["step"] == best["step"] and round(meta["valid_loss"], 5) == best["valid_loss"]
    assert tensors.keys() == {"0.weight", "0.bias", "2.weight", "2.bias"}
    plain = _job(tmp_path / "plain")
    train(plain, CONFIG, no_track)
    assert not (tmp_path / "plain/checkpoint/best").exists() and not _validations(tmp_path / "plain")
    trained = {name: p for name, p in job.model.state_dict().items() if not name.startswith("frozen")}
    assert any(not torch.equal(p, plain.model.state_dict()[name]) for name, p in trained.items()), \
        "16 of the 64 items were held out of training"


def test_a_resumed_validated_run_logs_and_keeps_what_an_uninterrupted_one_does(tmp_path: Path) -> None:
    train(_job(tmp_path / "whole"), VALIDATED, no_track)
    with pytest.raises(Crash):
        train(_job(tmp_path / "resumed", crash_at=23), VALIDATED, no_track)
    train(_job(tmp_path / "resumed"), VALIDATED, no_track)
    assert _validations(tmp_path / "resumed") == _validations(tmp_path / "whole")
    best = [load_verified(tmp_path / name / "checkpoint/best")[1] for name in ("resumed", "whole")]
    assert best[0] == best[1]


@pytest.mark.parametrize("update", [{"validate_every": 10}, {"validation_items": 16}])
def test_validation_needs_both_settings(update: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="validate_every and validation_items: set both"):
        TrainConfig(**update)


def test_holding_out_every_item_is_one_line_naming_the_folder(tmp_path: Path) -> None:
    with pytest.raises(SpeechLLMError, match="validation_items 64 leaves nothing to train on"):
        train(_job(tmp_path), CONFIG.model_copy(update={"validate_every": 10, "validation_items": 64}), no_track)


def _truncate(folder: Path) -> None:
    data = (folder / TENSORS).read_bytes()
    (folder / TENSORS).write_bytes(data[: len(data) // 2])


def _edit_state(folder: Path) -> None:
    (folder / META).write_text((folder / META).read_text().replace('"step": 20', '"step": 21'))


def _break_manifest(folder: Path) -> None:
    (folder / MANIFEST).write_text('{"sha256": ')


@pytest.mark.parametrize(("damage", "reason"), [
    (_truncate, f"{TENSORS} does not match its sha256 in {MANIFEST}"),
    (_edit_state, f"{META} does not match its sha256 in {MANIFEST}"),
    (_break_manifest, f"{MANIFEST}: Expecting value: line 1 column 12 (char 11)"),
])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(
        tmp_path: Path, reference: tuple[TrainJob, float], caplog: pytest.LogCaptureFixture,
        damage: Callable[[Path], None], reason: str) -> None:
    _crashed_at_23(tmp_path)
    damage(tmp_path / "checkpoint/step-20")
    resumed = _job(tmp_path)
    with caplog.at_level(logging.WARNING):
        report = train(resumed, CONFIG, no_track)
    assert caplog.messages == [f"{tmp_path / 'checkpoint'}: skipped step-20 ({reason}); resuming from step 10"]
    assert report.resumed_from == 10 and report.first_loss == reference[1]
    _assert_same_weights(reference[0].model, resumed.model)
    assert _steps(tmp_path) == ["step-20", "step-30"]
    assert load_verified(tmp_path / "checkpoint/step-20")[1]["step"] == 20, "the damaged one was rewritten"


def test_no_usable_checkpoint_starts_clean_and_says_so(tmp_path: Path, reference: tuple[TrainJob, float],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    _crashed_at_23(tmp_path)
    _truncate(tmp_path / "checkpoint/step-20")
    (tmp_path / "checkpoint/step-10" / TENSORS).unlink()
    resumed = _job(tmp_path)
    with caplog.at_level(logging.WARNING):
        report = train(resumed, CONFIG, no_track)
    assert caplog.messages == [(
        f"{tmp_path / 'checkpoint'}: skipped step-20 ({TENSORS} does not match its sha256 in {MANIFEST}); "
        f"step-10 ({TENSORS} is missing); no usable checkpoint, training from step 0")]
    assert report.resumed_from == 0 and _logged(tmp_path) == [5, 10, 15, 20, 25, 30]
    _assert_same_weights(reference[0].model, resumed.model)


@pytest.mark.parametrize(("what", "option"), [("loss", "nan_at"), ("gradient", "nan_grad_at")])
def test_a_non_finite_step_stops_training_and_keeps_the_last_good_checkpoint(tmp_path: Path, what: str,
                                                                             option: str) -> None:
    with pytest.raises(SpeechLLMError) as error:
        train(_job(tmp_path, **{option: 23}), CONFIG, no_track)
    assert str(error.value) == f"{tmp_path}: non-finite {what} at step 24; kept the last good checkpoint (step 20)"
    assert _steps(tmp_path) == ["step-10", "step-20"]
    tensors, meta = load_verified(tmp_path / "checkpoint/step-20")
    assert meta["step"] == 20 and all(torch.isfinite(t.float()).all() for t in tensors.values())


def test_a_non_finite_first_step_says_no_checkpoint_was_saved(tmp_path: Path) -> None:
    with pytest.raises(SpeechLLMError, match=r"non-finite loss at step 1; no checkpoint was saved before it$"):
        train(_job(tmp_path, nan_at=0), CONFIG, no_track)


def test_batches_cover_every_item_once_per_epoch_and_group_lengths() -> None:
    lengths = [i % 7 for i in range(100)]
    batches = epoch_batches(lengths, TrainConfig(batch_size=10, sort_window=10), epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(100))
    assert batches == epoch_batches(lengths, TrainConfig(batch_size=10, sort_window=10), epoch=0)
    assert batches != epoch_batches(lengths, TrainConfig(batch_size=10, sort_window=10), epoch=1)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert spread < 10 * 6 / 2


def test_a_positions_budget_gives_short_items_large_batches_and_long_items_small_ones() -> None:
    """Issue 24, finding 8: batches by size, not count. Every item once per epoch; no batch over the budget in
    padded positions (but an item longer than the budget alone); the count cap still holds."""
    lengths = [5 + (i * 37) % 200 for i in range(300)] + [900]
    config = TrainConfig(batch_size=32, sort_window=4, max_positions=800)
    batches = epoch_batches(lengths, config, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 32 for b in batches)
    assert all(len(b) * max(lengths[i] for i in b) <= 800 for b in batches if len(b) > 1)
    assert [b for b in batches if max(lengths[i] for i in b) > 800] == [[300]]
    short = sorted(len(b) for b in batches if max(lengths[i] for i in b) <= 40)
    long = [len(b) for b in batches if min(lengths[i] for i in b) > 160]
    assert short[len(short) // 2] >= 20 and max(long) <= 5, "short items go many to a batch, long ones few"
    assert batches == epoch_batches(lengths, config, epoch=0), "a resumed run replays the same plan"
    assert epoch_batches(lengths, TrainConfig(batch_size=32, sort_window=4), epoch=0) != batches


def test_collate_sees_the_training_progress_of_each_step(tmp_path: Path) -> None:
    """Schedules over training (the calibrated simulation's error level) read step / steps from the loop,
    also after a resume."""
    from speechllm_cli.core.configs import LevelSchedule

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


def test_trainings_of_different_precisions_follow_each_other_in_one_process(tmp_path: Path) -> None:
    """``speechllm run`` chains stages in one process: an fp32 encoder head, then a bf16 align on a GPU.
    Accelerate refused the second precision (``AcceleratorState has already been initialized``)."""
    import dataclasses

    from accelerate.state import AcceleratorState

    first = train(_job(tmp_path / "fp32"), CONFIG, no_track)
    seen: list[str] = []

    def loss(model, batch):  # noqa: ANN001, ANN202
        seen.append(str(AcceleratorState().mixed_precision))
        return job.loss(model, batch)

    job = _job(tmp_path / "bf16")
    second = train(dataclasses.replace(job, precision="bf16", loss=loss), CONFIG, no_track)
    assert set(seen) == {"bf16"}
    assert second.last_loss < second.first_loss * 0.5 and first.last_loss < first.first_loss * 0.5
    assert train(_job(tmp_path / "fp32-again"), CONFIG, no_track).last_loss == pytest.approx(first.last_loss)


def test_bf16_on_a_cpu_without_bf16_instructions_is_warned_of(tmp_path: Path, monkeypatch, caplog) -> None:  # noqa: ANN001
    """Emulated bf16 autocast took 98 s a mini align step against 3.3 s in fp32 (AVX2 forced): said, not silent."""
    from speechllm_cli.core import training

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu sse avx2 avx512f avx512_vnni\n")
    assert not training.cpu_has_bf16(cpuinfo)
    cpuinfo.write_text("flags\t\t: fpu avx512f avx512_bf16 amx_tile\n")
    assert training.cpu_has_bf16(cpuinfo) and training.cpu_has_bf16(tmp_path / "absent")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert (training.mixed_precision("bf16"), training.mixed_precision("auto")) == ("bf16", "no")
    assert [r.getMessage().split(" is emulated")[0] for r in caplog.records] == [
        "precision bf16 on a CPU without bf16 instructions (avx512_bf16, amx_bf16)"]
