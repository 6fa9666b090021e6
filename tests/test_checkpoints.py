"""train-encoder trusts nothing it finds in the experiment folder: missing inputs, a damaged front-state
cache and a diverging run each end in one line, never a traceback, and the good partial work stays.

A small real folder: eight tones imported from a TSV, a character tokenizer, and whisper-ctc on a tiny
random Whisper (the encoder whose frozen front is cached).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.core import training
from speechllm_cli.core.features import pad_waveforms
from speechllm_cli.core.training import MANIFEST, TENSORS, TrainJob, load_verified, train
from speechllm_cli.stages import prepare_data, prepare_text, train_encoder
from speechllm_cli.stages.inputs import load_cuts, load_trained_encoder
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
    assert sorted(p.name for p in cache.iterdir()) == ["shard-00000"], "eight short tones make one shard"
    shard = cache / "shard-00000"
    states, _ = load_verified(shard)
    data = (shard / TENSORS).read_bytes()
    (shard / TENSORS).write_bytes(data[: len(data) // 2])

    second = run_cli(*command, cwd=tmp_path)
    assert second.returncode == 1
    assert _error_lines(second.stderr, target) == [
        (f"{cache}: skipped shard-00000 ({TENSORS} does not match its sha256 in {MANIFEST}); computing the frozen "
         "encoder's outputs again"), stopped]
    rebuilt, _ = load_verified(shard)
    assert rebuilt.keys() == states.keys() and all((rebuilt[k] == states[k]).all() for k in states)


class Killed(Exception):
    """Raised by a spy where a kill would stop the run: after it, only what reached the disk is left."""


def _spy_loads(monkeypatch: pytest.MonkeyPatch, kill_at: int | None = None) -> list[int]:
    """The indices ``CutAudio.load`` reads, in order (the real reads happen); raises :class:`Killed` at the
    ``kill_at``-th read."""
    from speechllm_cli.data.cut_audio import CutAudio

    loads: list[int] = []
    real = CutAudio.load

    def load(self: CutAudio, index: int) -> torch.Tensor:
        if kill_at is not None and len(loads) + 1 == kill_at:
            raise Killed
        loads.append(index)
        return real(self, index)

    monkeypatch.setattr(CutAudio, "load", load)
    return loads


def _spy_training(monkeypatch: pytest.MonkeyPatch, seen: Callable[[TrainJob], None],
                  kill_at: int | None = None) -> list[tuple[list[int], dict[str, Any]]]:
    """Each collated micro-batch as (item indices, batch); ``seen(job)`` runs as training starts. The real
    training loop runs; :class:`Killed` is raised at the ``kill_at``-th batch, after the checkpoints before it."""
    batches: list[tuple[list[int], dict[str, Any]]] = []

    def spy(job: TrainJob, config: Any, track: Any) -> Any:
        seen(job)
        real_collate = job.collate

        def collate(items: list[tuple[int, list[int]]], generator: torch.Generator, progress: float) -> Any:
            if kill_at is not None and len(batches) + 1 == kill_at:
                raise Killed
            batch = real_collate(items, generator, progress)
            batches.append(([index for index, _ in items], batch))
            return batch

        job.collate = collate
        return train(job, config, track)

    monkeypatch.setattr(training, "train", spy)
    return batches


def test_front_states_are_cached_in_shards_and_read_back_per_batch(prepared: tuple[Path, Path], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Caching reads each utterance's audio once; training reads no audio and gets the states the shards hold,
    which are the front's outputs for the right utterances."""
    recipe, exp = prepared
    target = _copy(exp, tmp_path / "exp", "data", "text", "tokenizer")
    monkeypatch.setattr(train_encoder, "CACHE_BATCH", 2)
    monkeypatch.setattr(train_encoder, "SHARD_SECONDS", 1.5)
    loads = _spy_loads(monkeypatch)
    cache = target / "encoder/checkpoint/front_states"
    shards: dict[str, dict[str, torch.Tensor]] = {}
    loads_before_training: list[int] = []

    def seen(job: TrainJob) -> None:
        shards.update({path.name: load_verified(path)[0] for path in sorted(cache.iterdir())})
        loads_before_training.extend(loads)

    batches = _spy_training(monkeypatch, seen)
    train_encoder.run(_context(recipe, target))

    # Tones of 1.1 s, 1.0 s, ... 0.4 s (longest first) in caching batches of two; a shard closes past 1.5 s.
    assert list(shards) == ["shard-00000", "shard-00001", "shard-00002"]
    assert [sorted(states) for states in shards.values()] == [
        ["state.6", "state.7"], ["state.4", "state.5"], [f"state.{i}" for i in range(4)]]
    assert sorted(loads_before_training) == list(range(len(TEXTS))), "caching reads each utterance once"
    assert len(loads) == len(loads_before_training), "training reads no audio"
    assert not cache.exists(), "the cache is deleted once training is done"

    states = {name: state for shard in shards.values() for name, state in shard.items()}
    assert len(batches) == 4
    for indices, batch in batches:
        assert batch["from_states"] and batch["lengths"].tolist() == [len(states[f"state.{i}"]) for i in indices]
        for row, index in enumerate(indices):
            assert torch.equal(batch["audio"][row, : batch["lengths"][row]], states[f"state.{index}"].float())

    encoder = load_trained_encoder(_context(recipe, target))
    cuts = load_cuts(_context(recipe, target), "train")
    with torch.no_grad():
        for index, cut in enumerate(cuts):
            alone, frames = encoder.front(*pad_waveforms([torch.from_numpy(cut.load_audio()[0])]))
            torch.testing.assert_close(states[f"state.{index}"], alone[0, : frames[0]].half(), atol=2e-3, rtol=2e-3)


def test_training_from_audio_reads_only_each_batchs_audio(prepared: tuple[Path, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An encoder trained on audio (no frozen front): nothing is read before training, and each micro-batch
    reads exactly its own utterances when it is made."""
    recipe, exp = prepared
    target = _copy(exp, tmp_path / "exp", "data", "text", "tokenizer")
    loads = _spy_loads(monkeypatch)
    loads_before_training: list[int] = []
    batches = _spy_training(monkeypatch, lambda job: loads_before_training.extend(loads))

    conformer = "{d_model: 16, layers: 1, heads: 2, ff_dim: 32, conv_kernel: 5}"
    context = _context(recipe, target, "train_encoder.encoder=conformer-ctc", f"train_encoder.model={conformer}")
    train_encoder.run(context)

    assert loads_before_training == []
    assert len(batches) == 4
    reads, start = [], 0
    for indices, batch in batches:
        reads.append(loads[start:start + len(indices)])
        start += len(indices)
        assert not batch["from_states"] and len(batch["audio"]) == len(indices)
    assert reads == [indices for indices, _ in batches] and start == len(loads)
    assert not (target / "encoder/checkpoint/front_states").exists()


def _weights(exp: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {f"{path.name}/{name}": value for path in sorted((exp / "encoder/model").glob("*.safetensors"))
            for name, value in load_file(path).items()}


def test_killed_caching_and_training_resume_to_the_uninterrupted_weights(prepared: tuple[Path, Path],
                                                                         tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped while caching keeps the shards it wrote; the next computes only the others, is stopped
    in training, and the third resumes from its checkpoint to the weights of a run never stopped."""
    recipe, exp = prepared
    monkeypatch.setattr(train_encoder, "CACHE_BATCH", 2)
    monkeypatch.setattr(train_encoder, "SHARD_SECONDS", 1.5)
    whole = _copy(exp, tmp_path / "whole", "data", "text", "tokenizer")
    train_encoder.run(_context(recipe, whole))

    killed = _copy(exp, tmp_path / "killed", "data", "text", "tokenizer")
    cache = killed / "encoder/checkpoint/front_states"
    with monkeypatch.context() as patch:
        _spy_loads(patch, kill_at=5)
        with pytest.raises(Killed):
            train_encoder.run(_context(recipe, killed))
    assert sorted(path.name for path in cache.iterdir()) == ["shard-00000", "shard-00001"], \
        "four reads filled the first two shards"

    with monkeypatch.context() as patch:
        loads = _spy_loads(patch)
        _spy_training(patch, lambda job: None, kill_at=3)
        with pytest.raises(Killed):
            train_encoder.run(_context(recipe, killed))
    assert sorted(loads) == [0, 1, 2, 3], "only the missing shard's audio is read"
    assert sorted(path.name for path in (killed / "encoder/checkpoint").iterdir()) == [
        "front_states", "step-1", "step-2"]

    with monkeypatch.context() as patch:
        loads = _spy_loads(patch)
        train_encoder.run(_context(recipe, killed))
    assert loads == [], "the cache is reused"
    stats = json.loads((killed / "encoder/.done").read_text())["stats"]
    assert stats["resumed_from"] == 2
    ours, theirs = _weights(killed), _weights(whole)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[name], theirs[name]) for name in ours)
