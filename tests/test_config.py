"""Typed recipe configs: unknown keys, wrong types and missing files are one-line errors naming them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from speechllm_cli.common.config import apply_overrides
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.data.tts import Voice
from speechllm_cli.stages.recipe import load_recipe


def _recipe(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "myrecipe" / "config.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data))
    return path


def _tiny() -> dict:
    return yaml.safe_load((Path(__file__).parent.parent / "recipes/tiny/config.yaml").read_text())


def test_unknown_key_names_key_and_file(cli, tmp_path: Path) -> None:
    data = _tiny()
    data["prepare_data"]["mini"]["seeed"] = 3
    path = _recipe(tmp_path, data)
    result = cli("prepare-data", "--recipe", path.parent)
    assert result.returncode == 1
    assert f"{path}: prepare_data.mini.seeed: unknown key" in result.stderr.replace("\n", "")
    assert "Traceback" not in result.stderr


def test_wrong_type_names_key(cli, tmp_path: Path) -> None:
    data = _tiny()
    data["prepare_data"]["mini"]["splits"]["train"]["utterances"] = "many"
    path = _recipe(tmp_path, data)
    result = cli("prepare-data", "--recipe", path)
    assert result.returncode == 1
    assert "prepare_data.mini.splits.train.utterances" in result.stderr
    assert "'many'" in result.stderr


def test_missing_input_file_names_key_and_file(cli, tmp_path: Path) -> None:
    result = cli("prepare-data", "--tsv", tmp_path / "nope.tsv", "--split", "mine")
    assert result.returncode == 1
    assert f"prepare_data.tsv.file: no such file: {tmp_path / 'nope.tsv'}" in result.stderr.replace("\n", "")


def test_invalid_yaml_names_line(cli, tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nprepare_data: [unclosed\n")
    result = cli("prepare-data", "--recipe", path)
    assert result.returncode == 1
    assert f"{path}:" in result.stderr and "invalid YAML" in result.stderr


def test_set_overrides_are_typed_and_validated() -> None:
    recipe = load_recipe("tiny", ["prepare_data.mini.seed=7", "prepare_text.tokenizer.vocab_size=64"])
    assert recipe.config.prepare_data.mini.seed == 7
    assert recipe.config.prepare_text.tokenizer.vocab_size == 64
    with pytest.raises(SpeechLLMError, match=r"command line: prepare_data.mini.seed: .*'x'"):
        load_recipe(None, ["prepare_data.source=mini", "prepare_data.mini.seed=x"])
    with pytest.raises(SpeechLLMError, match="expected section.key=value"):
        apply_overrides({}, ["novalue"])


def test_missing_source_section_is_reported() -> None:
    with pytest.raises(SpeechLLMError, match="source is 'kaldi' but the 'kaldi' section is missing"):
        load_recipe("tiny", ["prepare_data.source=kaldi"])


@pytest.mark.parametrize("recipe", ["tiny", "mini"])
def test_test_voices_are_held_out_of_training(recipe: str) -> None:
    mini = load_recipe(recipe, []).config.prepare_data.mini
    train_voices = set(mini.voices[mini.splits["train"].voices])
    for name in ("test_newvoice", "test_xdomain"):
        assert not train_voices & set(mini.voices[mini.splits[name].voices])
    assert mini.splits["test_xdomain"].domain != mini.splits["train"].domain


def test_voice_specs_are_checked() -> None:
    assert Voice.parse("espeak-ng:en-us+f3") == Voice("espeak-ng", "en-us+f3")
    with pytest.raises(ValueError, match="unknown TTS engine"):
        Voice.parse("festival:kal")
    with pytest.raises(SpeechLLMError, match="prepare_data.mini.voices"):
        load_recipe("tiny", ["prepare_data.mini.voices.train=[en-us]"])


def test_the_model_section_is_shared_and_validated_without_torch(tmp_path: Path) -> None:
    """Issue 12: one ``model`` section (LLM, projector, LSD, CPS) for every stage; the old per-stage keys are
    errors naming them, and a projector kind outside the registry is refused before anything runs."""
    import subprocess
    import sys
    from typing import get_args

    from speechllm_cli.core.configs import ProjectorKind
    from speechllm_cli.core.projector import PROJECTORS

    assert set(get_args(ProjectorKind)) == set(PROJECTORS)
    data = _tiny()
    data["align"]["llm"] = data["model"]["llm"]
    with pytest.raises(SpeechLLMError, match=r"align\.llm: unknown key"):
        load_recipe(str(_recipe(tmp_path, data)), [])
    with pytest.raises(SpeechLLMError, match=r"model\.projector\.kind"):
        load_recipe("tiny", ["model.projector.kind=bogus"])
    probe = ("import sys; from speechllm_cli.stages.recipe import load_recipe; load_recipe('tiny', []); "
             "print(sorted(m for m in ('torch', 'transformers', 'peft', 'lhotse') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


@pytest.mark.parametrize(("override", "message"), [
    ("decode.searches={whisper: {text_sets: [train]}}", "searches: 'whisper' names another system"),
    ("decode.cascades={reference: {transcripts: ctc}}", "cascades: 'reference' names another system"),
    ("decode.cascades={a: {transcripts: ctc}, b: {transcripts: a}}", "cascades.b.transcripts: 'a' is a cascade"),
    ("decode.tasks={test_xdomain: {instruction: Answer., text_set: qa_test}}",
     "tasks: split 'test_xdomain' is also a transcription split"),
    ("align.systems.multitask.tasks=[{instruction: A, text_sets: [train], share: 0.5}]",
     "the shares add up to 0.5, not 1"),
    ("distill.systems.salad_active.tasks=[{instruction: A, text_sets: [trivia_text], share: 1.0}]",
     "tasks replace text_sets, with simulated input only"),
])
def test_decode_and_task_settings_that_cannot_work_are_refused(override: str, message: str) -> None:
    with pytest.raises(SpeechLLMError, match=message):
        load_recipe("mini", [override])


@pytest.mark.parametrize(("setting", "message"), [
    ("train_encoder.model.bogus=1", "train_encoder.model: bogus: unknown key"),
    ("train_encoder.model.head.layers=true", "train_encoder.model: head.layers: a number, not true"),
    ("train_encoder.encoder=nope", "train_encoder.encoder: unknown encoder 'nope' (known: conformer-ctc, hf-ctc, "
                                   "whisper-ctc, whisper-tokens)"),
], ids=["unknown key", "boolean layers", "unknown encoder"])
def test_the_encoder_settings_are_checked_with_the_recipe_naming_file_and_key(cli, setting: str,
                                                                              message: str) -> None:
    """Issue 25: ``train_encoder.model`` is typed by its encoder (core.configs.ENCODER_CONFIGS, torch-free), so
    a mistake is found as the recipe loads, not when the stage builds the encoder."""
    from speechllm_cli.core.configs import ENCODER_CONFIGS
    from speechllm_cli.core.encoders import ENCODERS

    assert {name: cls.config_class for name, cls in ENCODERS.items()} == ENCODER_CONFIGS
    result = cli("train-encoder", "--recipe", "tiny", "--exp-dir", "exp", "--set", setting)
    assert result.returncode == 1
    assert result.stderr.strip().endswith(f"recipes/tiny/config.yaml: {message}")
