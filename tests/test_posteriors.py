"""CPS and LSD: the simulated-posterior interface from text and its compressed counterpart from speech."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from speechllm_cli.core.configs import CPSConfig, LSDConfig
from speechllm_cli.core.posteriors import label_synchronous, simulate_posteriors


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _labels(posteriors: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    return [row[:n].argmax(dim=-1).tolist() for row, n in zip(posteriors, lengths.tolist(), strict=True)]


def _random_tokens(count: int, vocab_size: int, seed: int) -> list[int]:
    """Random units with no two equal neighbours, which CTC could not tell apart without a blank.

    A nonzero step modulo the V - 1 non-blank units always lands on a different unit.
    """
    generator = torch.Generator().manual_seed(seed)
    steps = torch.randint(1, vocab_size - 1, (count,), generator=generator)
    return (1 + torch.cumsum(steps, dim=0) % (vocab_size - 1)).tolist()


def _without(labels: list[int], unit: int) -> list[int]:
    return [label for label in labels if label != unit]


def _collapse(labels: list[int]) -> list[int]:
    return torch.unique_consecutive(torch.tensor(labels)).tolist()


def _smoothing(posteriors: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each frame's ``a`` [B, L'], read back from its smallest entry a / V, and the valid-frame mask."""
    valid = torch.arange(posteriors.shape[1]) < lengths[:, None]
    return posteriors.min(dim=-1).values * posteriors.shape[-1], valid


def _assert_one_draw_per_utterance(smoothing: torch.Tensor, valid: torch.Tensor) -> None:
    first = smoothing[:, :1].expand_as(smoothing)
    assert torch.allclose(smoothing[valid], first[valid], atol=1e-6)


# CPS


def test_cps_rows_are_distributions_and_padding_is_zero() -> None:
    tokens = [[3, 4, 5, 6, 7], [9], [2, 8, 2]]
    posteriors, lengths = simulate_posteriors(tokens, 12, CPSConfig(deletion=0.0), _gen())
    assert posteriors.shape == (3, 5, 12)
    assert posteriors.dtype == torch.float32 and lengths.dtype == torch.long
    assert lengths.tolist() == [5, 1, 3]
    valid = torch.arange(5) < lengths[:, None]
    assert torch.allclose(posteriors[valid].sum(dim=-1), torch.ones(9))
    assert (posteriors[valid] >= 0).all()
    assert (posteriors[~valid] == 0).all()


def test_cps_defaults_without_deletion_keep_one_frame_per_token() -> None:
    tokens = [_random_tokens(40, 50, seed) for seed in range(4)]
    posteriors, lengths = simulate_posteriors(tokens, 50, CPSConfig(deletion=0.0), _gen())
    assert lengths.tolist() == [40] * 4
    assert _labels(posteriors, lengths) == tokens


def test_cps_deletion_rate_matches_probability() -> None:
    tokens = [_random_tokens(1000, 40, seed) for seed in range(20)]
    posteriors, lengths = simulate_posteriors(tokens, 40, CPSConfig(), _gen())
    rate = 1 - int(lengths.sum()) / 20_000
    assert 0.04 < rate < 0.06
    for kept, original in zip(_labels(posteriors, lengths), tokens, strict=True):
        remaining = iter(original)
        assert all(label in remaining for label in kept), "survivors must keep their order"


def test_cps_full_deletion_still_keeps_one_frame() -> None:
    tokens = [[1, 2, 3, 4], [5, 6]]
    posteriors, lengths = simulate_posteriors(tokens, 8, CPSConfig(deletion=1.0), _gen())
    assert lengths.tolist() == [1, 1]
    assert posteriors[0, 0].argmax().item() in {1, 2, 3, 4} and posteriors[1, 0].argmax().item() in {5, 6}


def test_cps_smoothing_is_one_uniform_draw_per_utterance() -> None:
    vocab_size = 20
    tokens = [_random_tokens(6, vocab_size, seed) for seed in range(300)]
    posteriors, lengths = simulate_posteriors(tokens, vocab_size, CPSConfig(smoothing_max=0.1, deletion=0.0), _gen())
    smoothing, valid = _smoothing(posteriors, lengths)
    _assert_one_draw_per_utterance(smoothing, valid)
    draws = smoothing[:, 0]
    assert draws.min() >= 0 and draws.max() <= 0.1 + 1e-6
    assert draws.min() < 0.01 and draws.max() > 0.09, "draws should spread over U(0, 0.1)"
    assert 0.045 < draws.mean() < 0.055
    token_mass = posteriors[0, 0, tokens[0][0]]
    assert torch.isclose(token_mass, 1 - draws[0] + draws[0] / vocab_size)


def test_cps_without_smoothing_gives_exact_one_hots() -> None:
    posteriors, lengths = simulate_posteriors([[1, 2, 3]], 5, CPSConfig(smoothing_max=0.0, deletion=0.0), _gen())
    assert torch.equal(posteriors[0], torch.eye(5)[[1, 2, 3]])


def test_cps_insertion_count_and_kinds() -> None:
    tokens = [list(range(1, 1001)), list(range(1000, 0, -1)), [5, 6, 7]]
    config = CPSConfig(deletion=0.0, insertion=0.5)
    posteriors, lengths = simulate_posteriors(tokens, 1001, config, _gen())
    assert lengths.tolist() == [1000 + 500, 1000 + 500, 3 + round(1.5)]
    inserted_blanks = 0
    for labels, original in zip(_labels(posteriors, lengths), tokens, strict=True):
        assert _without(_collapse(labels), 0) == original, "a non-blank insertion must touch its neighbour"
        inserted_blanks += labels.count(0)
    share = inserted_blanks / (500 + 500 + 2)
    assert 0.44 < share < 0.56


@pytest.mark.parametrize(("blank_share", "blanks"), [(0.0, 0), (1.0, 300)])
def test_cps_insertion_blank_share_extremes(blank_share: float, blanks: int) -> None:
    tokens = [list(range(1, 301))]
    config = CPSConfig(deletion=0.0, insertion=1.0, insertion_blank_share=blank_share)
    posteriors, lengths = simulate_posteriors(tokens, 301, config, _gen())
    assert _labels(posteriors, lengths)[0].count(0) == blanks


def test_cps_substitution_rate_counts_only_real_changes() -> None:
    """Three units make a substitute that may equal the original show up as a rate of 2/3 * 0.1."""
    tokens = [_random_tokens(1000, 4, seed) for seed in range(20)]
    config = CPSConfig(deletion=0.0, substitution=0.1)
    posteriors, lengths = simulate_posteriors(tokens, 4, config, _gen())
    labels = _labels(posteriors, lengths)
    changed = sum(a != b for row, original in zip(labels, tokens, strict=True)
                  for a, b in zip(row, original, strict=True))
    assert 0.09 < changed / 20_000 < 0.11
    assert all(0 not in row for row in labels), "substitutes are non-blank units"


def test_cps_repeat_rate_and_collapse() -> None:
    tokens = [_random_tokens(1000, 30, seed) for seed in range(20)]
    posteriors, lengths = simulate_posteriors(tokens, 30, CPSConfig(deletion=0.0, repeat=0.2), _gen())
    assert 0.18 < int(lengths.sum()) / 20_000 - 1 < 0.22
    labels = _labels(posteriors, lengths)
    assert [_collapse(row) for row in labels] == tokens
    assert all(0 not in row for row in labels)


def test_cps_blank_rate_and_blank_smoothing() -> None:
    vocab_size = 30
    tokens = [_random_tokens(1000, vocab_size, seed) for seed in range(20)]
    posteriors, lengths = simulate_posteriors(tokens, vocab_size, CPSConfig(deletion=0.0, blank=0.2), _gen())
    labels = _labels(posteriors, lengths)
    assert 0.18 < sum(row.count(0) for row in labels) / 20_000 < 0.22
    assert [_without(row, 0) for row in labels] == tokens
    assert all(row[0] != 0 for row in labels), "a blank follows a frame, never leads"
    _assert_one_draw_per_utterance(*_smoothing(posteriors, lengths))


def test_cps_is_deterministic_per_seed() -> None:
    tokens = [_random_tokens(50, 40, seed) for seed in range(6)]
    config = CPSConfig(deletion=0.1, insertion=0.1, substitution=0.1, repeat=0.1, blank=0.1)
    first = simulate_posteriors(tokens, 40, config, _gen(7))
    again = simulate_posteriors(tokens, 40, config, _gen(7))
    other = simulate_posteriors(tokens, 40, config, _gen(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not (first[0].shape == other[0].shape and torch.equal(first[0], other[0]))


def test_cps_empty_transcript_gives_length_zero() -> None:
    posteriors, lengths = simulate_posteriors([[], [1, 2]], 4, CPSConfig(deletion=0.0), _gen())
    assert lengths.tolist() == [0, 2]
    assert (posteriors[0] == 0).all()


@pytest.mark.parametrize("tokens", [[[1, 0, 2]], [[1, 5]], [[-1]]])
def test_cps_rejects_blank_or_out_of_range_ids(tokens: list[list[int]]) -> None:
    with pytest.raises(ValueError, match="token id"):
        simulate_posteriors(tokens, 5, CPSConfig(), _gen())


@pytest.mark.parametrize(("model", "values"), [
    (CPSConfig, {"deletion": 1.5}),
    (CPSConfig, {"smoothing_max": -0.1}),
    (CPSConfig, {"insertion_blank_share": 2}),
    (CPSConfig, {"substitution": "often"}),
    (CPSConfig, {"delete": 0.1}),
    (LSDConfig, {"blank_threshold": 1.2}),
    (LSDConfig, {"blank_id": -1}),
])
def test_invalid_config_values_are_validation_errors(model: type, values: dict) -> None:
    with pytest.raises(ValidationError):
        model(**values)


# LSD

BLANK_95 = [0.95, 0.02, 0.02, 0.01]
BLANK_75 = [0.75, 0.15, 0.05, 0.05]
BLANK_60 = [0.6, 0.3, 0.05, 0.05]
ONE_A = [0.1, 0.8, 0.05, 0.05]
ONE_B = [0.3, 0.6, 0.05, 0.05]
ONE_C = [0.0, 1.0, 0.0, 0.0]
TWO_A = [0.2, 0.1, 0.7, 0.0]
TWO_B = [0.4, 0.0, 0.5, 0.1]


def _utterance(*frames: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([frames]), torch.tensor([len(frames)])


def test_lsd_merges_label_runs_and_keeps_uncertain_blanks() -> None:
    posteriors, lengths = _utterance(ONE_A, ONE_B, ONE_C, BLANK_95, BLANK_60, BLANK_60, TWO_A, TWO_B, ONE_A)
    merged, merged_lengths = label_synchronous(posteriors, lengths, LSDConfig())
    expected = torch.stack([
        torch.tensor([ONE_A, ONE_B, ONE_C]).mean(dim=0),
        torch.tensor(BLANK_60), torch.tensor(BLANK_60),
        torch.tensor([TWO_A, TWO_B]).mean(dim=0),
        torch.tensor(ONE_A),
    ]).unsqueeze(0)
    assert merged_lengths.tolist() == [5]
    assert torch.allclose(merged, expected)
    assert torch.isclose(merged[0, 0, 0], torch.tensor((0.1 + 0.3 + 0.0) / 3)), "run keeps its mean P(blank)"


def test_lsd_confident_blank_separates_equal_labels() -> None:
    posteriors, lengths = _utterance(ONE_A, ONE_A, BLANK_95, ONE_B, ONE_B)
    merged, merged_lengths = label_synchronous(posteriors, lengths, LSDConfig())
    assert merged_lengths.tolist() == [2]
    assert torch.allclose(merged[0], torch.tensor([ONE_A, ONE_B]))


@pytest.mark.parametrize(("threshold", "kept_blanks"), [
    (0.99, [BLANK_95, BLANK_75, BLANK_60]),
    (0.9, [BLANK_75, BLANK_60]),
    (0.75, [BLANK_60]),
    (0.5, []),
])
def test_lsd_threshold_drops_blank_frames_at_or_above_it(threshold: float, kept_blanks: list) -> None:
    posteriors, lengths = _utterance(TWO_A, BLANK_95, BLANK_75, BLANK_60)
    merged, merged_lengths = label_synchronous(posteriors, lengths, LSDConfig(blank_threshold=threshold))
    assert merged_lengths.tolist() == [1 + len(kept_blanks)]
    assert torch.allclose(merged[0], torch.tensor([TWO_A, *kept_blanks]))


def test_lsd_respects_blank_id() -> None:
    blank_last = [[row[1], row[2], row[3], row[0]] for row in (ONE_A, BLANK_95, BLANK_60, ONE_B)]
    posteriors, lengths = _utterance(*blank_last)
    merged, merged_lengths = label_synchronous(posteriors, lengths, LSDConfig(blank_id=3))
    assert merged_lengths.tolist() == [3]
    assert merged[0].argmax(dim=-1).tolist() == [0, 3, 0]


def _sticky_posteriors(lengths: list[int], frames: int, vocab_size: int, seed: int) -> torch.Tensor:
    """Random posteriors with label runs and many blanks, like a CTC encoder's output."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(lengths), frames, vocab_size, generator=generator)
    labels = torch.randint(vocab_size, (len(lengths), frames // 3 + 1), generator=generator)
    labels = labels.repeat_interleave(3, dim=1)[:, :frames]
    logits.scatter_add_(2, labels.unsqueeze(-1), torch.full((len(lengths), frames, 1), 3.0))
    logits[..., 0] += 1.5
    return logits.softmax(dim=-1)


def test_lsd_batch_matches_each_utterance_alone() -> None:
    sizes = [17, 0, 9, 30]
    posteriors = _sticky_posteriors(sizes, 30, 6, seed=3)
    merged, merged_lengths = label_synchronous(posteriors, torch.tensor(sizes), LSDConfig(blank_threshold=0.5))
    assert merged_lengths[1] == 0
    assert 0 < merged_lengths.max() < 30, "the input should exercise both merging and dropping"
    for index, size in enumerate(sizes):
        alone, alone_length = label_synchronous(posteriors[index:index + 1, :size], torch.tensor([size]),
                                                LSDConfig(blank_threshold=0.5))
        assert alone_length.item() == merged_lengths[index].item()
        assert torch.allclose(merged[index, :alone_length.item()], alone[0, :alone_length.item()])
        assert (merged[index, alone_length.item():] == 0).all()


def test_lsd_ignores_frames_past_the_length() -> None:
    posteriors, _ = _utterance(ONE_A, TWO_A, BLANK_60, ONE_B)
    merged, merged_lengths = label_synchronous(posteriors, torch.tensor([2]), LSDConfig())
    assert merged_lengths.tolist() == [2]
    assert torch.allclose(merged[0], torch.tensor([ONE_A, TWO_A]))


def test_lsd_utterance_with_no_frame_left_gets_length_zero() -> None:
    posteriors = torch.tensor([[BLANK_95, BLANK_95, BLANK_95], [BLANK_95, TWO_A, BLANK_95]])
    merged, merged_lengths = label_synchronous(posteriors, torch.tensor([3, 3]), LSDConfig())
    assert merged_lengths.tolist() == [0, 1]
    assert merged.shape == (2, 1, 4)
    assert (merged[0] == 0).all()
    silent, silent_lengths = label_synchronous(posteriors[:1], torch.tensor([3]), LSDConfig())
    assert silent.shape == (1, 0, 4) and silent_lengths.tolist() == [0]


def test_lsd_keeps_the_input_dtype() -> None:
    posteriors, lengths = _utterance(ONE_A, ONE_B, TWO_A)
    merged, _ = label_synchronous(posteriors.to(torch.float64), lengths, LSDConfig())
    assert merged.dtype == torch.float64


# CPS then LSD


@pytest.mark.parametrize("config", [
    CPSConfig(deletion=0.0),
    CPSConfig(deletion=0.0, repeat=0.3, blank=0.3),
], ids=["tasu", "with-repeats-and-blanks"])
def test_lsd_recovers_tokens_from_clean_cps(config: CPSConfig) -> None:
    tokens = [_random_tokens(length, 100, seed) for seed, length in enumerate([30, 1, 12, 45])]
    posteriors, lengths = simulate_posteriors(tokens, 100, config, _gen(5))
    merged, merged_lengths = label_synchronous(posteriors, lengths, LSDConfig(blank_threshold=0.9))
    assert merged_lengths.tolist() == [30, 1, 12, 45]
    assert _labels(merged, merged_lengths) == tokens


def test_lsd_segments_pool_hidden_states_over_the_posteriors_runs() -> None:
    """The unified interface's speech side: any per-frame vectors pooled over the segments LSD keeps."""
    from speechllm_cli.core.posteriors import lsd_segments

    frames = torch.tensor([[[0.1, 0.9, 0.0], [0.1, 0.8, 0.1], [0.95, 0.05, 0.0], [0.6, 0.1, 0.3], [0.2, 0.0, 0.8]],
                           [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    lengths = torch.tensor([5, 3])
    hidden = torch.arange(2 * 5 * 4, dtype=torch.float32).reshape(2, 5, 4)
    config = LSDConfig(blank_threshold=0.9)
    pooled, pooled_lengths = lsd_segments(frames, lengths, config).pool(hidden)
    assert pooled_lengths.tolist() == [3, 1] == label_synchronous(frames, lengths, config)[1].tolist()
    expected = [hidden[0, :2].mean(0), hidden[0, 3], hidden[0, 4]]
    assert torch.allclose(pooled[0], torch.stack(expected))
    assert torch.allclose(pooled[1, 0], hidden[1, :3].mean(0)) and not pooled[1, 1:].any()


def test_dtw_cosine_is_zero_for_the_same_vectors_at_any_pace_and_grows_when_they_differ() -> None:
    from speechllm_cli.core.vector_mismatch import dtw_cosine

    vectors = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    slowed = torch.cat([vectors[:3], vectors[2:3], vectors[2:3], vectors[3:]])
    assert dtw_cosine(vectors, vectors) == pytest.approx(0, abs=1e-6)
    assert dtw_cosine(vectors, slowed) == pytest.approx(0, abs=1e-6)
    assert dtw_cosine(vectors, -vectors) > dtw_cosine(vectors, vectors + 0.5 * torch.randn(6, 8)) > 0
