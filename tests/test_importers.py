"""LibriSpeech, Kaldi and TSV imports on generated fixture trees, through the real command."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import librispeech_tree, load_cuts, write_tone


def _librispeech_tree(root: Path) -> Path:
    """Two dev-clean speakers and one test-clean speaker, two tone utterances each."""
    speakers = {"dev-clean": ["84", "174"], "test-clean": ["1089"]}
    return librispeech_tree(root, {part: {s: [f"WORDS OF SPEAKER {s} NUMBER {i}" for i in range(2)] for s in names}
                                   for part, names in speakers.items()})


def _librispeech_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "ls" / "config.yaml"
    path.parent.mkdir()
    config = {"name": "ls", "prepare_data": {"source": "librispeech", "librispeech": {
        "corpus_dir": "/nonexistent", "parts": ["dev-clean", "test-clean"]}}}
    path.write_text(yaml.safe_dump(config))
    return path


def test_librispeech_from_existing_copy(cli, tmp_path: Path) -> None:
    corpus = _librispeech_tree(tmp_path / "corpus")
    result = cli("prepare-data", "--recipe", _librispeech_recipe(tmp_path), "--corpus-dir", corpus)
    assert result.returncode == 0, result.stderr
    dev = load_cuts(tmp_path / "exp/ls/data/dev_clean/cuts.jsonl.gz")
    test = load_cuts(tmp_path / "exp/ls/data/test_clean/cuts.jsonl.gz")
    assert len(dev) == 4 and len(test) == 2
    cut = dev["174-1211-0001"]
    assert cut.supervisions[0].text == "WORDS OF SPEAKER 174 NUMBER 1"
    assert cut.supervisions[0].speaker == "174"
    assert cut.duration == pytest.approx(0.75)
    assert cut.load_audio().shape == (1, 12000)


def test_librispeech_missing_file_is_not_dropped_silently(cli, tmp_path: Path) -> None:
    corpus = _librispeech_tree(tmp_path / "corpus")
    (corpus / "LibriSpeech/dev-clean/84/1211/84-1211-0001.flac").unlink()
    recipe = _librispeech_recipe(tmp_path)
    failed = cli("prepare-data", "--recipe", recipe, "--corpus-dir", corpus)
    assert failed.returncode == 1
    assert "84-1211.trans.txt:2:" in failed.stderr and "does not exist" in failed.stderr
    skipped = cli("prepare-data", "--recipe", recipe, "--corpus-dir", corpus, "--on-bad-input", "skip")
    assert skipped.returncode == 0 and "missing_audio=1" in skipped.stdout
    assert len(load_cuts(tmp_path / "exp/ls/data/dev_clean/cuts.jsonl.gz")) == 3


def test_librispeech_missing_part_names_the_key(cli, tmp_path: Path) -> None:
    result = cli("prepare-data", "--recipe", _librispeech_recipe(tmp_path), "--corpus-dir", tmp_path)
    assert result.returncode == 1
    assert "prepare_data.librispeech.corpus_dir:" in result.stderr and "dev-clean" in result.stderr


def test_kaldi_dir_with_segments_and_speakers(cli, tmp_path: Path) -> None:
    audio = write_tone(tmp_path / "audio" / "rec1.wav", seconds=2.0)
    other = write_tone(tmp_path / "audio" / "rec2.wav", seconds=1.0)
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text(f"rec1 {audio}\nrec2 {other}\n")
    (kaldi / "segments").write_text("spk1-a rec1 0.0 0.8\nspk1-b rec1 1.0 2.0\nspk2-a rec2 0.1 0.9\n")
    (kaldi / "text").write_text("spk1-a first part\nspk1-b second part\nspk2-a another speaker\n")
    (kaldi / "utt2spk").write_text("spk1-a spk1\nspk1-b spk1\nspk2-a spk2\n")
    result = cli("prepare-data", "--kaldi-dir", kaldi, "--split", "imported")
    assert result.returncode == 0, result.stderr
    cuts = load_cuts(tmp_path / "exp/adhoc/data/imported/cuts.jsonl.gz")
    assert sorted(cuts.ids) == ["spk1-a", "spk1-b", "spk2-a"]
    second = cuts["spk1-b"]
    assert (second.start, second.duration) == (pytest.approx(1.0), pytest.approx(1.0))
    assert second.supervisions[0].speaker == "spk1" and second.recording.id == "rec1"
    assert second.load_audio().shape == (1, 16000)


def test_kaldi_duplicate_id_is_reported(cli, tmp_path: Path) -> None:
    audio = write_tone(tmp_path / "a.wav")
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text(f"u1 {audio}\n")
    (kaldi / "text").write_text("u1 hello\nu1 hello again\n")
    result = cli("prepare-data", "--kaldi-dir", kaldi, "--split", "x")
    assert result.returncode == 1
    assert f"{kaldi / 'text'}:2: id 'u1' appears more than once in text" in result.stderr.replace("\n", "")


def test_tsv_with_a_third_column_is_a_bad_line(cli, tmp_path: Path) -> None:
    """The third ``target`` column was documented but read by nothing; a line with one is an error now."""
    write_tone(tmp_path / "clips" / "a.wav")
    write_tone(tmp_path / "clips" / "b.wav")
    tsv = tmp_path / "clips" / "list.tsv"
    tsv.write_text('b.wav\tplay jazz\na.wav\tturn on the lights\t{"intent": "lights_on"}\n')
    result = cli("prepare-data", "--tsv", tsv, "--split", "cmds", "--exp-dir", tmp_path / "e")
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: {tsv}:2: expected path<TAB>text, got 3 fields "
                                     "[split cmds; --on-bad-input skip skips and counts these]")


def test_tsv_given_a_folder_is_one_line(cli, tmp_path: Path) -> None:
    result = cli("prepare-data", "--tsv", tmp_path, "--split", "x")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: prepare_data.tsv.file: {tmp_path} is not a file"
