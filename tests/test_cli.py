"""The command line: every stage exists, documents its options and fails honestly when not built."""

from __future__ import annotations

import pytest

STAGES = ["prepare-data", "prepare-text", "train-encoder", "align", "curriculum-finetune", "distill",
          "decode", "score"]
PLANNED = ["distill"]


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


@pytest.mark.parametrize("stage", PLANNED)
def test_planned_stage_fails_with_one_line(cli, stage: str) -> None:
    result = cli(stage, "--recipe", "tiny")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: speechllm {stage}: not implemented yet"


def test_curriculum_finetune_before_its_inputs_exist_is_one_line(cli) -> None:
    result = cli("curriculum-finetune", "--recipe", "tiny", "--scheme", "text-only")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: exp/tiny/encoder/encoder.json: no trained encoder (run train-encoder first)"
    unknown = cli("curriculum-finetune", "--recipe", "tiny", "--track", "fr")
    assert unknown.returncode == 1 and "--track fr: not in curriculum_finetune.tracks (known: en, en-de)" in unknown.stderr
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
