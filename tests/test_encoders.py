"""CTC encoders: the shared contract (shapes, lengths, blank 0, padding exactness, save/load) for the
project's Conformer-CTC and for a tiny random Hugging Face wav2vec2 built on disk (no hub access here)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.core.encoders import (
    BLANK_ID,
    ENCODERS,
    ConformerCTC,
    ConformerCTCConfig,
    HFCTCEncoder,
    build_encoder,
    greedy_ids,
    load_encoder,
)
from speechllm_cli.core.features import SpecAugment, SpecAugmentConfig, fbank, normalize, pad_waveforms
from speechllm_cli.data.tokenizer import TokenizerConfig, train_tokenizer
from tests.conftest import tiny_wav2vec2

SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "speech meets text in the posterior space",
             "we train a small model", "blank is id zero"]
HF_VOCAB = {"a": 0, "b": 1, "c": 2, "<pad>": 3, "d": 4, "e": 5, "|": 6, "<unk>": 7}
"""The pad (CTC blank) sits at 3, so the blank-to-0 permutation is really exercised."""


def waves(*seconds: float, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for duration in seconds:
        samples = int(duration * 16000)
        t = torch.arange(samples) / 16000
        tone = 0.3 * torch.sin(2 * torch.pi * (150 + 400 * torch.rand(1, generator=generator)) * t)
        out.append(tone + 0.05 * torch.randn(samples, generator=generator))
    return out


def assert_padding_exact(encoder: torch.nn.Module, audio: list[torch.Tensor]) -> None:
    batch = encoder(audio)
    for row, wave in enumerate(audio):
        alone = encoder([wave])
        frames = int(alone.lengths[0])
        assert int(batch.lengths[row]) == frames
        torch.testing.assert_close(batch.log_probs[row, :frames], alone.log_probs[0, :frames], atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer(SENTENCES, TokenizerConfig(vocab_size=40, model_type="char"), folder)
    return folder / "tokenizer.model"


@pytest.fixture(scope="module")
def conformer(tokenizer: Path) -> ConformerCTC:
    torch.manual_seed(0)
    return build_encoder("conformer-ctc", {}, tokenizer=tokenizer).eval()


def test_greedy_ids_collapses_repeats_drops_blanks_and_padding() -> None:
    frames = torch.tensor([[1, 1, 0, 1, 2, 2, 0, 0, 3, 3], [0, 4, 4, 0, 4, 5, 5, 5, 5, 5]])
    log_probs = torch.nn.functional.one_hot(frames, 6).float().log()
    assert greedy_ids(log_probs, torch.tensor([10, 6])) == [[1, 1, 2, 3], [4, 4, 5]]


def test_fbank_rows_equal_each_utterance_alone() -> None:
    audio = waves(1.0, 0.37, 0.02)
    feats, frames = fbank(*pad_waveforms(audio))
    assert frames.tolist() == [98, 35, 0]
    for row, wave in enumerate(audio[:2]):
        alone, _ = fbank(*pad_waveforms([wave]))
        torch.testing.assert_close(feats[row, : frames[row]], alone[0])
    normed = normalize(feats, frames)
    assert normed[0].mean().abs() < 1e-4 and (normed[1, 35:] == 0).all()


def test_spec_augment_masks_only_in_training() -> None:
    torch.manual_seed(0)
    feats = torch.randn(4, 200, 80) + 5.0
    lengths = torch.tensor([200, 150, 80, 20])
    augment = SpecAugment(SpecAugmentConfig())
    assert torch.equal(augment.eval()(feats, lengths), feats)
    masked = augment.train()(feats, lengths) == 0
    assert masked.any()
    frames_masked = masked.all(dim=2).sum(dim=1)
    assert (frames_masked <= 2 * (lengths.float() * 0.2).floor()).all()


def test_registry_names_unknown_encoders_and_bad_configs(tokenizer: Path) -> None:
    assert set(ENCODERS) >= {"conformer-ctc", "hf-ctc"}
    with pytest.raises(SpeechLLMError, match="unknown encoder 'nope'.*conformer-ctc"):
        build_encoder("nope", {})
    with pytest.raises(SpeechLLMError, match="heads"):
        build_encoder("conformer-ctc", {"vocab_size": 10, "heads": 5})
    with pytest.raises(SpeechLLMError, match="does not match"):
        build_encoder("conformer-ctc", {"vocab_size": 999}, tokenizer=tokenizer)
    with pytest.raises(SpeechLLMError, match="not a sentencepiece model"):
        build_encoder("conformer-ctc", {}, tokenizer=Path(__file__))


def test_conformer_units_come_from_the_tokenizer(conformer: ConformerCTC, tokenizer: Path) -> None:
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer))
    assert conformer.vocab_size == sp.get_piece_size()
    assert conformer.units()[BLANK_ID] == "<blk>"
    assert conformer.ids_to_text(sp.encode("the cat")) == "the cat"


def test_conformer_shapes_lengths_and_log_softmax(conformer: ConformerCTC) -> None:
    with torch.no_grad():
        out = conformer(waves(1.0, 0.5, 1.3))
    frames = torch.tensor([98, 48, 128])
    expected = ((frames - 1) // 2 - 1) // 2
    assert out.lengths.tolist() == expected.tolist()
    assert out.log_probs.shape == (3, int(expected.max()), conformer.vocab_size)
    torch.testing.assert_close(out.log_probs.logsumexp(dim=-1), torch.zeros(3, int(expected.max())), atol=1e-5,
                               rtol=0)


def test_conformer_padding_does_not_change_outputs(conformer: ConformerCTC) -> None:
    with torch.no_grad():
        assert_padding_exact(conformer, waves(1.2, 0.4, 0.9, seed=1))


def test_conformer_save_load_round_trip(conformer: ConformerCTC, tmp_path: Path) -> None:
    folder = tmp_path / "encoder"
    conformer.save(folder)
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "tokenizer.model"}
    assert json.loads((folder / "config.json").read_text())["model_type"] == "conformer-ctc"
    loaded = load_encoder("conformer-ctc", folder)
    assert isinstance(loaded, ConformerCTC) and not loaded.training
    assert loaded.units() == conformer.units()
    audio = waves(0.8, 0.5, seed=2)
    with torch.no_grad():
        assert torch.equal(loaded(audio).log_probs, conformer(audio).log_probs)


def test_conformer_ctc_training_reduces_loss(tokenizer: Path) -> None:
    torch.manual_seed(0)
    model = ConformerCTC(ConformerCTCConfig(layers=2), tokenizer)
    audio, lengths = pad_waveforms(waves(1.0, 0.8, seed=3))
    targets = torch.tensor([[5, 9, 12, 9, 7], [11, 4, 6, 0, 0]])
    target_lengths = torch.tensor([5, 3])

    def loss() -> torch.Tensor:
        return model.ctc_loss(model(audio, lengths), targets, target_lengths)

    with torch.no_grad():
        before = loss().item()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=2e-3)
    model.train()
    for _ in range(12):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = loss().item()
    assert after < 0.7 * before


def _tiny_wav2vec2(folder: Path, layer_norm: bool) -> Path:
    return tiny_wav2vec2(folder, HF_VOCAB, layer_norm=layer_norm, head_std=1.0)


@pytest.fixture(scope="module")
def wav2vec2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_wav2vec2(tmp_path_factory.mktemp("hf") / "w2v", layer_norm=True)


def _raw_logits(folder: Path, wave: torch.Tensor) -> torch.Tensor:
    from transformers import AutoProcessor, Wav2Vec2ForCTC

    processor = AutoProcessor.from_pretrained(folder)
    model = Wav2Vec2ForCTC.from_pretrained(folder).eval()
    inputs = processor(audio=wave.numpy(), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        return model(inputs.input_values).logits[0]


def test_hf_blank_is_moved_to_zero(wav2vec2_folder: Path) -> None:
    encoder = load_encoder("hf-ctc", wav2vec2_folder)
    assert isinstance(encoder, HFCTCEncoder) and encoder.vocab_size == len(HF_VOCAB)
    by_id = sorted(HF_VOCAB, key=HF_VOCAB.get)
    assert encoder.units() == ["<pad>", *(token for token in by_id if token != "<pad>")]
    wave = waves(0.6, seed=4)[0]
    with torch.no_grad():
        ours = encoder([wave]).log_probs[0]
    raw = torch.log_softmax(_raw_logits(wav2vec2_folder, wave), dim=-1)
    torch.testing.assert_close(ours[:, BLANK_ID], raw[:, HF_VOCAB["<pad>"]])
    for token, hf_id in HF_VOCAB.items():
        torch.testing.assert_close(ours[:, encoder.units().index(token)], raw[:, hf_id])


def test_hf_lengths_follow_the_feature_encoder(wav2vec2_folder: Path) -> None:
    encoder = load_encoder("hf-ctc", wav2vec2_folder)
    samples = torch.tensor([16000, 7000, 12345])
    with torch.no_grad():
        out = encoder([torch.zeros(n) + 0.01 * torch.randn(n) for n in samples.tolist()])
    expected = encoder.model._get_feat_extract_output_lengths(samples)
    assert out.lengths.tolist() == expected.tolist()
    assert out.log_probs.shape[:2] == (3, int(expected.max()))


def test_hf_padding_does_not_change_outputs(wav2vec2_folder: Path) -> None:
    encoder = load_encoder("hf-ctc", wav2vec2_folder)
    with torch.no_grad():
        assert_padding_exact(encoder, waves(0.9, 0.3, 0.6, seed=5))


def test_hf_group_norm_model_is_run_per_utterance(tmp_path: Path) -> None:
    encoder = load_encoder("hf-ctc", _tiny_wav2vec2(tmp_path / "w2v-group", layer_norm=False))
    with torch.no_grad():
        assert_padding_exact(encoder, waves(0.9, 0.3, seed=6))


def test_hf_greedy_text_matches_the_processor(wav2vec2_folder: Path) -> None:
    from transformers import AutoProcessor

    encoder = load_encoder("hf-ctc", wav2vec2_folder)
    processor = AutoProcessor.from_pretrained(wav2vec2_folder)
    audio = waves(0.7, 0.4, seed=7)
    with torch.no_grad():
        texts = encoder.greedy_text(encoder(audio))
    expected = [processor.batch_decode(_raw_logits(wav2vec2_folder, wave).argmax(-1)[None])[0] for wave in audio]
    assert texts == expected
    assert len(set("".join(texts))) > 2


def _reference_ctc_nll(log_probs: torch.Tensor, target: list[int], blank: int = BLANK_ID) -> float:
    """-log P(target | frames) by the textbook CTC forward recursion in float64, written out here so the
    encoders' loss is checked against something that shares no code with ``torch.nn.functional.ctc_loss``."""
    extended = [blank]
    for unit in target:
        extended += [unit, blank]
    states = torch.tensor(extended)
    skip = torch.zeros(len(extended), dtype=torch.bool)
    skip[2:] = (states[2:] != blank) & (states[2:] != states[:-2])
    frames = log_probs.double()[:, states]
    alpha = torch.full((len(extended),), -torch.inf, dtype=torch.float64)
    alpha[:2] = frames[0, :2]
    for frame in frames[1:]:
        stay_or_step = alpha.clone()
        stay_or_step[1:] = torch.logaddexp(alpha[1:], alpha[:-1])
        stay_or_step[skip] = torch.logaddexp(stay_or_step[skip], alpha[:-2][skip[2:]])
        alpha = stay_or_step + frame
    return -float(torch.logsumexp(alpha[-2:], dim=0))


def test_reference_ctc_sums_every_alignment() -> None:
    """The reference itself, on a case small enough to enumerate: 3 frames, target [1], V = 2, every path
    whose collapse is [1] (1.., .1., ..1, 11., .11, 111 with blanks elsewhere)."""
    probs = torch.tensor([[0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
    paths = [p for p in itertools.product([0, 1], repeat=3)
             if [u for i, u in enumerate(p) if u and (i == 0 or p[i - 1] != u)] == [1]]
    assert len(paths) == 6
    total = sum(float(probs[0, a] * probs[1, b] * probs[2, c]) for a, b, c in paths)
    assert _reference_ctc_nll(probs.log(), [1]) == pytest.approx(-torch.log(torch.tensor(total)).item())


def test_hf_save_round_trip_and_ctc_loss(wav2vec2_folder: Path, tmp_path: Path) -> None:
    encoder = load_encoder("hf-ctc", wav2vec2_folder)
    encoder.save(tmp_path / "copy")
    loaded = build_encoder("hf-ctc", {"source": str(tmp_path / "copy")})
    audio = waves(0.5, 0.3, seed=8)
    with torch.no_grad():
        out = loaded(audio)
        assert torch.equal(out.log_probs, encoder(audio).log_probs)
    targets = [[1, 2, 6, 5], [3]]
    padded = torch.tensor([[1, 2, 6, 5], [3, 7, 7, 7]])
    target_lengths = torch.tensor([4, 1])
    expected = [_reference_ctc_nll(out.log_probs[row, : int(out.lengths[row])], target)
                for row, target in enumerate(targets)]
    per_utterance = loaded.ctc_loss(out, padded, target_lengths, reduction="none")
    torch.testing.assert_close(per_utterance.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5,
                               atol=1e-4)
    mean = loaded.ctc_loss(out, padded, target_lengths)
    assert mean.item() == pytest.approx((expected[0] / 4 + expected[1] / 1) / 2, rel=1e-5)
    concatenated = loaded.ctc_loss(out, torch.tensor([1, 2, 6, 5, 3]), target_lengths, reduction="sum")
    assert concatenated.item() == pytest.approx(sum(expected), rel=1e-5)


def test_hf_ctc_loss_equals_the_models_own_loss_in_its_own_ids(wav2vec2_folder: Path) -> None:
    """Our loss over the reordered columns (blank moved to 0) must equal what Wav2Vec2ForCTC computes from
    its own logits and its own ids, blank at 3: a wrong column permutation or length would change it."""
    from transformers import AutoProcessor, Wav2Vec2ForCTC

    encoder = load_encoder("hf-ctc", wav2vec2_folder)
    processor = AutoProcessor.from_pretrained(wav2vec2_folder)
    model = Wav2Vec2ForCTC.from_pretrained(wav2vec2_folder, ctc_loss_reduction="sum").eval()
    tokens = ["b", "a", "d", "|", "e"]
    wave = waves(0.4, seed=9)[0]
    inputs = processor(audio=wave.numpy(), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        theirs = model(inputs.input_values, labels=torch.tensor([[HF_VOCAB[t] for t in tokens]])).loss
        ours = encoder.ctc_loss(encoder([wave]), torch.tensor([[encoder.units().index(t) for t in tokens]]),
                                torch.tensor([len(tokens)]), reduction="sum")
    assert theirs.item() > 0
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_ctc_loss_counts_an_impossible_alignment_as_zero(conformer: ConformerCTC) -> None:
    """Targets longer than the frames have no alignment; ``zero_infinity`` makes that 0, not inf, while
    the possible utterance of the same batch keeps its reference value."""
    with torch.no_grad():
        out = conformer(waves(1.0, 0.3, seed=10))
    short = int(out.lengths[1])
    targets = torch.tensor([[5, 9, 12] + [0] * short, list(range(1, short + 4))])
    lengths = torch.tensor([3, short + 3])
    losses = conformer.ctc_loss(out, targets, lengths, reduction="none")
    assert losses[1].item() == 0.0
    assert losses[0].item() == pytest.approx(_reference_ctc_nll(out.log_probs[0, : int(out.lengths[0])], [5, 9, 12]),
                                             rel=1e-5)


def test_conformer_batched_loss_equals_each_utterance_alone(conformer: ConformerCTC) -> None:
    """Padding neither adds frames to an utterance's alignment nor leaks into its neighbours' loss."""
    audio = waves(1.1, 0.45, 0.8, seed=11)
    targets = torch.tensor([[3, 7, 7, 2], [4, 1, 0, 0], [9, 8, 6, 0]])
    target_lengths = torch.tensor([4, 2, 3])
    with torch.no_grad():
        batched = conformer.ctc_loss(conformer(audio), targets, target_lengths, reduction="none")
        alone = torch.cat([conformer.ctc_loss(conformer([wave]), targets[row:row + 1], target_lengths[row:row + 1],
                                              reduction="none") for row, wave in enumerate(audio)])
    assert batched.shape == (3,) and (batched > 0).all()
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-4)


def test_text_to_ids_round_trips_through_ids_to_text(conformer: ConformerCTC, wav2vec2_folder: Path) -> None:
    ids = conformer.text_to_ids("the cat")
    assert ids and BLANK_ID not in ids and conformer.ids_to_text(ids) == "the cat"
    encoder = load_encoder("hf-ctc", wav2vec2_folder)
    word = next(t for t in HF_VOCAB if len(t) == 1 and t.isalpha())
    hf_ids = encoder.text_to_ids(word.lower() * 2)
    assert hf_ids and BLANK_ID not in hf_ids
    assert [encoder.units()[i] for i in hf_ids] == [word, word]
