"""The per-machine cache for converted checkpoints (LLMs from GGUF, Whisper from CTranslate2)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Shared by all experiments of a machine; ``$SPEECHLLM_CACHE`` overrides, else ``$XDG_CACHE_HOME``."""
    root = os.environ.get("SPEECHLLM_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "speechllm"
