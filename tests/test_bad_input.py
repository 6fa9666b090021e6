"""Every kind of bad input, through the real command: a one-line error naming the file, or a counted skip."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

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
