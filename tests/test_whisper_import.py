"""CTranslate2 Whisper checkpoints -> Hugging Face folders, checked two ways.

A tiny random Whisper goes through CTranslate2's own converter and back through ours (every tensor must
come back); the bundled tiny.en, once imported, must transcribe real speech exactly as faster-whisper
does on the original file.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.core.whisper_import import _whisper_state, read_ct2_model
from speechllm_cli.core.whisper_packages import bundled_whisper_tiny_en
from tests.conftest import tiny_whisper

SENTENCES = {"slt": "The quick brown fox jumps over the lazy dog near the river bank.",
             "awb": "Please set an alarm for seven thirty tomorrow morning.",
             "rms": "In the beginning God created the heaven and the earth."}


def test_ctranslate2_round_trip_restores_every_tensor(tmp_path: Path) -> None:
    import ctranslate2
    from transformers import WhisperForConditionalGeneration

    hf = tiny_whisper(tmp_path / "hf", layers=2)
    ctranslate2.converters.TransformersConverter(str(hf)).convert(str(tmp_path / "ct2"), quantization="float16")
    name, variables = read_ct2_model(tmp_path / "ct2" / "model.bin")
    assert name == "WhisperSpec"
    restored = _whisper_state(variables, encoder_layers=2, decoder_layers=1)
    original = WhisperForConditionalGeneration.from_pretrained(hf).state_dict()
    assert set(restored) == set(original)
    for key, tensor in original.items():
        torch.testing.assert_close(restored[key], tensor.half().float(), msg=key)


def test_truncated_model_file_names_the_file(tmp_path: Path) -> None:
    source = bundled_whisper_tiny_en() / "model.bin"
    broken = tmp_path / "model.bin"
    broken.write_bytes(source.read_bytes()[:5000])
    with pytest.raises(SpeechLLMError, match=f"{broken}: truncated"):
        read_ct2_model(broken)


def test_import_refuses_a_folder_that_is_not_ctranslate2(cli, tmp_path: Path) -> None:  # noqa: ANN001
    (tmp_path / "empty").mkdir()
    result = cli("import-model", tmp_path / "empty", tmp_path / "out")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "not a CTranslate2 Whisper folder (no model.bin)" in result.stderr


@pytest.mark.skipif(shutil.which("flite") is None, reason="needs flite (tools/setup.sh installs it)")
def test_imported_tiny_en_transcribes_like_faster_whisper(cli, tmp_path: Path) -> None:  # noqa: ANN001
    from faster_whisper import WhisperModel
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    result = cli("import-model", bundled_whisper_tiny_en(), tmp_path / "tiny.en")
    assert result.returncode == 0, result.stderr
    model = WhisperForConditionalGeneration.from_pretrained(tmp_path / "tiny.en").eval()
    processor = WhisperProcessor.from_pretrained(tmp_path / "tiny.en")
    peer = WhisperModel(str(bundled_whisper_tiny_en()), device="cpu", compute_type="float32")
    for voice, sentence in SENTENCES.items():
        wav = tmp_path / f"{voice}.wav"
        subprocess.run(["flite", "-voice", voice, "-t", sentence, "-o", str(wav)], check=True)
        audio, rate = soundfile.read(wav, dtype="float32")
        assert rate == 16000
        features = processor.feature_extractor(audio, sampling_rate=rate, return_tensors="pt").input_features
        with torch.no_grad():
            ours = processor.tokenizer.batch_decode(model.generate(features), skip_special_tokens=True)[0]
        segments, _ = peer.transcribe(np.asarray(audio), beam_size=1, temperature=0.0, without_timestamps=True,
                                      condition_on_previous_text=False, vad_filter=False)
        theirs = "".join(segment.text for segment in segments)
        assert ours.strip() == theirs.strip() != ""
