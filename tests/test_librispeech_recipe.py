"""recipes/librispeech end to end through its run.sh, on a generated LibriSpeech-layout tree.

The recipe's own config.yaml is run; only what a GPU user downloads from the hub (Whisper-small, Qwen2.5) and
the sizes are swapped, by ``--set`` alone, for the local whisper-tiny.en, the tiny random LLM and a handful
of steps. The tree holds espeak-ng speech of Bible verses written as LibriSpeech writes transcripts, in the
four parts the recipe reads, plus one test-other utterance over Whisper's 30 s window that the recipe's
data policy must skip and count. Mechanics are checked (every stage, ids, skipping), not accuracy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, SPEECHLLM, librispeech_tree, load_cuts

RUN = REPO / "recipes/librispeech/run.sh"
SYSTEMS = ["ctc", "tasu", "calibrated", "paired", "whisper"]
SPEAKERS = {"train-clean-100": {"19": 6, "26": 6, "27": 6, "32": 6}, "dev-clean": {"84": 3, "174": 3},
            "test-clean": {"1089": 2, "121": 2}, "test-other": {"1688": 2, "1998": 3}}
VOICES = ["en-us", "en-gb+m3", "en-us+f3", "en-gb-scotland+m1", "en-029+f2", "en-us+m5"]
LONG = "1998-1211-0002"
"""A test-other utterance padded to 31 s: longer than Whisper's window, so prepare-data must skip it."""

TINY = [
    "--set", "prepare_text.tokenizer.vocab_size=64",
    "--set", "train_encoder.model.whisper=whisper-tiny.en",
    "--set", "train_encoder.model.head.d_model=32", "--set", "train_encoder.model.head.layers=1",
    "--set", "train_encoder.model.head.heads=2", "--set", "train_encoder.model.head.ff_dim=64",
    "--set", "train_encoder.train.steps=6", "--set", "train_encoder.train.batch_size=8",
    "--set", "train_encoder.train.warmup_steps=1", "--set", "train_encoder.train.checkpoint_every=3",
    "--set", "train_encoder.train.log_every=3",
    "--set", "train_encoder.train.validate_every=3", "--set", "train_encoder.train.validation_items=4",
    "--set", "align.train.validate_every=2", "--set", "align.train.validation_items=4",
    "--set", "model.llm.model=tiny-random-smollm2", "--set", "model.projector.hidden=32",
    "--set", "align.train.steps=4", "--set", "align.train.batch_size=4", "--set", "align.train.warmup_steps=1",
    "--set", "align.train.checkpoint_every=2", "--set", "align.train.log_every=2",
    "--set", "decode.peers.whisper.model=whisper-tiny.en", "--set", "decode.peers.whisper.max_new_tokens=24",
    "--set", "decode.generation.max_new_tokens=12",
]


def test_recipe_as_shipped_validates() -> None:
    """The hub defaults (not run here) hold no unknown key: the config, and the encoder's own model section,
    which is only validated when the encoder is built; decode covers every align system and peer."""
    from speechllm_cli.common.config import validate
    from speechllm_cli.core.encoders import encoder_class
    from speechllm_cli.stages.recipe import load_recipe

    config = load_recipe(str(RUN.parent), []).config
    assert config.train_encoder is not None and config.align is not None and config.decode is not None
    model = validate(encoder_class(config.train_encoder.encoder).config_class, config.train_encoder.model, "model")
    assert model.trainable_layers == 0        # a frozen front, cached once: what README's figures assume
    assert set(config.decode.systems) == {"ctc", *config.align.systems, *config.decode.peers}


def _sentences(count: int) -> list[str]:
    """Short King James verses in LibriSpeech's transcript style: upper case, no punctuation but apostrophes."""
    from speechllm_cli.data.text_domains import GENERATORS

    chosen = []
    for item in GENERATORS["kjv"](7):
        words = re.sub(r"[^a-z' ]", " ", item.text.lower()).split()
        if 4 <= len(words) <= 10:
            chosen.append(" ".join(words).upper())
        if len(chosen) == count:
            return chosen
    raise AssertionError("not enough short verses")


def _corpus(root: Path) -> tuple[Path, dict[str, dict[str, str]]]:
    """The tree, and each split's transcripts by utterance id (splits named as the recipe names them)."""
    import numpy as np
    import soundfile

    from speechllm_cli.data.tts import Voice, add_noise, synthesize

    texts = iter(_sentences(sum(n for speakers in SPEAKERS.values() for n in speakers.values())))
    parts = {part: {speaker: [next(texts) for _ in range(n)] for speaker, n in speakers.items()}
             for part, speakers in SPEAKERS.items()}
    voice_of = {speaker: VOICES[i % len(VOICES)] for i, speaker in enumerate(
        s for speakers in SPEAKERS.values() for s in speakers)}

    def speak(path: Path, text: str) -> None:
        speaker, part = path.parent.parent.name, path.parents[2].name
        audio = synthesize(text.lower(), Voice.parse(f"espeak-ng:{voice_of[speaker]}"), 1.0, 1.0, 16000)
        if part == "test-other":
            audio = add_noise(audio, 10.0, seed=len(text))
        if path.stem == LONG:
            audio = np.concatenate([audio, np.zeros(31 * 16000 - len(audio), dtype=np.float32)])
        soundfile.write(path, audio, 16000, format="FLAC")

    librispeech_tree(root, parts, speak, chapter="1211")
    transcripts = {part.replace("-", "_"): {f"{speaker}-1211-{i:04d}": text for speaker, texts in speakers.items()
                                            for i, text in enumerate(texts)} for part, speakers in parts.items()}
    return root, transcripts


def _run(work: Path, corpus: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{SPEECHLLM.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(RUN), "--set", f"prepare_data.librispeech.corpus_dir={corpus}", *TINY, *args],
                          cwd=work, env=env, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def librispeech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, dict[str, str]],
                                                                   subprocess.CompletedProcess[str]]:
    work = tmp_path_factory.mktemp("librispeech")
    corpus, transcripts = _corpus(work / "corpus")
    result = _run(work, corpus)
    assert result.returncode == 0, result.stderr
    return work, corpus, transcripts, result


def test_every_stage_runs_and_curriculum_is_passed_over(librispeech) -> None:
    _, _, _, result = librispeech
    stages = re.findall(r"== stage (\d+): speechllm ([\w-]+)", result.stderr)
    assert stages == [("1", "prepare-data"), ("2", "prepare-text"), ("3", "train-encoder"), ("4", "calibrate"),
                      ("5", "align"), ("6", "decode"), ("8", "score")]


def test_splits_match_the_tree_and_the_long_utterance_is_counted(librispeech) -> None:
    work, _, transcripts, result = librispeech
    assert "too_long=1" in result.stdout
    for split, expected in transcripts.items():
        cuts = load_cuts(work / "exp/librispeech/data" / split / "cuts.jsonl.gz")
        assert sorted(cuts.ids) == sorted(i for i in expected if i != LONG), split
        for cut in cuts:
            assert cut.supervisions[0].text == expected[cut.id] and cut.supervisions[0].speaker == cut.id.split("-")[0]
            assert 0.5 < cut.duration < 30.0 and abs(cut.load_audio()).max() > 0.01
    text = [json.loads(line) for line in (work / "exp/librispeech/text/train.jsonl").read_text().splitlines()]
    assert len(text) == 24 and all(row["text"] == row["text"].lower() and row["text"] for row in text)


def test_encoder_calibration_and_alignment(librispeech) -> None:
    work, *_ = librispeech
    exp = work / "exp/librispeech"
    assert json.loads((exp / "encoder/encoder.json").read_text()) == {"encoder": "whisper-ctc"}
    stats = json.loads((exp / "encoder/.done").read_text())["stats"]
    assert stats["steps"] == 6 and stats["utterances"] == 24
    whisper = json.loads((exp / "encoder/model/whisper_config.json").read_text())
    assert whisper["d_model"] == 384      # whisper-tiny.en, swapped in for the recipe's whisper-small
    assert (exp / "encoder/calibration/model/calibration.json").is_file()
    assert json.loads((exp / "encoder/calibration/.done").read_text())["stats"]["utterances"] > 0
    for system, mode in {"tasu": "cps", "calibrated": "calibrated", "paired": "paired"}.items():
        folder = exp / "align" / system
        assert {p.name for p in (folder / "projector").iterdir()} == {"config.json", "model.safetensors"}
        assert json.loads((folder / "projector/config.json").read_text())["kind"] == "tasu-mlp"
        assert not (folder / "lora").exists()          # the LLM stays frozen, as in TASU
        done = json.loads((folder / ".done").read_text())["stats"]
        assert done["mode"] == mode and done["steps"] == 4 and done["examples"] == 24
        log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
        assert [row["step"] for row in log if "loss" in row] == [2, 4]
        assert [row["step"] for row in log if "valid_loss" in row] == [2, 4], "4 items held out, as set"
        assert (folder / "checkpoint/best/manifest.json").is_file()
    encoder_log = [json.loads(line) for line in (exp / "encoder/train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in encoder_log if "valid_loss" in row] == [3, 6]
    assert list((exp / "encoder/tensorboard").glob("events.out.tfevents.*"))


def test_hypotheses_for_every_system_and_test_utterance(librispeech) -> None:
    work, _, transcripts, _ = librispeech
    exp = work / "exp/librispeech"
    for system in SYSTEMS:
        for split in ("test_clean", "test_other"):
            hyps = exp / "decode" / system / split / "hyps.jsonl"
            rows = [json.loads(line) for line in hyps.read_text().splitlines()]
            expected = {i: text for i, text in transcripts[split].items() if i != LONG}
            assert {row["id"]: row["ref"] for row in rows} == expected, (system, split)
            assert len(rows) == len(expected) and all(isinstance(row["hyp"], str) for row in rows)
    results = (exp / "RESULTS.md").read_text()
    for system in SYSTEMS:
        assert re.search(rf"\|\s*{system}\s*\|", results), system


def test_second_run_is_up_to_date(librispeech) -> None:
    work, corpus, _, _ = librispeech
    exp = work / "exp/librispeech"
    markers = {marker: marker.stat().st_mtime_ns for marker in exp.rglob(".done")}
    result = _run(work, corpus)
    assert result.returncode == 0, result.stderr
    assert "prepare-data: 4 outputs (4 up to date)" in result.stdout
    assert result.stdout.count("up to date") >= 4 + 3 + 1 + 1 + 10 + 10
    assert " done " not in result.stdout
    assert {marker: marker.stat().st_mtime_ns for marker in exp.rglob(".done")} == markers


COUNTING_FLAC_OPENS = """
import sys
opened = []
sys.addaudithook(lambda event, args: opened.append(1) if event == "open" and str(args[0]).endswith(".flac") else None)
from speechllm_cli.cli.app import app
sys.argv = ["speechllm", *sys.argv[1:]]
try:
    app()
finally:
    print(f"flac files opened: {len(opened)}", file=sys.stderr)
"""


def _flac_opens(work: Path, corpus: Path) -> int:
    """Stages 1-6 again, in a process that counts every Python open of a FLAC file (what hashing does)."""
    command = [str(SPEECHLLM.parent / "python"), "-c", COUNTING_FLAC_OPENS, "run", "--recipe", str(RUN.parent),
               "--stop-stage", "6", "--set", f"prepare_data.librispeech.corpus_dir={corpus}", *TINY]
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert " done " not in result.stdout, "everything was up to date"
    return int(re.findall(r"flac files opened: (\d+)", result.stderr)[-1])


def test_keys_of_unchanged_audio_read_no_audio_bytes(librispeech) -> None:
    """The digest cache of the experiment folder: a rerun over unchanged audio opens none of it; without the
    cache every file is read again (the hook sees them), and the cache is rebuilt."""
    work, corpus, _, _ = librispeech
    exp = work / "exp/librispeech"
    files = len(list(corpus.rglob("*.flac"))) - 1  # the long utterance is in no manifest
    assert _flac_opens(work, corpus) == 0
    shutil.rmtree(exp / ".cache")
    assert _flac_opens(work, corpus) == files, "each file read once, by the first stage that keys it"
    assert _flac_opens(work, corpus) == 0


def test_stage_range_skips_curriculum(librispeech) -> None:
    work, corpus, _, _ = librispeech
    only = _run(work, corpus, "--stage", "5", "--stop-stage", "7")
    assert only.returncode == 0, only.stderr
    assert re.findall(r"== stage (\d+):", only.stderr) == ["5", "6"]
    nothing = _run(work, corpus, "--stage", "7", "--stop-stage", "7")
    assert nothing.returncode == 0 and "== stage" not in nothing.stderr
