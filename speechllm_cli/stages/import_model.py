"""``speechllm import-model``: checkpoints in other formats turned into Hugging Face folders, once."""

from __future__ import annotations

from pathlib import Path

from speechllm_cli.common.errors import SpeechLLMError


def import_model(kind: str, source: Path, target: Path) -> Path:
    """Convert ``source`` (a checkpoint of format ``kind``) into a ``from_pretrained`` folder at ``target``."""
    from speechllm_cli.core.whisper_import import IMPORTERS

    if kind not in IMPORTERS:
        raise SpeechLLMError(f"import-model: unknown format {kind!r} (known: {', '.join(sorted(IMPORTERS))})")
    if not source.is_dir():
        raise SpeechLLMError(f"{source}: no such folder")
    if target.exists():
        raise SpeechLLMError(f"{target}: already exists; remove it or choose another output folder")
    return IMPORTERS[kind](source, target)
