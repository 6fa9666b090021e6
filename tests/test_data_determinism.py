"""The same inputs and config give the same bytes, so a rerun leaves every later stage up to date.

One small mini-style recipe (a few espeak-ng commands) is prepared once for the module, through the real
command; a temporary FLAC that a killed render would leave is planted before that first run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import load_cuts, run_cli

CONFIG = {
    "name": "det",
    "prepare_data": {"source": "mini", "mini": {
        "seed": 3, "workers": 1,
        "domains": {"commands": {"generator": "commands"}},
        "voices": {"v": ["espeak-ng:en-us"]},
        "splits": {"train": {"domain": "commands", "utterances": 4, "voices": "v"}}}},
    "prepare_text": {"sets": {"train": {"split": "train"}},
                     "tokenizer": {"vocab_size": 40, "train_sets": ["train"]}},
}
LEFTOVER = "data/audio/train/.train-00000-0a1b2c3d.flac.k7x2m9qz.flac"
"""Named as common.io.atomic_path names its temporary files; a SIGKILL during a render leaves one."""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    work = tmp_path_factory.mktemp("det")
    recipe = work / "det.yaml"
    recipe.write_text(yaml.safe_dump(CONFIG))
    exp = work / "exp" / "det"
    (exp / LEFTOVER).parent.mkdir(parents=True)
    (exp / LEFTOVER).write_bytes(b"half a flac")
    return recipe, exp, run_cli("prepare-data", "--recipe", recipe, cwd=work)


def test_a_rerun_removes_temporary_audio_a_killed_render_left(prepared) -> None:
    _, exp, result = prepared
    assert result.returncode == 0, result.stderr
    audio = exp / "data/audio/train"
    assert not (exp / LEFTOVER).exists()
    assert sorted(p.name[:11] for p in audio.iterdir()) == [f"train-{i:05d}" for i in range(4)]


def test_prepared_cuts_are_byte_identical_when_rebuilt(prepared) -> None:
    recipe, exp, _ = prepared
    cuts = exp / "data/train/cuts.jsonl.gz"
    first = cuts.read_bytes()
    assert first[4:8] == bytes(4) and not first[3] & 0x08, "gzip header carries a time or a file name"
    (exp / "data/train/.done").unlink()
    again = run_cli("prepare-data", "--recipe", recipe, cwd=exp.parent.parent)
    assert again.returncode == 0, again.stderr
    assert "1 outputs (0 up to date)" in again.stdout
    assert cuts.read_bytes() == first
    assert len(load_cuts(cuts)) == 4


def test_tokenizer_is_byte_identical_when_retrained(prepared) -> None:
    recipe, exp, _ = prepared
    models = []
    for _ in range(2):
        result = run_cli("prepare-text", "--recipe", recipe, "--force", cwd=exp.parent.parent)
        assert result.returncode == 0, result.stderr
        models.append((exp / "tokenizer/tokenizer.model").read_bytes())
    assert models[0] == models[1]
    assert str(exp.parent.parent).encode() not in models[0]
