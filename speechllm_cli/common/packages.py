"""Model files that ship inside installed registry packages, found without importing the package.

Such packages (an LLM, Whisper checkpoints, a TTS voice, a sentence embedder) are installed with
``--no-deps`` by ``tools/setup.sh``, and their own ``__init__`` may import what was left out, so only their
folder is looked up.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from speechllm_cli.common.errors import SpeechLLMError


def package_folder(package: str, missing: str) -> Path:
    """The import folder of the installed distribution ``package``; ``missing`` is the error when it is absent."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise SpeechLLMError(missing)
    return Path(spec.submodule_search_locations[0])
