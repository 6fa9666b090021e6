"""Speech synthesis through the TTS engines Debian ships (espeak-ng, flite), called as binaries, and Piper's
neural voices from registry packages (``data.piper``).

Voices are written ``engine:voice`` (``espeak-ng:en-us+f3``, ``flite:slt``, ``piper:joe``) so that a recipe can
hold out whole engines or voice variants for its test sets.
"""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from pydantic import PositiveInt, field_validator

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import atomic_path
from speechllm_cli.data.piper import PIPER_VOICES


@dataclass(frozen=True)
class Voice:
    engine: str
    name: str

    @classmethod
    def parse(cls, spec: str) -> Voice:
        engine, sep, name = spec.partition(":")
        if not sep or not name:
            raise ValueError(f"voice {spec!r} must be written engine:voice, e.g. espeak-ng:en-us+f3")
        if engine not in ENGINES:
            raise ValueError(f"voice {spec!r}: unknown TTS engine {engine!r} (known: {', '.join(ENGINES)})")
        if engine == "piper" and name not in PIPER_VOICES:
            raise ValueError(f"voice {spec!r}: unknown piper voice {name!r} (known: {', '.join(PIPER_VOICES)})")
        return cls(engine, name)

    @property
    def slug(self) -> str:
        """A form usable in utterance ids and file names."""
        return f"{self.engine}_{self.name}".replace("+", "_").replace("-", "").replace(":", "_")


def _run(command: list[str], what: str) -> bytes:
    if shutil.which(command[0]) is None:
        raise SpeechLLMError(f"{command[0]}: not installed; run tools/setup.sh (it installs the Debian TTS packages)")
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        raise SpeechLLMError(f"{command[0]} failed on {what!r}: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def _espeak(text: str, voice: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
    command = ["espeak-ng", "--stdout", "-v", voice, "-s", str(round(175 * rate)),
               "-p", str(min(99, max(0, round(50 * pitch)))), "--", text]
    audio, sample_rate = soundfile.read(io.BytesIO(_run(command, text)), dtype="float32")
    return audio, sample_rate


def _flite(text: str, voice: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
    """flite has no pitch control worth using from the command line; pitch is ignored."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        _run(["flite", "-voice", voice, "--setf", f"duration_stretch={1.0 / rate:.3f}",
              "-t", text, "-o", str(out)], text)
        audio, sample_rate = soundfile.read(out, dtype="float32")
    return audio, sample_rate


def _piper(text: str, voice: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
    """A neural voice from espeak-ng's phonemes; pitch is ignored (the voice's own prosody is the point), and
    the model's noise is seeded from the utterance's text and settings, so a plan renders the same audio."""
    from speechllm_cli.data.piper import piper_voice

    model = piper_voice(voice)
    ipa = _run(["espeak-ng", "-q", "--ipa", "-v", model.espeak_voice, "--", text], text).decode("utf-8")
    phonemes = " ".join(line.strip() for line in ipa.splitlines() if line.strip())
    return model.speak(phonemes, rate, seed=int(short_hash(text, voice, rate), 16)), model.sample_rate


Engine = Callable[[str, str, float, float], tuple[np.ndarray, int]]
ENGINES: dict[str, Engine] = {"espeak-ng": _espeak, "flite": _flite, "piper": _piper}


def synthesize(text: str, voice: Voice, rate: float, pitch: float, sample_rate: int) -> np.ndarray:
    """Speak ``text`` and return mono float32 audio at ``sample_rate``.

    ``rate`` and ``pitch`` are factors around the engine's default (1.0 = unchanged).
    """
    audio, native_rate = ENGINES[voice.engine](text, voice.name, rate, pitch)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if native_rate != sample_rate:
        import torch
        import torchaudio.functional

        audio = torchaudio.functional.resample(torch.from_numpy(audio), native_rate, sample_rate).numpy()
    peak = float(np.abs(audio).max(initial=0.0))
    if peak > 0.99:
        audio = audio * (0.99 / peak)
    return audio.astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """White noise at ``snr_db`` below the utterance's mean power, clipped to the 16-bit range."""
    power = float(np.mean(audio.astype(np.float64) ** 2)) or 1e-10
    noise = np.random.default_rng(seed).standard_normal(len(audio)) * np.sqrt(power / 10 ** (snr_db / 10))
    return np.clip(audio + noise, -1.0, 1.0).astype(np.float32)


def short_hash(*parts: object) -> str:
    return hashlib.sha1("\x1f".join(map(str, parts)).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Synthesis:
    """One utterance to speak into a file: what, how, and the noise to add."""

    path: Path
    text: str
    voice: Voice
    rate: float
    pitch: float
    snr_db: float | None
    """White noise at this SNR (None: clean)."""
    noise_key: str
    """Seeds the noise draw (the utterance id)."""

    def render(self) -> None:
        """Write a 16 kHz FLAC unless a previous (possibly killed) run already did."""
        if self.path.is_file():
            return
        audio = synthesize(self.text, self.voice, self.rate, self.pitch, 16000)
        if self.snr_db is not None:
            audio = add_noise(audio, self.snr_db, seed=int(short_hash(self.noise_key, self.snr_db), 16))
        with atomic_path(self.path) as tmp:
            soundfile.write(tmp, audio, 16000, subtype="PCM_16", format="FLAC")


def remove_leftovers(folders: Iterable[Path]) -> None:
    """Delete the hidden temporary FLACs (``.<name>.XXXX.flac``) that a killed render left beside its targets.

    :func:`atomic_path` removes its temporary file on any error, but nothing runs after a SIGKILL; the
    folders hold nothing but renders, so every hidden FLAC in them is such a leftover.
    """
    for folder in folders:
        for path in folder.glob(".*.flac"):
            path.unlink(missing_ok=True)


def render_all(jobs: list[Synthesis], workers: int, track: Callable[..., Any], description: str) -> None:
    """Synthesize in ``workers`` threads (the engines run as subprocesses, so threads suffice)."""
    remove_leftovers({job.path.parent for job in jobs})
    with ThreadPoolExecutor(workers) as pool:
        for _ in track(pool.map(Synthesis.render, jobs), len(jobs), description):
            pass


class SpeakConfig(StrictModel):
    """How texts are spoken: voices in turn, a rate and a pitch drawn for each utterance, optional noise."""

    voices: list[str]
    """``engine:voice`` names, used in turn."""
    rate: tuple[float, float] = (0.85, 1.2)
    pitch: tuple[float, float] = (0.7, 1.3)
    noise_snr_db: tuple[float, float] | None = None
    """White noise at an SNR drawn from this range (None: clean)."""
    seed: int = 0
    workers: PositiveInt = 2
    """Engine processes at once."""

    @field_validator("voices")
    @classmethod
    def _voices_parse(cls, voices: list[str]) -> list[str]:
        if not voices:
            raise ValueError("voices is empty")
        for voice in voices:
            Voice.parse(voice)
        return voices


def plan_speech(texts: Sequence[str], keys: Sequence[str], config: SpeakConfig, folder: Path,
                rng: random.Random) -> list[Synthesis]:
    """One :class:`Synthesis` per text, into ``folder/<key>-<hash>.flac``: the hash covers the text and every
    setting, so a changed plan never reuses a file rendered for another."""
    voices = [Voice.parse(v) for v in config.voices]
    jobs = []
    for index, (text, key) in enumerate(zip(texts, keys, strict=True)):
        voice = voices[index % len(voices)]
        rate, pitch = rng.uniform(*config.rate), rng.uniform(*config.pitch)
        snr = rng.uniform(*config.noise_snr_db) if config.noise_snr_db else None
        path = folder / f"{key}-{short_hash(text, voice, rate, pitch, snr)}.flac"
        jobs.append(Synthesis(path, text, voice, rate, pitch, snr, key))
    return jobs
