"""Shared helpers: run the real ``speechllm`` command, write small audio files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

REPO = Path(__file__).resolve().parent.parent
SPEECHLLM = Path(sys.executable).parent / "speechllm"


def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    return subprocess.run([str(SPEECHLLM), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          check=False)


def write_tone(path: Path, seconds: float = 0.5, sample_rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sample_rate)
    return path


@pytest.fixture
def cli(tmp_path: Path):  # noqa: ANN201
    """``cli(*args)`` runs speechllm with the test's temporary folder as working directory."""
    return lambda *args: run_cli(*args, cwd=tmp_path)


def load_cuts(path: Path):  # noqa: ANN201
    from lhotse import CutSet

    return CutSet.from_file(path).to_eager()
