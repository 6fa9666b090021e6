"""Every kind of bad input, through the real command: a one-line error naming the file, or a counted skip."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import torch
import yaml

from speechllm_cli.data.audio import AudioLimits
from speechllm_cli.data.entries import Utterance
from speechllm_cli.data.manifests import BadInputPolicy, build_cuts
from tests.conftest import load_cuts, write_tone


def _tsv(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "in" / "list.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tone(path.parent / "good1.wav")
    write_tone(path.parent / "good2.wav")
    path.write_bytes(b"path\ttext\ngood1.wav\thello world\n" + b"".join(lines) + b"good2.wav\tsecond good one\n")
    return path


def _missing(tmp: Path) -> Path:
    return _tsv(tmp, [b"gone.wav\tthis file is missing\n"])


def _unreadable(tmp: Path) -> Path:
    (tmp / "in").mkdir(parents=True, exist_ok=True)
    (tmp / "in" / "junk.wav").write_bytes(b"this is not audio at all" * 10)
    return _tsv(tmp, [b"junk.wav\tgarbage bytes\n"])


def _zero_length(tmp: Path) -> Path:
    (tmp / "in").mkdir(parents=True, exist_ok=True)
    (tmp / "in" / "empty.wav").write_bytes(b"")
    return _tsv(tmp, [b"empty.wav\tzero bytes\n"])


def _empty_transcript(tmp: Path) -> Path:
    write_tone(tmp / "in" / "quiet.wav")
    return _tsv(tmp, [b"quiet.wav\t   \n"])


def _bad_utf8(tmp: Path) -> Path:
    write_tone(tmp / "in" / "latin.wav")
    return _tsv(tmp, [b"latin.wav\tcaf\xe9 au lait\n"])


def _duplicate(tmp: Path) -> Path:
    write_tone(tmp / "in" / "sub" / "good1.wav")
    return _tsv(tmp, [b"sub/good1.wav\tsame id again\n"])


CASES: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    "missing": (_missing, "missing_audio", "gone.wav of utterance 'gone' does not exist"),
    "unreadable": (_unreadable, "unreadable_audio", "junk.wav of utterance 'junk' cannot be read"),
    "zero-length": (_zero_length, "empty_audio", "empty.wav of utterance 'empty' is empty (0 bytes)"),
    "empty transcript": (_empty_transcript, "empty_transcript", "utterance 'quiet' has an empty transcript"),
    "invalid utf-8": (_bad_utf8, "invalid_utf8", "line is not valid UTF-8"),
    "duplicate id": (_duplicate, "duplicate_id", "utterance id 'good1' appears more than once"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_with_one_line_naming_file_and_line(cli, tmp_path: Path, case: str) -> None:
    build, _, message = CASES[case]
    tsv = build(tmp_path)
    result = cli("prepare-data", "--tsv", tsv, "--split", "mine")
    assert result.returncode == 1
    error = result.stderr.strip()
    assert len(error.splitlines()) == 1
    assert error.startswith(f"error: {tsv}:3: ")
    assert message in error
    assert not (tmp_path / "exp/adhoc/data/mine/cuts.jsonl.gz").exists()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_skipped_and_counted(cli, tmp_path: Path, case: str) -> None:
    build, reason, _ = CASES[case]
    tsv = build(tmp_path)
    result = cli("prepare-data", "--tsv", tsv, "--split", "mine", "--on-bad-input", "skip")
    assert result.returncode == 0, result.stderr
    assert f"{reason}=1" in result.stdout
    assert "2 utterances" in result.stdout and "1 skipped" in result.stdout
    assert len(load_cuts(tmp_path / "exp/adhoc/data/mine/cuts.jsonl.gz")) == 2
    skipped = (tmp_path / "exp/adhoc/data/mine/skipped.tsv").read_text().splitlines()
    assert len(skipped) == 2 and skipped[1].startswith(f"{reason}\t{tsv}:3")


@pytest.mark.parametrize(("content", "skip", "detail"), [
    (b"", False, "it lists none"),
    (b"path\ttext\n\n", False, "it lists none"),
    (b"gone.wav\tmissing\nlost.wav\tmissing too\n", True, "all 2 skipped (missing_audio=2)"),
], ids=["empty file", "header only", "every line skipped"])
def test_a_split_of_no_utterances_is_one_line_and_leaves_nothing(cli, tmp_path: Path, content: bytes, skip: bool,
                                                                  detail: str) -> None:
    """Issue 25, finding 7: an empty list became a finished split of 0 utterances that decode later failed on."""
    tsv = tmp_path / "in" / "list.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_bytes(content)
    result = cli("prepare-data", "--tsv", tsv, "--split", "mine", *(["--on-bad-input", "skip"] if skip else []))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {tsv}: no utterance for split 'mine': {detail}"
    assert not (tmp_path / "exp/adhoc/data/mine").exists()


def test_other_sample_rates_are_resampled_and_said(cli, tmp_path: Path) -> None:
    write_tone(tmp_path / "in" / "phone.wav", seconds=0.75, sample_rate=8000)
    tsv = _tsv(tmp_path, [b"phone.wav\tan eight kilohertz call\n"])
    result = cli("prepare-data", "--tsv", tsv, "--split", "mine")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "data/mine" in line).split()
    assert (row[1], row[3]) == ("3", "1")
    cuts = load_cuts(tmp_path / "exp/adhoc/data/mine/cuts.jsonl.gz")
    phone = cuts["phone"]
    assert phone.sampling_rate == 16000
    assert phone.load_audio().shape == (1, 12000)


def _nonfinite(folder: Path) -> Path:
    samples = np.full(16000, 0.1, dtype=np.float32)
    samples[4000] = np.nan
    path = folder / "nan.wav"
    soundfile.write(path, samples, 16000, subtype="FLOAT")
    return path


def _too_short(folder: Path) -> Path:
    return write_tone(folder / "short.wav", seconds=0.01)


def _too_long(folder: Path) -> Path:
    return write_tone(folder / "long.wav", seconds=31)


AUDIO_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "nonfinite_audio": (_nonfinite, "has NaN or infinite samples (the first at 0.250 s)"),
    "too_short": (_too_short, "is 0.010 s long, shorter than prepare_data.min_seconds (0.1 s)"),
    "too_long": (_too_long, ("is 31.00 s long, longer than prepare_data.max_seconds (30 s); "
                             "cut it into shorter utterances")),
}


def _marker(split_dir: Path) -> dict[str, Any]:
    return json.loads((split_dir / ".done").read_text())


def test_audio_that_would_poison_training_or_decoding_is_named(cli, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    files = {reason: build(folder) for reason, (build, _) in AUDIO_CASES.items()}
    tsv = _tsv(tmp_path, [f"{path.name}\t{reason} clip\n".encode() for reason, path in files.items()])
    failed = cli("prepare-data", "--tsv", tsv, "--split", "mine")
    assert failed.returncode == 1
    nan = files["nonfinite_audio"]
    assert failed.stderr.strip() == (f"error: {tsv}:3: audio file {nan} of utterance 'nan' "
                                     f"{AUDIO_CASES['nonfinite_audio'][1]} [split mine; --on-bad-input skip skips and "
                                     "counts these]")
    skipped = cli("prepare-data", "--tsv", tsv, "--split", "mine", "--on-bad-input", "skip")
    assert skipped.returncode == 0, skipped.stderr
    split_dir = tmp_path / "exp/adhoc/data/mine"
    assert _marker(split_dir)["stats"]["skipped"] == dict.fromkeys(AUDIO_CASES, 1)
    assert len(load_cuts(split_dir / "cuts.jsonl.gz")) == 2
    lines = (split_dir / "skipped.tsv").read_text().splitlines()[1:]
    assert lines == [f"{reason}\t{tsv}:{number}\taudio file {files[reason]} of utterance {files[reason].stem!r} {what}"
                     for number, (reason, (_, what)) in enumerate(AUDIO_CASES.items(), start=3)]


def _kaldi_segments(tmp_path: Path, segments: str) -> Path:
    audio = write_tone(tmp_path / "audio" / "rec1.wav", seconds=1.0)
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text(f"rec1 {audio}\n")
    (kaldi / "segments").write_text(segments)
    (kaldi / "text").write_text("".join(f"{line.split()[0]} words\n" for line in segments.splitlines()))
    return kaldi


def test_kaldi_segments_outside_their_recording_are_named(cli, tmp_path: Path) -> None:
    kaldi = _kaldi_segments(tmp_path, "ok rec1 0.0 0.5\npast rec1 0.5 2.0\nzero rec1 0.3 0.3\n"
                                      "backwards rec1 0.6 0.2\nedge rec1 0.5 1.02\n")
    audio, segments = tmp_path / "audio/rec1.wav", kaldi / "segments"
    failed = cli("prepare-data", "--kaldi-dir", kaldi, "--split", "k")
    assert failed.returncode == 1
    assert failed.stderr.strip() == (
        f"error: {segments}:2: segment of utterance 'past' in {audio} ends at 2.000 s, after the end of its "
        "recording (1.000 s) [split k; --on-bad-input skip skips and counts these]")
    skipped = cli("prepare-data", "--kaldi-dir", kaldi, "--split", "k", "--on-bad-input", "skip")
    assert skipped.returncode == 0, skipped.stderr
    split_dir = tmp_path / "exp/adhoc/data/k"
    assert _marker(split_dir)["stats"]["skipped"] == {"bad_segment": 3}
    lines = (split_dir / "skipped.tsv").read_text().splitlines()[1:]
    assert [line.split("\t")[1] for line in lines] == [f"{segments}:{n}" for n in (2, 3, 4)]
    assert lines[1].endswith(f"segment of utterance 'zero' in {audio} runs from 0.300 s to 0.300 s "
                             "(needs 0 <= start < end)")
    cuts = load_cuts(split_dir / "cuts.jsonl.gz")
    assert sorted(cuts.ids) == ["edge", "ok"]
    assert cuts["edge"].duration == pytest.approx(0.5)
    assert cuts["edge"].load_audio().shape == (1, 8000)


def test_each_file_is_scanned_once_for_all_its_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    samples = np.zeros(32000, dtype=np.float32)
    audio = tmp_path / "float.wav"
    soundfile.write(audio, samples, 16000, subtype="FLOAT")
    scans: list[str] = []
    real_blocks = soundfile.blocks

    def counted_blocks(path: str, *args: object, **kwargs: object) -> object:
        scans.append(path)
        return real_blocks(path, *args, **kwargs)

    monkeypatch.setattr(soundfile, "blocks", counted_blocks)
    entries = [Utterance(id=f"u{i}", audio=audio, text="words", where=f"x:{i}", recording_id="rec", start=0.5 * i,
                         duration=0.5) for i in range(4)]
    cuts, report = build_cuts(entries, BadInputPolicy.fail, 16000, "s", AudioLimits())
    assert (len(cuts), report.utterances) == (4, 4)
    assert scans == [str(audio)]


def test_stereo_is_averaged_the_same_by_prepare_data_and_decode(cli, tmp_path: Path) -> None:
    from speechllm_cli.data.cut_audio import CutAudio
    from speechllm_cli.stages.decode import file_audio
    from speechllm_cli.stages.recipe import RecipeConfig
    from speechllm_cli.stages.runner import Context

    t = np.arange(8000) / 16000
    left, right = 0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)
    stereo = tmp_path / "in" / "stereo.wav"
    stereo.parent.mkdir()
    soundfile.write(stereo, np.stack([left, right], axis=1).astype(np.float32), 16000, subtype="FLOAT")
    (tmp_path / "in/list.tsv").write_text("stereo.wav\tboth channels\n")
    result = cli("prepare-data", "--tsv", tmp_path / "in/list.tsv", "--split", "st")
    assert result.returncode == 0, result.stderr
    context = Context(RecipeConfig(name="t"), tmp_path / "exp/adhoc")
    prepared = CutAudio(load_cuts(tmp_path / "exp/adhoc/data/st/cuts.jsonl.gz")).load(0)
    direct = file_audio(context, [stereo]).load(0)
    assert torch.equal(prepared, direct)
    np.testing.assert_allclose(direct.numpy(), (left + right) / 2, atol=1e-6)


def _decode_recipe(tmp_path: Path) -> Path:
    """A recipe with nothing trained: decode FILE must judge files and systems before it needs a model."""
    path = tmp_path / "files" / "config.yaml"
    path.parent.mkdir()
    peer = {"model": "whisper-tiny.en", "max_new_tokens": 8}
    path.write_text(yaml.safe_dump({"name": "files", "decode": {"splits": ["test"], "peers": {"whisper": peer}}}))
    return path


DECODE_REFUSALS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing_audio": (lambda folder: folder / "gone.wav", "does not exist"),
    **AUDIO_CASES,
}


@pytest.mark.parametrize("case", list(DECODE_REFUSALS))
def test_decode_refuses_a_bad_file_before_loading_a_model(cli, tmp_path: Path, case: str) -> None:
    build, what = DECODE_REFUSALS[case]
    (tmp_path / "in").mkdir()
    path = build(tmp_path / "in")
    result = cli("decode", "--recipe", _decode_recipe(tmp_path), "--system", "ctc", path)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {path}: audio file {what}"


def test_decode_names_an_unknown_system_for_files(cli, tmp_path: Path) -> None:
    tone = write_tone(tmp_path / "tone.wav")
    result = cli("decode", "--recipe", _decode_recipe(tmp_path), "--system", "bogus", tone)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --system bogus: not a system of recipe 'files' (known: ctc, whisper)"


def test_decode_transcribes_files_with_a_peer(cli, tmp_path: Path) -> None:
    speech = tmp_path / "hello.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(speech), "hello world"], check=True)
    tone = write_tone(tmp_path / "tone.wav")
    result = cli("decode", "--recipe", _decode_recipe(tmp_path), "--system", "whisper", speech, tone)
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [line[0] for line in lines] == [str(speech), str(tone)]
    assert "world" in lines[0][1].lower()
    assert [line.split(" (")[0] for line in result.stderr.splitlines()] == ["device cpu"], "no library progress bars"
