"""The command line: every stage exists, documents its options, answers --help at once, fails in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

STAGES = ["prepare-data", "prepare-text", "train-encoder", "calibrate", "align", "decode", "curriculum-finetune",
          "score"]
HEAVY = ("torch", "transformers", "peft", "lhotse")


def test_help_lists_every_stage(cli) -> None:
    result = cli("--help")
    assert result.returncode == 0
    for stage in STAGES:
        assert stage in result.stdout


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_documents_the_common_options(cli, stage: str) -> None:
    result = cli(stage, "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--recipe", "--exp-dir", "--set", "--force"):
        assert option in result.stdout


@pytest.mark.parametrize("args", [["--help"], *([stage, "--help"] for stage in STAGES)])
def test_help_imports_no_model_library(args: list[str]) -> None:
    """--help must answer at once: torch, transformers, peft and lhotse are imported only by running stages."""
    probe = ("import sys; from typer.main import get_command; from speechllm_cli.cli.app import app\n"
             f"try:\n    get_command(app).main({args!r}, prog_name='speechllm')\nexcept SystemExit as e:\n"
             "    assert e.code == 0, e.code\n"
             f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_curriculum_finetune_before_its_inputs_exist_is_one_line(cli) -> None:
    result = cli("curriculum-finetune", "--recipe", "tiny", "--scheme", "text-only")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: exp/tiny/text/slu_train.jsonl: text set 'slu_train' does not exist (run prepare-text first)")
    unknown = cli("curriculum-finetune", "--recipe", "tiny", "--track", "fr")
    assert unknown.returncode == 1
    assert "--track fr: not in curriculum_finetune.tracks (known: en, en-de)" in unknown.stderr
    scheme = cli("curriculum-finetune", "--recipe", "tiny", "--scheme", "warmup")
    assert scheme.returncode == 1 and "schemes: 'warmup' is neither a preset" in scheme.stderr


def test_unknown_recipe_is_a_one_line_error(cli) -> None:
    result = cli("prepare-data", "--recipe", "no-such-recipe")
    assert result.returncode == 1
    assert "no-such-recipe: no such recipe" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_version(cli) -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("speechllm 0.")
