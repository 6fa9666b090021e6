"""The experiment folder as an adversary or a careless user meets it: literal names, no escapes, one line.

Each test is a finding of issue 11, reproduced through the real ``speechllm`` command.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.conftest import load_cuts, write_tone


def _tree(root: Path) -> dict[str, str]:
    """Every file below ``root`` with its content hash: what "nothing changed" is checked against."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line(result, code: int = 1) -> str:  # noqa: ANN001
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def _clips(folder: Path, name: str = "clips #1.tsv") -> Path:
    write_tone(folder / "a.wav")
    write_tone(folder / "b.wav")
    tsv = folder / name
    tsv.write_text("path\ttext\na.wav\tfirst clip\nb.wav\tsecond clip\n", encoding="utf-8")
    return tsv


def test_option_values_are_taken_literally(cli, tmp_path: Path) -> None:
    """A '#' in a path and a numeric split name used to be parsed as YAML (a comment, an int)."""
    tsv = _clips(tmp_path / "in")
    result = cli("prepare-data", "--tsv", tsv.relative_to(tmp_path), "--split", "2024", "--exp-dir", "exp")
    assert result.returncode == 0, result.stderr
    assert len(load_cuts(tmp_path / "exp/data/2024/cuts.jsonl.gz")) == 2


def test_messages_are_printed_without_markup(cli, tmp_path: Path) -> None:
    missing = _one_line(cli("prepare-data", "--tsv", "in/[red]x.tsv", "--split", "a"))
    assert missing == "error: prepare_data.tsv.file: no such file: in/[red]x.tsv"
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("path\ttext\ngone.wav\thello\n", encoding="utf-8")
    bad = _one_line(cli("prepare-data", "--tsv", "bad.tsv", "--split", "a"))
    assert bad.endswith("[split a; --on-bad-input skip skips and counts these]"), bad


@pytest.mark.parametrize("split", ["../../../x", "/tmp/speechllm-abs-split", "a/b", ".hidden", ".."])
def test_split_names_cannot_leave_the_experiment_folder(cli, tmp_path: Path, split: str) -> None:
    tsv = _clips(tmp_path / "in", "ok.tsv")
    before = _tree(tmp_path)
    line = _one_line(cli("prepare-data", "--tsv", tsv, "--split", split, "--exp-dir", "a/b/exp"))
    assert "prepare_data.tsv.split" in line and "is not a plain name" in line, line
    assert _tree(tmp_path) == before
    assert not Path(split).is_absolute() or not Path(split).exists()


def test_system_names_cannot_delete_outside_the_folder(cli, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    (victim / "checkpoint").mkdir(parents=True)
    (victim / ".done").write_text("{}", encoding="utf-8")
    (victim / "checkpoint" / "keep.txt").write_text("mine", encoding="utf-8")
    before = _tree(tmp_path)
    line = _one_line(cli("align", "--recipe", "tiny", "--exp-dir", "exp",
                         "--set", 'align.systems={"../../victim": {"mode": "tasu", "text_sets": [train]}}'))
    assert "align.systems" in line and "'../../victim' is not a plain name" in line, line
    assert _tree(tmp_path) == before


def test_exp_dir_that_is_a_file_is_one_line(cli, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("not a folder", encoding="utf-8")
    assert _one_line(cli("prepare-text", "--recipe", "tiny", "--exp-dir", "f")) == \
        "error: --exp-dir f: is a file, not a folder"


def test_decode_system_without_files_narrows_the_recipe(cli) -> None:
    line = _one_line(cli("decode", "--recipe", "tiny", "--system", "bogus"))
    assert line.startswith("error: --system bogus: not in decode.systems (known: ctc, ctc_lm, tasu")


def test_a_copied_recipe_folder_runs_its_stages(tmp_path: Path) -> None:
    """run.sh used to be a relative link to the mini recipe's script: dangling once the folder was copied."""
    import shutil
    import subprocess

    from tests.conftest import REPO, SPEECHLLM

    recipe = tmp_path / "my-recipe"
    shutil.copytree(REPO / "recipes/tiny", recipe, symlinks=True)
    env = {"PATH": f"{SPEECHLLM.parent}:/usr/bin:/bin"}
    result = subprocess.run([str(recipe / "run.sh"), "--stage", "8", "--exp-dir", "exp"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"== stage 8: speechllm score --recipe {recipe} --exp-dir exp",
        "error: score: nothing decoded yet in exp/decode and no curriculum-finetune cell evaluated (run decode or "
        "curriculum-finetune first)"]


def test_no_module_unpickles() -> None:
    """Checkpoints and caches are safetensors + JSON: loading a shared experiment folder runs none of its code."""
    from tests.conftest import REPO

    offending = [f"{path.relative_to(REPO)}:{number}" for path in sorted((REPO / "speechllm_cli").rglob("*.py"))
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if any(word in line for word in ("pickle", "torch.load(", "weights_only=False"))]
    assert offending == []
