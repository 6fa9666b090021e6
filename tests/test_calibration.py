"""Calibrated simulation: measuring an encoder's channel from constructed posteriors, and repeating it."""

from __future__ import annotations

import pytest
import torch

from speechllm_cli.core.calibration import (
    CORRECT,
    DELETION,
    SOFT,
    SUBSTITUTION,
    CalibratedSimulator,
    FrameLabels,
    align_frames,
    load_calibration,
    measure,
    save_calibration,
)
from speechllm_cli.core.configs import LevelSchedule
from speechllm_cli.core.mismatch import distance, frame_stats

V = 8
RATES = {"correct": 0.6, "substitution": 0.2, "soft": 0.1, "deletion": 0.1}
INSERTION = 0.1


def _frame(top: int, p: float, second: int | None = None, q: float = 0.0) -> torch.Tensor:
    frame = torch.full((V,), (1 - p - q) / (V - 1 - (second is not None)))
    frame[top] = p
    if second is not None:
        frame[second] = q
    return frame


def _confused(unit: int) -> int:
    return unit % (V - 1) + 1


def _constructed(utterances: int, seed: int = 0) -> tuple[list[torch.Tensor], list[list[int]]]:
    """An encoder with known behaviour: per unit 60 % right, 20 % confused with the next unit, 10 % a soft
    blank frame leaning to it, 10 % lost; after every unit a blank frame leaning nowhere with 10 %."""
    g = torch.Generator().manual_seed(seed)
    frames, references = [], []
    for _ in range(utterances):
        reference = torch.randint(1, V, (12,), generator=g).tolist()
        sequence = []
        for unit in reference:
            event = torch.rand(1, generator=g).item()
            if event < 0.6:
                sequence.append(_frame(unit, 0.8))
            elif event < 0.8:
                sequence.append(_frame(_confused(unit), 0.6, unit, 0.3))
            elif event < 0.9:
                sequence.append(_frame(0, 0.6, unit, 0.35))
            if torch.rand(1, generator=g).item() < INSERTION:
                sequence.append(_frame(0, 0.85))
        frames.append(torch.stack(sequence) if sequence else torch.zeros(0, V))
        references.append(reference)
    return frames, references


def test_alignment_reads_soft_frames_as_the_unit_they_lean_to() -> None:
    frames = torch.stack([_frame(1, 0.9), _frame(0, 0.6, 2, 0.3), _frame(0, 0.9, 5, 0.05), _frame(4, 0.9)])
    assert align_frames(FrameLabels.of(frames, 0), [1, 2, 3], 0) == [0, 1, -1, 2]


def test_calibration_recovers_known_rates_and_confusions() -> None:
    frames, references = _constructed(600)
    calibration = measure(frames, references, V)
    rates = calibration.rates()
    for name, expected in RATES.items():
        assert rates[name] == pytest.approx(expected, abs=0.025), name
    assert rates["insertion"] == pytest.approx(INSERTION, abs=0.02)
    confusion = calibration.confusion.to_dense()[1:, 1:].double()
    off_diagonal = confusion - torch.diag(torch.diag(confusion))
    confused_share = torch.tensor([off_diagonal[u - 1, _confused(u) - 1] for u in range(1, V)]) / off_diagonal.sum(1)
    assert bool((confused_share > 0.9).all()), confused_share
    assert int(calibration.events[0].sum()) == 0


def test_simulation_at_level_one_repeats_the_measured_encoder(tmp_path) -> None:
    frames, references = _constructed(600)
    save_calibration(measure(frames, references, V), tmp_path / "calibration")
    calibration = load_calibration(tmp_path / "calibration")
    simulator = CalibratedSimulator(calibration)
    texts = _constructed(600, seed=1)[1]
    padded, lengths = simulator(texts, torch.Generator().manual_seed(0), level=1.0)
    assert padded.shape[0] == len(texts) and padded.shape[2] == V
    simulated = [padded[i, : int(n)] for i, n in enumerate(lengths)]
    assert torch.allclose(padded.sum(-1)[padded.sum(-1) > 0], torch.ones(1), atol=1e-3)
    again = measure(simulated, texts, V).rates()
    for name, expected in RATES.items():
        assert again[name] == pytest.approx(expected, abs=0.03), name
    assert again["insertion"] == pytest.approx(INSERTION, abs=0.02)
    real = frame_stats(frames, references, V).summary()
    tasu_like = frame_stats([torch.nn.functional.one_hot(torch.tensor(r), V).float() for r in texts], texts, V)
    assert distance(real, frame_stats(simulated, texts, V).summary()) < 0.5 * distance(real, tasu_like.summary())


def test_level_scales_errors_and_zero_is_clean() -> None:
    frames, references = _constructed(300)
    simulator = CalibratedSimulator(measure(frames, references, V))
    clean = simulator.event_probabilities(0.0)
    assert torch.allclose(clean[:, CORRECT], torch.ones(V))
    one, double = simulator.event_probabilities(1.0), simulator.event_probabilities(2.0)
    for event in (SUBSTITUTION, SOFT, DELETION):
        assert torch.allclose(double[1:, event], 2 * one[1:, event])
    texts = _constructed(50, seed=2)[1]
    padded, lengths = simulator(texts, torch.Generator().manual_seed(0), level=0.0)
    assert lengths.tolist() == [len(t) for t in texts]
    assert [padded[i, : len(t)].argmax(-1).tolist() for i, t in enumerate(texts)] == texts


def test_simulation_is_reproducible_for_a_seed() -> None:
    frames, references = _constructed(100)
    simulator = CalibratedSimulator(measure(frames, references, V))
    texts = references[:10]
    a = simulator(texts, torch.Generator().manual_seed(7))
    b = simulator(texts, torch.Generator().manual_seed(7))
    c = simulator(texts, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not (a[0].shape == c[0].shape and torch.equal(a[0], c[0]))


def test_level_schedule_gives_the_configured_level_at_each_step() -> None:
    schedule = LevelSchedule([(0.0, 0.0), (0.5, 1.0), (1.0, 1.5)])
    steps = 10
    levels = [schedule.level_at(step / steps) for step in range(steps)]
    assert levels == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.1, 1.2, 1.3, 1.4])
    assert LevelSchedule([(0.0, 1.0)]).level_at(0.7) == 1.0
    with pytest.raises(ValueError):
        LevelSchedule([(0.5, 1.0), (0.2, 0.0)])


def test_confusions_are_kept_sparse_and_a_dense_calibration_of_before_still_loads(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    frames, references = _constructed(200)
    measured = measure(frames, references, V)
    assert measured.confusion.is_sparse
    save_calibration(measured, tmp_path / "calibration")
    stored = load_file(str(tmp_path / "calibration/calibration.safetensors"))
    assert "confusion" not in stored and stored["confusion_indices"].shape[0] == 2
    dense = measured.confusion.to_dense()
    del stored["confusion_indices"], stored["confusion_counts"]
    save_file({**stored, "confusion": dense}, str(tmp_path / "calibration/calibration.safetensors"))
    assert torch.equal(load_calibration(tmp_path / "calibration").confusion.to_dense(), dense)
