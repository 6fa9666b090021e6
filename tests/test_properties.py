"""Property tests (hypothesis) for the three pieces every WER and every text-only system rests on: text
normalisation, CPS (simulated CTC posteriors) and LSD (label-synchronous decoding).

The unit tests in ``test_text.py`` and ``test_posteriors.py`` pin hand-picked cases; these state what must
hold for any input, so hypothesis can look for the input that breaks it. Three normaliser bugs found this way
(thousands separators, digit runs past num2words' range, the dotted capital I) have tests of their own below.
"""

from __future__ import annotations

import re
import unicodedata

import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from speechllm_cli.core.configs import CPSConfig, LSDConfig
from speechllm_cli.core.posteriors import label_synchronous, simulate_posteriors
from speechllm_cli.data.normalize import NormalizerConfig, normalize

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""Modest example counts keep the file to seconds; ``deadline=None`` because torch's first calls are slow."""

# Normalisation

DOTTED_CAPITAL_I = "\u0130"
"""'İ', which ``str.lower`` turns into 'i' + a combining dot (a mark, not ``\\w``): the one character that
broke idempotence when lowercasing ran after the apostrophe rule; it has a test of its own below."""

configs = st.builds(NormalizerConfig, lowercase=st.booleans(), punctuation=st.sampled_from(["keep", "basic", "strip"]),
                    numbers=st.sampled_from(["keep", "words"]))
SPECIAL = list("0123456789٣５.,'’-_!?%@ \t\n")
texts = st.lists(st.characters(exclude_categories=("Cs",)) | st.sampled_from(SPECIAL), max_size=80).map("".join)
"""Arbitrary unicode, with digits (ASCII and not), separators, apostrophes, symbols and whitespace drawn half
the time: a list of one-character strategies, since ``st.text`` would merge both into one uniform alphabet.
At most 80 characters; digit runs past num2words' range have a test of their own below."""

WORD_CHAR_CATEGORIES = "LNM"
"""Letters, numbers and combining marks: what ``strip`` keeps as parts of words."""


def _is_word_char(char: str) -> bool:
    return unicodedata.category(char)[0] in WORD_CHAR_CATEGORIES


@PROPERTY
@given(text=texts, config=configs, lang=st.sampled_from(["en", "de", "fr", "xx"]))
def test_normalize_never_raises_and_collapses_whitespace(text: str, config: NormalizerConfig, lang: str) -> None:
    """Any transcript gives a result (``xx`` exercises the English fallback for languages num2words lacks;
    Spanish, whose num2words overflows on 28-digit runs, is in the digit-run test below); whitespace comes
    out as single ASCII spaces between tokens, never at the ends."""
    out = normalize(text, config, lang=lang)
    assert out == out.strip() and "  " not in out
    assert all(char == " " or not char.isspace() for char in out)


@PROPERTY
@given(text=texts, config=configs, lang=st.sampled_from(["en", "de", "fr"]))
def test_normalize_output_alphabet(text: str, config: NormalizerConfig, lang: str) -> None:
    """``strip`` leaves letters, digits, marks, spaces and in-word apostrophes; ``basic`` adds . , ! ?;
    ``words`` leaves no digit; ``lowercase`` leaves nothing that lowercases further."""
    out = normalize(text, config, lang=lang)
    if config.punctuation != "keep":
        extra = "'" + (".,!?" if config.punctuation == "basic" else "")
        assert all(_is_word_char(char) or char == " " or char in extra for char in out), out
        assert "’" not in out
    if config.punctuation == "strip":
        for match in re.finditer("'", out):
            start = match.start()
            assert 0 < start < len(out) - 1 and _is_word_char(out[start - 1]) and _is_word_char(out[start + 1]), out
    if config.numbers == "words":
        assert not any(unicodedata.category(char) == "Nd" for char in out), out
    if config.lowercase:
        assert out == out.lower()


@PROPERTY
@given(text=texts)
def test_normalize_keep_everything_only_composes_and_collapses_whitespace(text: str) -> None:
    """With every cleaning step off, the text is the NFC form with whitespace runs made single spaces."""
    config = NormalizerConfig(lowercase=False, punctuation="keep", numbers="keep")
    assert normalize(text, config) == " ".join(unicodedata.normalize("NFC", text).split())


@PROPERTY
@given(text=texts, config=configs,
       lang=st.sampled_from(["en", "de", "fr"]))
@example(text="Don't 'quote' 3.5 Ⅻ ½ e\u0301", config=NormalizerConfig(), lang="en")
def test_normalize_is_idempotent(text: str, config: NormalizerConfig, lang: str) -> None:
    """Scoring normalises hypotheses that come from models trained on normalised targets: a second pass
    must change nothing, or the same words would score differently depending on where they came from."""
    once = normalize(text, config, lang=lang)
    assert normalize(once, config, lang=lang) == once


letters = st.text(st.sampled_from("abcxyzIÉ"), max_size=4)


@PROPERTY
@given(left=letters, right=letters.filter(bool))
def test_normalize_is_idempotent_around_dotted_capital_i(left: str, right: str) -> None:
    once = normalize(f"{left}{DOTTED_CAPITAL_I}'{right}", NormalizerConfig())
    assert normalize(once, NormalizerConfig()) == once


@PROPERTY
@given(number=st.integers(min_value=0, max_value=10**12))
@example(number=1_000_000)
def test_thousands_separators_do_not_change_the_spelled_number(number: int) -> None:
    """``_spell_numbers`` strips commas from a matched number, i.e. it means them as thousands separators."""
    assert normalize(f"{number:,}", NormalizerConfig()) == normalize(str(number), NormalizerConfig())


@PROPERTY
@given(digits=st.integers(min_value=1, max_value=400), lang=st.sampled_from(["en", "es"]))
@example(digits=307, lang="en")
def test_any_digit_run_is_spelled_out(digits: int, lang: str) -> None:
    out = normalize("7" * digits, NormalizerConfig(), lang=lang)
    assert out and not any(char.isdigit() for char in out)


# CPS

probabilities = st.floats(min_value=0.0, max_value=1.0)

CPSCase = tuple[list[list[int]], int, CPSConfig, int]
"""Transcripts, vocabulary size V, knobs, generator seed."""
LSDCase = tuple[torch.Tensor, torch.Tensor, LSDConfig]
"""Posteriors [B, T, V], lengths [B], LSD settings."""
RoundTrip = tuple[list[list[int]], int, CPSConfig, float, int]
"""Transcripts, V, clean CPS knobs, LSD threshold, seed."""


@st.composite
def cps_configs(draw: st.DrawFn, vocab_size: int, **fixed: float) -> CPSConfig:
    """Every knob drawn over its whole range unless fixed; no substitution without two units to swap."""
    values = {name: draw(probabilities) for name in
              ("smoothing_max", "deletion", "insertion", "insertion_blank_share", "substitution", "repeat", "blank")}
    if vocab_size < 3:
        values["substitution"] = 0.0
    return CPSConfig(**{**values, **fixed})


@st.composite
def transcripts(draw: st.DrawFn, vocab_size: int, distinct_neighbours: bool = False) -> list[list[int]]:
    """A batch of 1-4 token lists over the units 1..V-1 (never the blank), some of them empty.

    ``distinct_neighbours`` draws lists where no unit follows itself, which is what a clean CTC reading
    can give back exactly (two equal neighbours need a blank between them).
    """
    units = st.integers(min_value=1, max_value=vocab_size - 1)
    if not distinct_neighbours:
        return draw(st.lists(st.lists(units, max_size=12), min_size=1, max_size=4))
    batch = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        length = draw(st.integers(min_value=0, max_value=12 if vocab_size > 2 else 1))
        tokens: list[int] = []
        for _ in range(length):
            tokens.append(draw(units.filter(lambda unit, last=tokens[-1:]: [unit] != last)))
        batch.append(tokens)
    return batch


def _simulate(tokens: list[list[int]], vocab_size: int, config: CPSConfig,
              seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return simulate_posteriors(tokens, vocab_size, config, torch.Generator().manual_seed(seed))


def _labels(posteriors: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    return [row[:n].argmax(dim=-1).tolist() for row, n in zip(posteriors, lengths.tolist(), strict=True)]


def _greedy(labels: list[int]) -> list[int]:
    """Best-path CTC reading of a frame label sequence: collapse repeats, then drop blanks."""
    return [label for i, label in enumerate(labels) if label != 0 and (i == 0 or labels[i - 1] != label)]


def _collapse(labels: list[int]) -> list[int]:
    return [label for i, label in enumerate(labels) if i == 0 or labels[i - 1] != label]


def _is_subsequence(part: list[int], whole: list[int]) -> bool:
    remaining = iter(whole)
    return all(label in remaining for label in part)


@st.composite
def cps_cases(draw: st.DrawFn, distinct_neighbours: bool = False,
              **fixed: float) -> CPSCase:
    vocab_size = draw(st.integers(min_value=2, max_value=12))
    tokens = draw(transcripts(vocab_size, distinct_neighbours))
    return tokens, vocab_size, draw(cps_configs(vocab_size, **fixed)), draw(st.integers(0, 2**32 - 1))


@PROPERTY
@given(case=cps_cases())
def test_cps_rows_are_distributions_with_one_smoothing_per_utterance(case: CPSCase) -> None:
    """Each valid frame is (1 - a) * onehot + a / V with one a in [0, smoothing_max] per utterance;
    padding frames are all zero."""
    tokens, vocab_size, config, seed = case
    posteriors, lengths = _simulate(tokens, vocab_size, config, seed)
    assert posteriors.dtype == torch.float32 and lengths.dtype == torch.long
    assert posteriors.shape == (len(tokens), int(lengths.max()), vocab_size)
    valid = torch.arange(posteriors.shape[1]) < lengths[:, None]
    assert (posteriors[~valid] == 0).all()
    rows = posteriors[valid]
    assert (rows >= 0).all()
    torch.testing.assert_close(rows.sum(dim=-1), torch.ones(len(rows)), atol=1e-5, rtol=0)
    for row, n in zip(posteriors, lengths.tolist(), strict=True):
        if n == 0:
            continue
        smoothing = row[:n].min(dim=-1).values * vocab_size
        assert 0 <= float(smoothing.min()) and float(smoothing.max()) <= config.smoothing_max + 1e-6
        torch.testing.assert_close(smoothing, smoothing[:1].expand(n), atol=1e-5, rtol=0)
        torch.testing.assert_close(row[:n].max(dim=-1).values, 1 - smoothing + smoothing / vocab_size, atol=1e-5,
                                   rtol=0)
        assert ((row[:n] == row[:n].min(dim=-1, keepdim=True).values).sum(dim=-1) == vocab_size - 1).all()


@PROPERTY
@given(case=cps_cases())
def test_cps_lengths_follow_the_knobs(case: CPSCase) -> None:
    """An empty transcript stays empty; otherwise K >= 1 labels survive deletion, each gains at most a
    repeat and a blank, and exactly round(L * insertion) frames are inserted."""
    tokens, vocab_size, config, seed = case
    _, lengths = _simulate(tokens, vocab_size, config, seed)
    for ids, length in zip(tokens, lengths.tolist(), strict=True):
        if not ids:
            assert length == 0
            continue
        inserted = round(len(ids) * config.insertion)
        per_label = 1 + (config.repeat > 0) + (config.blank > 0)
        assert 1 + inserted <= length <= per_label * len(ids) + inserted
        if config.deletion == 0:
            assert length >= len(ids) + inserted
        if config.deletion == 1:
            assert length <= per_label + inserted


@PROPERTY
@given(case=cps_cases(distinct_neighbours=True, deletion=0.0, substitution=0.0, insertion=0.0))
def test_clean_cps_reads_back_as_the_transcript(case: CPSCase) -> None:
    """No deletion, substitution or insertion: whatever repeats and blanks are added, the best-path CTC
    reading of the frames' argmax is the transcript again."""
    tokens, vocab_size, config, seed = case
    posteriors, lengths = _simulate(tokens, vocab_size, config, seed)
    labels = _labels(posteriors, lengths)
    assert [_greedy(row) for row in labels] == tokens
    assert all(not row or row[0] != 0 for row in labels), "a blank follows a frame, it never leads"


@PROPERTY
@given(case=cps_cases(distinct_neighbours=True, deletion=0.0, substitution=0.0, repeat=0.0))
def test_inserted_copies_touch_their_neighbour(case: CPSCase) -> None:
    """Insertions (copies or blanks) without repeats still read back as the transcript: an inserted copy
    sits next to the frame it copies, so CTC merges the two."""
    tokens, vocab_size, config, seed = case
    posteriors, lengths = _simulate(tokens, vocab_size, config, seed)
    assert [_greedy(row) for row in _labels(posteriors, lengths)] == tokens


@PROPERTY
@given(case=cps_cases(substitution=0.0, insertion=0.0, repeat=0.0, blank=0.0))
def test_deletion_keeps_an_ordered_subsequence(case: CPSCase) -> None:
    tokens, vocab_size, config, seed = case
    posteriors, lengths = _simulate(tokens, vocab_size, config, seed)
    for kept, ids in zip(_labels(posteriors, lengths), tokens, strict=True):
        assert _is_subsequence(kept, ids) and len(kept) <= len(ids)


@PROPERTY
@given(case=cps_cases(deletion=0.0, substitution=0.0))
def test_repeats_and_insertions_never_change_the_collapsed_units(case: CPSCase) -> None:
    """For any transcript, even with equal neighbours: dropping blanks and collapsing repeats gives the
    transcript's collapsed units (an inserted blank may split a repeat in two, never invent a unit)."""
    tokens, vocab_size, config, seed = case
    posteriors, lengths = _simulate(tokens, vocab_size, config, seed)
    for labels, ids in zip(_labels(posteriors, lengths), tokens, strict=True):
        assert _collapse([label for label in labels if label != 0]) == _collapse(ids)


@PROPERTY
@given(case=cps_cases(substitution=1.0, deletion=0.0, insertion=0.0, repeat=0.0, blank=0.0).filter(
    lambda case: case[1] >= 3))
def test_full_substitution_changes_every_label_to_another_unit(case: CPSCase) -> None:
    tokens, vocab_size, config, seed = case
    posteriors, lengths = _simulate(tokens, vocab_size, config, seed)
    for labels, ids in zip(_labels(posteriors, lengths), tokens, strict=True):
        assert len(labels) == len(ids)
        assert all(0 < label != unit for label, unit in zip(labels, ids, strict=True))


@PROPERTY
@given(case=cps_cases())
def test_cps_is_a_function_of_the_seed(case: CPSCase) -> None:
    tokens, vocab_size, config, seed = case
    first, again = _simulate(tokens, vocab_size, config, seed), _simulate(tokens, vocab_size, config, seed)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


# LSD


@st.composite
def lsd_cases(draw: st.DrawFn) -> LSDCase:
    """Posteriors [B, T, V] as the softmax of drawn logits (hypothesis favours repeated values, so runs,
    ties and confident frames all come up), lengths 0..T per row, any threshold and blank id."""
    batch, frames, vocab_size = (draw(st.integers(1, 4)), draw(st.integers(0, 10)), draw(st.integers(2, 5)))
    logits = draw(arrays("float32", (batch, frames, vocab_size), elements=st.floats(-8, 8, width=32)))
    lengths = draw(st.lists(st.integers(0, frames), min_size=batch, max_size=batch))
    config = LSDConfig(blank_threshold=draw(probabilities), blank_id=draw(st.integers(0, vocab_size - 1)))
    return torch.from_numpy(logits).softmax(dim=-1), torch.tensor(lengths), config


def _reference_lsd(frames: torch.Tensor, config: LSDConfig) -> list[tuple[torch.Tensor, int]]:
    """LSD of one utterance written as the plain loop its docstring describes, in float64: runs of equal
    non-blank argmax become their mean, blank-argmax frames stay alone, then frames with P(blank) >= the
    threshold go. Returns (frame, run label) pairs."""
    labels = frames.float().argmax(dim=-1).tolist()
    runs: list[list[int]] = []
    for index, label in enumerate(labels):
        if runs and label != config.blank_id and labels[runs[-1][0]] == label:
            runs[-1].append(index)
        else:
            runs.append([index])
    means = [(frames[run].double().mean(dim=0), labels[run[0]]) for run in runs]
    assume(all(abs(float(mean[config.blank_id]) - config.blank_threshold) > 1e-6 for mean, _ in means))
    return [(mean, label) for mean, label in means if float(mean[config.blank_id]) < config.blank_threshold]


@PROPERTY
@given(case=lsd_cases())
def test_lsd_output_is_shorter_with_distribution_rows_below_the_threshold(case: LSDCase) -> None:
    posteriors, lengths, config = case
    merged, merged_lengths = label_synchronous(posteriors, lengths, config)
    assert merged.dtype == posteriors.dtype and merged_lengths.shape == lengths.shape
    assert (merged_lengths <= lengths).all()
    assert merged.shape == (len(lengths), int(merged_lengths.max()), posteriors.shape[2])
    valid = torch.arange(merged.shape[1]) < merged_lengths[:, None]
    assert (merged[~valid] == 0).all()
    rows = merged[valid]
    assert (rows >= 0).all() and (rows[:, config.blank_id] < config.blank_threshold).all()
    torch.testing.assert_close(rows.sum(dim=-1), torch.ones(len(rows)), atol=1e-5, rtol=0)


@PROPERTY
@given(case=lsd_cases())
def test_lsd_equals_the_plain_loop(case: LSDCase) -> None:
    """The batched implementation against a frame-by-frame reference; also each kept run's frame still has
    the run's label among its maxima, so LSD keeps the non-blank argmax sequence in order."""
    posteriors, lengths, config = case
    merged, merged_lengths = label_synchronous(posteriors, lengths, config)
    for row, length in enumerate(lengths.tolist()):
        expected = _reference_lsd(posteriors[row, :length], config)
        assert int(merged_lengths[row]) == len(expected)
        for frame, (mean, label) in zip(merged[row], expected, strict=False):
            torch.testing.assert_close(frame.double(), mean, atol=1e-5, rtol=0)
            assert float(frame[label]) >= float(frame.max()) - 1e-6


@PROPERTY
@given(case=lsd_cases(), data=st.data())
def test_lsd_ignores_padding_and_other_utterances(case: LSDCase, data: st.DataObject) -> None:
    """Whatever sits past an utterance's length, and whichever utterances share its batch, its output is
    the same as when it is run alone."""
    posteriors, lengths, config = case
    merged, merged_lengths = label_synchronous(posteriors, lengths, config)
    noise = data.draw(arrays("float32", posteriors.shape, elements=st.floats(-8, 8, width=32)))
    padded = torch.where(torch.arange(posteriors.shape[1])[None, :, None] < lengths[:, None, None], posteriors,
                         torch.from_numpy(noise).softmax(dim=-1))
    again, again_lengths = label_synchronous(padded, lengths, config)
    assert torch.equal(again_lengths, merged_lengths) and torch.equal(again, merged)
    for row, length in enumerate(lengths.tolist()):
        alone, alone_length = label_synchronous(posteriors[row:row + 1, :length], lengths[row:row + 1], config)
        assert int(alone_length) == int(merged_lengths[row])
        torch.testing.assert_close(alone[0], merged[row, : int(alone_length)], atol=1e-6, rtol=0)


@PROPERTY
@given(case=lsd_cases(), other=probabilities)
def test_a_higher_threshold_never_keeps_fewer_frames(case: LSDCase, other: float) -> None:
    """Runs are found before dropping, so the threshold only decides which of the same frames survive."""
    posteriors, lengths, config = case
    low, high = sorted([config.blank_threshold, other])
    _, kept_low = label_synchronous(posteriors, lengths, LSDConfig(blank_threshold=low, blank_id=config.blank_id))
    _, kept_high = label_synchronous(posteriors, lengths, LSDConfig(blank_threshold=high, blank_id=config.blank_id))
    assert (kept_low <= kept_high).all()


# CPS then LSD


@st.composite
def clean_round_trips(draw: st.DrawFn) -> RoundTrip:
    """A clean simulation (any repeats and blanks, smoothing up to 0.4) and a threshold in [0.5, 1 - s_max],
    with a 1e-6 margin for float32: token frames have P(blank) = a / V <= 0.2 and blank frames
    1 - a + a / V > 1 - s_max, so LSD keeps every token frame and drops every blank one."""
    tokens, vocab_size, config, seed = draw(cps_cases(distinct_neighbours=True, deletion=0.0, substitution=0.0,
                                                      insertion=0.0, smoothing_max=draw(st.floats(0.0, 0.4))))
    threshold = draw(st.floats(0.5, 1 - config.smoothing_max - 1e-6))
    return tokens, vocab_size, config, threshold, seed


@PROPERTY
@given(case=clean_round_trips())
def test_lsd_of_clean_cps_is_one_frame_per_token(case: RoundTrip) -> None:
    """TASU's premise: LSD squeezes posteriors to about one frame per label, so on a clean simulation it
    gives back exactly the transcript's units, one frame each, whatever repeats and blanks were added."""
    tokens, vocab_size, config, threshold, seed = case
    posteriors, lengths = _simulate(tokens, vocab_size, config, seed)
    merged, merged_lengths = label_synchronous(posteriors, lengths, LSDConfig(blank_threshold=threshold))
    assert merged_lengths.tolist() == [len(ids) for ids in tokens]
    assert _labels(merged, merged_lengths) == tokens
