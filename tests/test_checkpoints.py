"""train-encoder trusts nothing it finds in the experiment folder: missing inputs, a damaged front-state
cache and a diverging run each end in one line, never a traceback, and the good partial work stays.

A small real folder: eight tones imported from a TSV, a character tokenizer, and whisper-ctc on a tiny
random Whisper (the encoder whose frozen front is cached).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.core.training import MANIFEST, TENSORS, load_verified
from speechllm_cli.stages import prepare_data, prepare_text, train_encoder
from speechllm_cli.stages.recipe import load_recipe
from speechllm_cli.stages.runner import Context
from tests.conftest import run_cli, tiny_whisper, write_tone

TEXTS = ["go left now", "turn the light on", "stop", "play some music", "open the door", "close it",
         "left and right", "lights off"]


def _recipe(root: Path) -> Path:
    lines = []
    for index, text in enumerate(TEXTS):
        write_tone(root / "audio" / f"u{index}.wav", seconds=0.4 + 0.1 * index)
        lines.append(f"audio/u{index}.wav\t{text}")
    (root / "clips.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    head = {"d_model": 16, "layers": 1, "heads": 2, "ff_dim": 32, "conv_kernel": 5}
    config = {
        "name": "checkpoints",
        "prepare_data": {"source": "tsv", "tsv": {"file": str(root / "clips.tsv"), "split": "train"}},
        "prepare_text": {"sets": {"train": {"split": "train"}},
                         "tokenizer": {"vocab_size": 30, "model_type": "char", "train_sets": ["train"]}},
        "train_encoder": {"encoder": "whisper-ctc",
                          "model": {"whisper": str(tiny_whisper(root / "whisper")), "head": head},
                          "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 1}},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _context(recipe: Path, exp: Path, *sets: str) -> Context:
    return Context(load_recipe(str(recipe), list(sets)).config, exp)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The recipe and an experiment folder with data, text and tokenizer (no encoder)."""
    root = tmp_path_factory.mktemp("checkpoints")
    recipe = _recipe(root)
    exp = root / "exp"
    prepare_data.run(_context(recipe, exp))
    prepare_text.run(_context(recipe, exp))
    return recipe, exp


def _copy(exp: Path, target: Path, *parts: str) -> Path:
    for part in parts:
        shutil.copytree(exp / part, target / part)
    return target


@pytest.mark.parametrize(("parts", "missing", "message"), [
    ((), "data/train/cuts.jsonl.gz", "split 'train' is not prepared (run prepare-data first)"),
    (("data",), "text/train.jsonl", "text set 'train' does not exist (run prepare-text first)"),
    (("data", "text"), "tokenizer/tokenizer.model", "no tokenizer (run prepare-text first)"),
])
def test_a_missing_input_is_one_line_naming_the_stage_to_run(prepared: tuple[Path, Path], tmp_path: Path,
                                                             parts: tuple[str, ...], missing: str,
                                                             message: str) -> None:
    recipe, exp = prepared
    target = _copy(exp, tmp_path / "exp", *parts)
    with pytest.raises(SpeechLLMError) as error:
        train_encoder.run(_context(recipe, target))
    assert str(error.value) == f"{target / missing}: {message}"
    assert not (target / "encoder/encoder.json").exists()


def _error_lines(stderr: str, exp: Path) -> list[str]:
    """Our lines on stderr, without the progress bars of model loading."""
    return [line for line in stderr.splitlines() if line.startswith(("error:", str(exp), "Traceback"))]


def test_diverging_training_stops_and_a_damaged_front_cache_is_rebuilt(prepared: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    recipe, exp = prepared
    target = _copy(exp, tmp_path / "exp", "data", "text", "tokenizer")
    command = ("train-encoder", "--recipe", recipe, "--exp-dir", target, "--set", "train_encoder.train.lr=1e30")
    stopped = f"error: {target / 'encoder'}: non-finite loss at step 2; kept the last good checkpoint (step 1)"

    first = run_cli(*command, cwd=tmp_path)
    assert first.returncode == 1 and _error_lines(first.stderr, target) == [stopped]
    encoder = target / "encoder"
    assert not (encoder / ".done").exists() and not (encoder / "encoder.json").exists()
    assert sorted(p.name for p in (encoder / "checkpoint").iterdir()) == ["front_states", "step-1"]
    assert load_verified(encoder / "checkpoint/step-1")[1]["step"] == 1
    cache = encoder / "checkpoint/front_states"
    states, _ = load_verified(cache)
    data = (cache / TENSORS).read_bytes()
    (cache / TENSORS).write_bytes(data[: len(data) // 2])

    second = run_cli(*command, cwd=tmp_path)
    assert second.returncode == 1
    assert _error_lines(second.stderr, target) == [
        f"{cache}: {TENSORS} does not match its sha256 in {MANIFEST}; computing the frozen encoder's outputs again",
        stopped]
    rebuilt, _ = load_verified(cache)
    assert rebuilt.keys() == states.keys() and all((rebuilt[k] == states[k]).all() for k in states)
