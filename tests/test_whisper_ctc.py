"""``whisper-ctc`` on a tiny random Whisper saved on disk: the path a user's hub Whisper takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.core.encoders import FrozenFrontEncoder, build_encoder, load_encoder
from speechllm_cli.core.encoders.whisper_ctc import whisper_log_mel
from speechllm_cli.core.features import pad_waveforms
from tests.conftest import tiny_whisper

VOCAB = 12


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_whisper(tmp_path_factory.mktemp("hub") / "tiny-whisper")


def _encoder(whisper_dir: Path, trainable_layers: int = 0) -> FrozenFrontEncoder:
    torch.manual_seed(0)
    config = {"whisper": str(whisper_dir), "trainable_layers": trainable_layers, "vocab_size": VOCAB,
              "head": {"d_model": 16, "layers": 1, "heads": 2, "ff_dim": 32, "conv_kernel": 5}}
    return build_encoder("whisper-ctc", config).eval()


def _waves(*seconds: float) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [0.1 * torch.randn(int(s * 16000), generator=generator) for s in seconds]


def test_padding_changes_no_posterior(whisper_dir: Path) -> None:
    encoder = _encoder(whisper_dir)
    waves = _waves(2.0, 0.7, 1.31, 0.01)
    with torch.no_grad():
        batch = encoder(waves)
        assert batch.log_probs.shape[0] == 4 and batch.log_probs.shape[2] == VOCAB
        for row, wave in enumerate(waves):
            alone = encoder([wave])
            frames = int(alone.lengths[0])
            assert int(batch.lengths[row]) == frames == (len(wave) // 160 - 1) // 2 + 1
            torch.testing.assert_close(batch.log_probs[row, :frames], alone.log_probs[0], atol=1e-4, rtol=1e-4)


def test_log_mel_matches_whisper_feature_extractor() -> None:
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=80)
    wave = _waves(1.5)[0]
    ours = whisper_log_mel(wave, torch.tensor(extractor.mel_filters, dtype=torch.float32))
    theirs = extractor(wave.numpy(), sampling_rate=16000, return_tensors="pt").input_features[0].T
    assert ours.shape == (len(wave) // 160, 80)
    # Whisper pads to 30 s before its STFT: only the last frame (whose window reaches past the end) differs.
    torch.testing.assert_close(ours[:-1], theirs[: len(ours) - 1], atol=1e-4, rtol=1e-4)


def test_front_is_frozen_and_only_the_head_trains(whisper_dir: Path) -> None:
    frozen = _encoder(whisper_dir)
    names = {name for name, p in frozen.named_parameters() if p.requires_grad}
    assert names and not any(name.startswith("whisper.") for name in names)
    top = _encoder(whisper_dir, trainable_layers=1)
    trained_whisper = {name.split(".")[2] for name, p in top.named_parameters()
                       if p.requires_grad and name.startswith("whisper.layers.")}
    assert trained_whisper == {"1"}
    assert top.front_is_frozen


def test_cached_front_states_give_the_same_posteriors(whisper_dir: Path) -> None:
    encoder = _encoder(whisper_dir, trainable_layers=1)
    waves = _waves(1.0, 0.5)
    with torch.no_grad():
        direct = encoder(waves)
        states, frames = encoder.front(*pad_waveforms(waves))
        via_states = encoder(states, frames, from_states=True)
    torch.testing.assert_close(via_states.log_probs, direct.log_probs)


def test_save_and_load_round_trip_without_the_source(whisper_dir: Path, tmp_path: Path) -> None:
    encoder = _encoder(whisper_dir)
    encoder.save(tmp_path / "model")
    loaded = load_encoder("whisper-ctc", tmp_path / "model")
    waves = _waves(0.9)
    with torch.no_grad():
        torch.testing.assert_close(loaded(waves).log_probs, encoder(waves).log_probs)


def test_audio_longer_than_the_window_is_a_clear_error(whisper_dir: Path) -> None:
    encoder = _encoder(whisper_dir)
    with pytest.raises(SpeechLLMError, match="exceeds Whisper's 4 s window"), torch.no_grad():
        encoder(_waves(4.5))


def test_unknown_whisper_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SpeechLLMError, match="cannot load Whisper"):
        build_encoder("whisper-ctc", {"whisper": str(tmp_path), "vocab_size": VOCAB})


def test_ctranslate2_folder_asks_for_import(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(np.zeros(4, dtype=np.uint8).tobytes())
    with pytest.raises(SpeechLLMError, match="import-model"):
        build_encoder("whisper-ctc", {"whisper": str(tmp_path), "vocab_size": VOCAB})
