"""Phoneme units: espeak-ng's IPA of each text in its own language, so English and German share CTC units.

The tokenizer is learned over phonemes by ``prepare-text`` (through the command), and an encoder built on it
reads every transcript's units from its phonemes, in the row's language, saved and loaded alike.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.core.encoders import build_encoder, load_encoder
from speechllm_cli.core.phonemes import phonemize
from tests.conftest import run_cli


def test_phonemes_follow_each_languages_rules_on_one_alphabet() -> None:
    english, german = phonemize("turn on the light", "en"), phonemize("mach das licht an", "de")
    assert english == "tɜːn ɔnðə laɪt"          # espeak-ng joins unstressed function words to the next
    assert german.split()[-2:] == ["lɪçt", "an"]
    assert "ˈ" not in english + german and "ˌ" not in english + german
    assert "ç" in german and "l" in english and "l" in german
    assert phonemize("spiel musik von adele auf spotify", "de").count("(") == 0


def test_an_unknown_language_is_an_error() -> None:
    with pytest.raises(SpeechLLMError, match="espeak-ng has no voice for language 'zz'"):
        phonemize("hello", "zz")


CONFIG = {
    "name": "ipa",
    "prepare_data": {"source": "mini", "mini": {
        "seed": 3, "workers": 2,
        "domains": {"en": {"generator": "commands"}, "de": {"generator": "commands-de", "lang": "de"}},
        "voices": {"en": ["espeak-ng:en-us"], "de": ["espeak-ng:de"]},
        "splits": {"train": {"domain": "en", "utterances": 12, "voices": "en"},
                   "test_de": {"domain": "de", "utterances": 2, "voices": "de"}}}},
    "prepare_text": {"sets": {"train": {"split": "train"}, "test_de": {"split": "test_de"}},
                     "tokenizer": {"vocab_size": 60, "train_sets": ["train"], "units": "phonemes"}},
}


def test_an_encoder_on_a_phoneme_tokenizer_reads_phonemes_in_the_rows_language(tmp_path: Path) -> None:
    recipe = tmp_path / "ipa.yaml"
    recipe.write_text(yaml.safe_dump(CONFIG))
    for stage in ("prepare-data", "prepare-text"):
        result = run_cli(stage, "--recipe", recipe, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    tokenizer = tmp_path / "exp/ipa/tokenizer/tokenizer.model"
    assert (tokenizer.parent / "units.json").is_file()
    encoder = build_encoder("conformer-ctc", {}, tokenizer=tokenizer)
    assert encoder.phoneme_units
    ids = encoder.row_units({"text": "mach das licht an", "lang": "de"})
    assert ids and encoder.ids_to_text(ids).replace(" ", "") != "machdaslichtan"
    assert encoder.ids_to_text(ids) == encoder.ids_to_text(encoder.text_to_ids("mach das licht an", "de"))
    assert encoder.text_to_ids("mach das licht an", "de") != encoder.text_to_ids("mach das licht an", "en")
    encoder.save(tmp_path / "saved")
    loaded = load_encoder("conformer-ctc", tmp_path / "saved")
    assert loaded.phoneme_units and loaded.row_units({"text": "mach das licht an", "lang": "de"}) == ids


def test_a_text_tokenizer_has_no_marker_and_reads_text(tmp_path: Path) -> None:
    config = {**CONFIG, "prepare_text": {**CONFIG["prepare_text"],
                                         "tokenizer": {"vocab_size": 60, "train_sets": ["train"]}}}
    recipe = tmp_path / "text.yaml"
    recipe.write_text(yaml.safe_dump({**config, "name": "text"}))
    for stage in ("prepare-data", "prepare-text"):
        assert run_cli(stage, "--recipe", recipe, cwd=tmp_path).returncode == 0
    tokenizer = tmp_path / "exp/text/tokenizer/tokenizer.model"
    assert not (tokenizer.parent / "units.json").exists()
    encoder = build_encoder("conformer-ctc", {}, tokenizer=tokenizer)
    assert not encoder.phoneme_units
    assert encoder.ids_to_text(encoder.text_to_ids("turn on the light")) == "turn on the light"
