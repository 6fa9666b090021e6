"""Text -> IPA phonemes through libespeak-ng, for CTC units that several languages share.

Subword units learned from English text cannot spell German, and an encoder's head trained on English speech
never emits a German-only piece; phonemes are one alphabet for both. espeak-ng (a Debian package the
project already installs for TTS) writes a text's IPA in its own language's rules, so English training
speech and German test speech meet on the same symbols. The library is called directly (``ctypes``), as
Piper does, one clause at a time: about 0.3 ms a sentence, against a process start per call with the
command-line program. Stress marks are dropped (they mark syllables, not sounds, and double the
inventory), and so are the marks of a word read in another language's rules.
"""

from __future__ import annotations

import ctypes
import re
import threading
from functools import lru_cache

from speechllm_cli.common.errors import SpeechLLMError

LIBRARY = "libespeak-ng.so.1"
VOICES = {"en": "en-us"}
"""Language code -> espeak-ng voice, where they differ (other codes are espeak-ng voice names: de, fr ...)."""
_SYNCHRONOUS, _DONT_EXIT, _UTF8, _IPA = 0x02, 0x8000, 1, 0x02
_STRESS = str.maketrans("", "", "ˈˌ")
_SWITCH = re.compile(r"\([a-z-]+\)")
"""espeak-ng's marks where it reads a word in another language's rules, e.g. ``(en)``."""
_LOCK = threading.Lock()
"""espeak-ng keeps one current voice per process."""


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL:
    try:
        lib = ctypes.cdll.LoadLibrary(LIBRARY)
    except OSError:
        raise SpeechLLMError(f"phoneme units need {LIBRARY} (Debian espeak-ng); run tools/setup.sh") from None
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    if lib.espeak_Initialize(_SYNCHRONOUS, 0, None, _DONT_EXIT) <= 0:
        raise SpeechLLMError(f"{LIBRARY}: espeak-ng failed to initialise (is espeak-ng-data installed?)")
    return lib


@lru_cache(maxsize=200_000)
def phonemize(text: str, lang: str = "en") -> str:
    """The IPA of ``text`` read as language ``lang``, words separated by spaces, without stress marks."""
    lib = _library()
    voice = VOICES.get(lang, lang)
    with _LOCK:
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise SpeechLLMError(f"espeak-ng has no voice for language {lang!r}")
        buffer = ctypes.c_char_p(text.encode("utf-8"))
        pointer = ctypes.pointer(buffer)
        clauses = []
        while buffer.value:
            clause = lib.espeak_TextToPhonemes(pointer, _UTF8, _IPA)
            clauses.append((clause or b"").decode("utf-8"))
    return " ".join(_SWITCH.sub("", " ".join(clauses)).translate(_STRESS).split())
