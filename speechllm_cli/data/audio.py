"""The checks every audio file gets and the one way it is read, shared by prepare-data and ``decode FILE``.

A file decoded directly must give the model the very samples a prepared split of it would, and must be
refused for the same reasons: otherwise a file that decodes fine on its own poisons training once
prepared (NaN samples), or a prepared split fails deep inside the encoder (a clip longer than Whisper's
window) with a message that names no file. Every channel is averaged into one (a mono downmix, as
``ffmpeg -ac 1`` makes), so a stereo recording whose speaker is on the right is not read as silence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import broken_link

if TYPE_CHECKING:
    from lhotse import Recording
    from lhotse.cut import DataCut

MIN_SECONDS = 0.1
"""Shorter clips hold no word; a CTC encoder's few output frames cannot carry a transcript."""
MAX_SECONDS = 30.0
"""Whisper's window: the longest audio the Whisper encoder and the Whisper peer take in one piece."""
END_TOLERANCE = 0.025
"""A segment may end this far past its recording (timing rounded in ``segments``); it is cut at the end.
The same tolerance lhotse allows when it reads audio."""
_SCAN_FRAMES = 1 << 16


@dataclass(frozen=True)
class AudioLimits:
    """The shortest and longest utterance accepted, in seconds (``prepare_data.min_seconds/max_seconds``)."""

    min_seconds: float = MIN_SECONDS
    max_seconds: float = MAX_SECONDS


@dataclass(frozen=True)
class Fault:
    """Why audio is refused: a reason of ``entries.REASONS`` and a predicate (``does not exist``) that each
    caller puts after its own subject (an utterance's file, a segment, a file given to decode)."""

    reason: str
    what: str


@dataclass(frozen=True)
class AudioInfo:
    frames: int
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def _first_nonfinite(path: Path, subtype: str, sample_rate: int) -> float | None:
    """Seconds into the file of its first NaN or infinite sample, reading block by block.

    Integer PCM (all WAV from a recorder, all FLAC) cannot hold one, so those files are not read at all.
    """
    if subtype.startswith("PCM_"):
        return None
    offset = 0
    for block in soundfile.blocks(str(path), blocksize=_SCAN_FRAMES, dtype="float64", always_2d=True):
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            return (offset + int(np.argmax(bad))) / sample_rate
        offset += len(block)
    return None


def inspect_file(path: Path) -> AudioInfo | Fault:
    """The file's length and rate, or why it cannot be used at all."""
    if not path.exists():
        return Fault("missing_audio", broken_link(path) or "does not exist")
    if path.is_dir():
        return Fault("unreadable_audio", "is a folder, not an audio file")
    if path.stat().st_size == 0:
        return Fault("empty_audio", "is empty (0 bytes)")
    try:
        info = soundfile.info(str(path))
        nonfinite = _first_nonfinite(path, info.subtype, info.samplerate)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        return Fault("unreadable_audio", f"cannot be read ({str(exc).splitlines()[0]})")
    if info.frames == 0:
        return Fault("empty_audio", "has no samples")
    if nonfinite is not None:
        return Fault("nonfinite_audio", f"has NaN or infinite samples (the first at {nonfinite:.3f} s)")
    return AudioInfo(info.frames, info.samplerate)


def fit_span(info: AudioInfo, start: float, duration: float | None) -> float | Fault:
    """The length of the stretch ``start`` .. ``start + duration`` of the file (None: to its end)."""
    if duration is None:
        duration = info.seconds - start
    end = start + duration
    if start < 0 or duration <= 0:
        return Fault("bad_segment", f"runs from {start:.3f} s to {end:.3f} s (needs 0 <= start < end)")
    if end > info.seconds + END_TOLERANCE:
        return Fault("bad_segment", f"ends at {end:.3f} s, after the end of its recording ({info.seconds:.3f} s)")
    return min(duration, info.seconds - start)


def length_fault(seconds: float, limits: AudioLimits) -> Fault | None:
    if seconds < limits.min_seconds:
        return Fault("too_short", f"is {seconds:.3f} s long, shorter than prepare_data.min_seconds "
                                  f"({limits.min_seconds:g} s)")
    if seconds > limits.max_seconds:
        return Fault("too_long", f"is {seconds:.2f} s long, longer than prepare_data.max_seconds "
                                 f"({limits.max_seconds:g} s); cut it into shorter utterances")
    return None


def recording_cut(recording: Recording, cut_id: str, start: float, duration: float) -> DataCut:
    """A cut over every channel of ``recording``: one cut type for mono, another for several channels."""
    from lhotse import MonoCut, MultiCut

    if recording.num_channels == 1:
        return MonoCut(id=cut_id, start=start, duration=duration, channel=recording.channel_ids[0],
                       recording=recording)
    return MultiCut(id=cut_id, start=start, duration=duration, channel=list(recording.channel_ids),
                    recording=recording)


def downmix(samples: np.ndarray) -> np.ndarray:
    """``(channels, samples)`` as a cut loads them -> one channel, their mean."""
    return samples.mean(axis=0, dtype=np.float32)


def read_file(path: Path, limits: AudioLimits, sample_rate: int) -> np.ndarray:
    """A user's whole file, checked and read as a prepared cut of it would be: mono at ``sample_rate``."""
    from lhotse import Recording

    checked = inspect_file(path)
    fault = checked if isinstance(checked, Fault) else length_fault(checked.seconds, limits)
    if fault is not None:
        raise SpeechLLMError(f"{path}: audio file {fault.what}")
    recording = Recording.from_file(path.resolve(), recording_id=path.stem)
    cut = recording_cut(recording, path.stem, 0.0, recording.duration)
    if recording.sampling_rate != sample_rate:
        cut = cut.resample(sample_rate)
    return downmix(cut.load_audio())
