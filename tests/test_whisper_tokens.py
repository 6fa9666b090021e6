"""``whisper-tokens``: the packaged Whisper tiny.en's decoder posteriors over its word pieces as an encoder."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import soundfile
import torch

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.core.configs import LSDConfig
from speechllm_cli.core.encoders import BLANK_ID, build_encoder, greedy_ids, load_encoder
from speechllm_cli.core.encoders.whisper_tokens import WhisperTokens, piece_inventory
from speechllm_cli.core.posteriors import label_synchronous

UNITS = 3000


@pytest.fixture(scope="module")
def encoder() -> WhisperTokens:
    return build_encoder("whisper-tokens", {"whisper": "whisper-tiny.en", "units": UNITS}).eval()


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> torch.Tensor:
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(path), "yes no no maybe"], check=True)
    audio, rate = soundfile.read(str(path), dtype="float32")
    return torch.from_numpy(audio) if rate == 16000 else torch.from_numpy(_resample(audio, rate))


def _resample(audio, rate: int):  # noqa: ANN001, ANN202
    import torchaudio

    return torchaudio.functional.resample(torch.from_numpy(audio), rate, 16000).numpy()


def test_inventory_is_case_folded_word_pieces_of_the_asked_size(encoder: WhisperTokens) -> None:
    keys, members = piece_inventory(encoder.processor.tokenizer, UNITS)
    assert len(keys) == UNITS == encoder.vocab_size - 1 and len(set(keys)) == UNITS
    assert all(re.fullmatch(r" ?[a-z']+", key) for key in keys)
    tokenizer = encoder.processor.tokenizer
    upper, lower = (tokenizer.encode(word, add_special_tokens=False) for word in (" The", " the"))
    assert len(upper) == len(lower) == 1 and members[upper[0]] == members[lower[0]]
    assert encoder.units()[0] == "<blank>"


def test_text_round_trips_through_the_units(encoder: WhisperTokens) -> None:
    text = "what is the opposite of north"
    ids = encoder.text_to_ids(text)
    assert BLANK_ID not in ids and encoder.ids_to_text(ids) == text
    assert len(ids) <= len(text.split()) + 3
    assert encoder.text_to_ids("Don't, STOP!") == encoder.text_to_ids("don't stop")


def test_decoding_gives_one_frame_per_piece_and_keeps_a_repeated_word(encoder: WhisperTokens,
                                                                      speech: torch.Tensor) -> None:
    output = encoder([speech])
    assert output.log_probs.shape[:2] == output.hidden.shape[:2] and output.log_probs.shape[2] == encoder.vocab_size
    length = int(output.lengths[0])
    best = output.log_probs[0, :length].argmax(-1)
    text = encoder.ids_to_text(greedy_ids(output.log_probs, output.lengths)[0])
    assert "no no" in text, text
    assert int((best == BLANK_ID).sum()) == 1, "only the frame between the two 'no's is blank"
    lsd, lsd_lengths = label_synchronous(output.log_probs.exp(), output.lengths, LSDConfig())
    assert int(lsd_lengths[0]) == length - 1, "LSD drops the separator and keeps both pieces"


def test_batching_changes_no_posterior(encoder: WhisperTokens, speech: torch.Tensor) -> None:
    alone = encoder([speech])
    batched = encoder([speech, speech[: len(speech) // 2]])
    n = int(alone.lengths[0])
    assert int(batched.lengths[0]) == n
    assert torch.allclose(alone.log_probs[0, :n], batched.log_probs[0, :n], atol=1e-4)


def test_saved_folder_reloads_the_same_encoder(encoder: WhisperTokens, speech: torch.Tensor, tmp_path: Path) -> None:
    encoder.save(tmp_path / "model")
    loaded = load_encoder("whisper-tokens", tmp_path / "model")
    assert loaded.units() == encoder.units()
    assert torch.equal(loaded([speech]).log_probs, encoder([speech]).log_probs)


def test_output_layer_reads_each_unit_at_its_piece(encoder: WhisperTokens) -> None:
    layer = encoder.output_layer()
    tokenizer = encoder.processor.tokenizer
    (piece,) = tokenizer.encode(" the", add_special_tokens=False)
    unit = encoder.text_to_ids("the")[0]
    assert torch.equal(layer.weight[unit], encoder.whisper.proj_out.weight[piece])
    assert layer.bias[BLANK_ID] < -10 and not layer.weight[BLANK_ID].any()


def test_english_only_model_refuses_another_language() -> None:
    with pytest.raises(SpeechLLMError, match="English-only"):
        build_encoder("whisper-tokens", {"whisper": "whisper-tiny.en", "units": 10, "language": "de"})
