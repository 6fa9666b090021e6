"""The tiny recipe through run.sh, stages 1-2: real synthesized audio, text sets, tokenizer, and skipping."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, load_cuts

SPLITS = ["train", "dev", "test_indomain", "test_newvoice", "test_xdomain"]


def _run(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REPO / "recipes/tiny/run.sh"), *args], cwd=work, capture_output=True, text=True,
                          check=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    work = tmp_path_factory.mktemp("tiny")
    result = _run(work, "--stage", "1", "--stop-stage", "2")
    assert result.returncode == 0, result.stderr
    return work / "exp" / "tiny", result


def test_cutsets_load_at_16k_with_audio(tiny) -> None:
    exp, _ = tiny
    for split in SPLITS:
        cuts = load_cuts(exp / "data" / split / "cuts.jsonl.gz")
        assert len(cuts) == (24 if split == "train" else 6)
        for cut in cuts:
            assert cut.sampling_rate == 16000 and cut.duration > 0.3
            audio = cut.load_audio()
            assert audio.shape[0] == 1 and audio.shape[1] == cut.num_samples and abs(audio).max() > 0.01
            assert cut.supervisions[0].text.strip()


def test_splits_have_disjoint_text_and_held_out_voices(tiny) -> None:
    exp, _ = tiny
    texts, voices = {}, {}
    for split in SPLITS:
        cuts = load_cuts(exp / "data" / split / "cuts.jsonl.gz")
        texts[split] = {c.supervisions[0].text for c in cuts}
        voices[split] = {c.supervisions[0].custom["voice"] for c in cuts}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            assert not texts[a] & texts[b], (a, b)
    assert not voices["train"] & voices["test_newvoice"]
    assert not voices["train"] & voices["test_xdomain"]
    xdomain = load_cuts(exp / "data/test_xdomain/cuts.jsonl.gz")
    frame = json.loads(xdomain[0].supervisions[0].custom["slu"])
    assert set(frame) == {"scenario", "action", "entities"}


def test_text_sets_and_tokenizer(tiny) -> None:
    import sentencepiece

    exp, _ = tiny
    rows = [json.loads(line) for line in (exp / "text/commands_text.jsonl").read_text().splitlines()]
    assert len(rows) == 40
    assert set(rows[0]) == {"id", "text", "target", "task", "lang", "domain"}
    assert all(r["domain"] == "commands" and r["task"] == "asr" and r["text"] == r["text"].lower() for r in rows)
    train = [json.loads(line) for line in (exp / "text/train.jsonl").read_text().splitlines()]
    assert len(train) == 24 and all(r["domain"] == "scripture" for r in train)
    spm = sentencepiece.SentencePieceProcessor(model_file=str(exp / "tokenizer/tokenizer.model"))
    assert spm.id_to_piece(0) == "<blk>"
    assert 30 < spm.get_piece_size() <= 80
    assert spm.decode(spm.encode(train[0]["text"])) == train[0]["text"]


def test_rerun_skips_finished_stages(tiny) -> None:
    exp, _ = tiny
    markers = sorted(exp.rglob(".done"))
    before = {m: m.stat().st_mtime_ns for m in markers}
    result = _run(exp.parent.parent, "--stage", "1", "--stop-stage", "2")
    assert result.returncode == 0, result.stderr
    assert "prepare-data: 7 outputs (7 up to date)" in result.stdout
    assert result.stdout.count("up to date") >= 7 + 5
    assert {m: m.stat().st_mtime_ns for m in markers} == before


def test_changed_config_reruns_only_what_depends_on_it(tiny) -> None:
    exp, _ = tiny
    work = exp.parent.parent
    result = _run(work, "--stage", "2", "--stop-stage", "2", "--set", "prepare_text.normalize.lowercase=false")
    assert result.returncode == 0, result.stderr
    statuses = {line.split()[0]: line.split()[-1] for line in result.stdout.splitlines() if line.startswith(" ")}
    assert statuses["text/train.jsonl"] == "done" and statuses["tokenizer/tokenizer.model"] == "done"
    train = json.loads((exp / "text/train.jsonl").read_text().splitlines()[0])
    assert train["text"] != train["text"].lower()
    forced = _run(work, "--stage", "2", "--stop-stage", "2", "--force")
    assert forced.returncode == 0 and "up to date" not in forced.stdout
    train = json.loads((exp / "text/train.jsonl").read_text().splitlines()[0])
    assert train["text"] == train["text"].lower()
