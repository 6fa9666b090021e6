"""The lazy split reader: the samples lhotse gives, mixed to mono, in the batch plan decoding and caching use.

A manifest as prepare-data writes it (audio named relative to the experiment folder): mono and stereo files,
one stored at 8 kHz and resampled by the manifest, durations with ties.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from speechllm_cli.data.audio import recording_cut
from speechllm_cli.data.cut_audio import CutAudio
from speechllm_cli.data.manifests import write_cuts
from tests.conftest import load_cuts

FILES = [("long", 1.2, 1, 16000), ("stereo", 0.5, 2, 16000), ("short", 0.3, 1, 16000), ("tie", 0.5, 1, 16000),
         ("narrow", 0.8, 1, 8000)]
"""Name, seconds, channels, stored rate: "stereo" and "tie" last equally long, so manifest order decides."""


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<exp>/data/demo/cuts.jsonl.gz`` naming its audio relative to ``<exp>``, as prepare-data writes it."""
    from lhotse import CutSet, Recording

    exp = tmp_path_factory.mktemp("cut_audio") / "exp"
    generator = np.random.default_rng(0)
    cuts = []
    for name, seconds, channels, rate in FILES:
        path = exp / "data/audio" / f"{name}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        samples = 0.1 * generator.standard_normal((int(seconds * rate), channels)).astype(np.float32)
        if channels == 2:
            samples[:, 0] = 0.0  # the speaker on the right only: a left-channel reader would hear silence
        soundfile.write(path, samples, rate, subtype="FLOAT")
        recording = Recording.from_file(path, recording_id=name)
        cut = recording_cut(recording, name, 0.0, recording.duration)
        cuts.append(cut.resample(16000) if rate != 16000 else cut)
    manifest = exp / "data/demo/cuts.jsonl.gz"
    manifest.parent.mkdir(parents=True)
    write_cuts(CutSet.from_cuts(cuts), manifest, exp)
    return manifest


def test_ids_and_seconds_follow_the_manifest(split: Path) -> None:
    audio = CutAudio(load_cuts(split))
    assert len(audio) == len(FILES)
    assert audio.ids == [name for name, *_ in FILES]
    assert audio.seconds == pytest.approx([seconds for _, seconds, *_ in FILES])


def test_batches_load_lhotses_samples_mixed_to_mono_longest_first(split: Path) -> None:
    cuts = load_cuts(split)
    audio = CutAudio(cuts)
    batches = audio.batches(2)
    assert [[audio.ids[i] for i in batch] for batch in batches] == [["long", "narrow"], ["stereo", "tie"], ["short"]]
    for batch in batches:
        for index in batch:
            wave = audio.load(index)
            theirs = cuts[index].load_audio()
            assert wave.dtype == torch.float32 and wave.shape == (cuts[index].num_samples,)
            torch.testing.assert_close(wave, torch.from_numpy(theirs.mean(axis=0)))
    stereo = audio.load(audio.ids.index("stereo"))
    assert stereo.abs().max() > 0.01, "the right channel reaches the mix"
    assert len(audio.load(audio.ids.index("narrow"))) == 12800, "the manifest's resampling to 16 kHz applies"


def test_max_seconds_splits_batches_of_long_utterances(split: Path) -> None:
    audio = CutAudio(load_cuts(split))
    assert [[audio.ids[i] for i in batch] for batch in audio.batches(8, max_seconds=1.6)] == [
        ["long"], ["narrow", "stereo"], ["tie", "short"]]
    assert audio.batches(8, max_seconds=0.1) == audio.batches(1), "a longer utterance is a batch of its own"


def _unread(seconds: list[float]) -> CutAudio:
    """A CutAudio over cuts whose audio is never read (the batch plan needs durations only)."""
    from lhotse import CutSet, MonoCut, Recording
    from lhotse.audio import AudioSource

    cuts = []
    for index, duration in enumerate(seconds):
        recording = Recording(id=f"r{index}", sources=[AudioSource("file", [0], "absent.wav")], sampling_rate=16000,
                              num_samples=round(duration * 16000), duration=duration)
        cuts.append(MonoCut(id=f"c{index}", start=0.0, duration=duration, channel=0, recording=recording))
    return CutAudio(CutSet.from_cuts(cuts))


@settings(max_examples=60, deadline=None)
@given(seconds=st.lists(st.sampled_from([0.5, 1.0, 2.5, 7.0, 19.5, 30.0]), max_size=40),
       batch_size=st.integers(1, 9), max_seconds=st.none() | st.sampled_from([1.0, 20.0, 60.0]))
def test_batches_cover_every_index_once_sorted_and_bounded(seconds: list[float], batch_size: int,
                                                           max_seconds: float | None) -> None:
    audio = _unread(seconds)
    batches = audio.batches(batch_size, max_seconds)
    flat = [index for batch in batches for index in batch]
    assert flat == sorted(range(len(seconds)), key=lambda i: (-seconds[i], i))
    assert all(1 <= len(batch) <= batch_size for batch in batches)
    if max_seconds is not None:
        assert all(len(batch) == 1 or len(batch) * seconds[batch[0]] <= max_seconds for batch in batches)
    for before, _ in itertools.pairwise(batches):
        room = len(before) < batch_size
        fits = max_seconds is None or (len(before) + 1) * seconds[before[0]] <= max_seconds
        assert not (room and fits), "a batch closes only when full or when the next utterance would not fit"
