"""SLU pieces without a model: frames, SLURP's metrics, speech budgets, schedules, the SLURP preparer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechllm_cli.common.config import validate
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.data.budget import budget_count, speech_subset
from speechllm_cli.data.text_domains import GENERATORS
from speechllm_cli.data.text_domains.grammar import frame_json
from speechllm_cli.metrics.slu import char_distance, parse_frame, score_slu, word_distance
from speechllm_cli.stages.curriculum.config import CurriculumConfig
from speechllm_cli.stages.curriculum.schedules import PRESETS, PhaseConfig
from tests.conftest import write_tone


def _frame(scenario: str, action: str, *entities: tuple[str, str]) -> str:
    return frame_json(scenario, action, [{"type": t, "filler": f} for t, f in entities])


def test_frames_parse_and_reject_what_is_not_a_frame() -> None:
    frame = parse_frame(_frame("alarm", "set", ("time", "five pm")))
    assert frame is not None and frame.intent == "alarm_set" and frame.entities == [("time", "five pm")]
    for bad in ['{"scenario": "alarm"', "[1, 2]", '{"entities": "x"}', '{"entities": [3]}', "", "alarm set"]:
        assert parse_frame(bad) is None, bad


def test_distances_follow_slurp() -> None:
    assert word_distance("five pm", "five am") == 0.5
    assert word_distance("five pm", "") == 1.0
    assert word_distance("pm", "five pm today") == 2.0
    assert char_distance("five pm", "five am") == pytest.approx(1 / 7)
    assert char_distance("", "") == 0.0 and char_distance("ab", "") == 1.0


def test_slu_scores_by_hand() -> None:
    gold = _frame("alarm", "set", ("time", "five pm"), ("date", "today"))
    guess = _frame("alarm", "remove", ("time", "five am"), ("place_name", "paris"))
    score = score_slu([(gold, guess), (gold, gold)])
    assert (score.utterances, score.invalid_json) == (2, 0)
    assert (score.scenario_acc, score.action_acc, score.intent_acc) == (1.0, 0.5, 0.5)
    assert score.span_f1 == pytest.approx(2 * 0.5 * 0.5 / 1.0)
    # Word table: time matched at distance 1/2, paris is a false positive, today is missed; the exact
    # pair adds 2 TP. Char table: time at distance 1/7. Pooled: TP 6, FP = FN = 1.5 + 1 + 1/7.
    tp, fp = 6, 1.5 + 1 + 1 / 7
    assert score.slu_f1 == pytest.approx(tp / (tp + fp))


def test_invalid_json_counts_as_wrong_and_never_raises() -> None:
    gold = _frame("iot", "lights_on", ("house_place", "kitchen"))
    score = score_slu([(gold, '{"scenario": "iot", "action"'), (gold, "turn on the lights"), (gold, gold)])
    assert score.invalid_json == 2 and score.intent_acc == pytest.approx(1 / 3)
    assert score.span_f1 == pytest.approx(2 * 1.0 * (1 / 3) / (1 + 1 / 3))
    with pytest.raises(ValueError, match="reference is not an SLU frame"):
        score_slu([("oops", gold)])


def test_speech_budget_counts_are_exact_reproducible_and_nested() -> None:
    ids = [f"utt-{i:04d}" for i in range(160)]
    assert [budget_count(160, p) for p in (0, 2, 5, 10, 25, 100)] == [0, 3, 8, 16, 40, 160]
    assert budget_count(20, 2.5) == 1 and budget_count(3, 50) == 2
    subsets = {p: speech_subset(ids, p, seed=0) for p in (0, 2, 5, 10, 25, 100)}
    assert {p: len(s) for p, s in subsets.items()} == {0: 0, 2: 3, 5: 8, 10: 16, 25: 40, 100: 160}
    assert speech_subset(list(reversed(ids)), 25, seed=0) == subsets[25]
    assert set(subsets[5]) <= set(subsets[10]) <= set(subsets[25])
    assert speech_subset(ids, 25, seed=1) != subsets[25]
    with pytest.raises(ValueError, match="percentage"):
        budget_count(10, 120)


def test_presets_and_effective_phases() -> None:
    for name, preset in PRESETS.items():
        phases = preset(1.0, 1e-3)
        assert sum(p.epochs for p in phases) == 2.0, name
    curriculum = PRESETS["curriculum"](1.0, 1e-3)
    assert [p.inputs for p in curriculum] == [{"text": 1.0}, {"text": 1.0, "speech": 1.0}]
    assert curriculum[1].lr == 5e-4 and curriculum[0].train == ["lora"]
    mixed = PRESETS["direct-mix"](1.0, 1e-3)[0]
    at_zero = mixed.effective({"text": 10, "cps": 10, "speech": 0})
    assert at_zero is not None and at_zero.inputs == {"text": 1.0} and at_zero.train == ["lora"]
    assert PRESETS["tasu-then-speech"](1.0, 1e-3)[1].effective({"speech": 0}) is None
    with pytest.raises(ValueError, match="no input kind"):
        PhaseConfig(inputs={"text": 0})


def test_curriculum_config_errors_name_the_key() -> None:
    base = {"tracks": {"en": {"text": "a", "speech": "a", "test": "b"}}}
    with pytest.raises(SpeechLLMError, match="schemes: 'warmup' is neither a preset"):
        validate(CurriculumConfig, {**base, "schemes": ["warmup"]}, "config.yaml")
    with pytest.raises(SpeechLLMError, match="tracks.en.tset: unknown key"):
        validate(CurriculumConfig, {"tracks": {"en": {"text": "a", "speech": "a", "test": "b", "tset": "b"}}},
                 "config.yaml")
    with pytest.raises(SpeechLLMError, match="llm: unknown key"):
        validate(CurriculumConfig, {**base, "llm": {"model": "x"}}, "config.yaml")
    custom = validate(CurriculumConfig, {**base, "schemes": ["mine"],
                                         "schedules": {"mine": [{"inputs": {"cps": 1}, "train": ["projector"]}]}}, "c")
    assert custom.schedules["mine"][0].inputs == {"cps": 1.0}


def test_german_grammar_shares_the_english_labels() -> None:
    english, german = GENERATORS["commands"](3)[:2000], GENERATORS["commands-de"](3)[:2000]
    labels = [{(f["scenario"], f["action"], tuple(sorted(e["type"] for e in f["entities"])))
               for f in (json.loads(i.target) for i in items)} for items in (english, german)]
    assert labels[1] <= labels[0]
    assert len({json.loads(i.target)["scenario"] for i in german}) == 8


def _slurp_fixture(root: Path) -> Path:
    """Two SLURP records in the corpus's layout; the second's far-field recording is missing."""
    (root / "slurp_real").mkdir(parents=True)
    records = [
        {"slurp_id": 11, "sentence": "wake me up at five am this week", "scenario": "alarm", "action": "set",
         "intent": "alarm_set", "tokens": [{"surface": w} for w in "wake me up at five am this week".split()],
         "entities": [{"span": [4, 5], "type": "time"}, {"span": [6, 7], "type": "date"}],
         "recordings": [{"file": "audio-1-headset.flac"}, {"file": "audio-1.flac"}]},
        {"slurp_id": 12, "sentence": "What's the weather", "scenario": "weather", "action": "query",
         "intent": "weather_query", "tokens": [{"surface": "What"}, {"surface": "'s"}, {"surface": "the"},
                                               {"surface": "weather"}],
         "entities": [], "recordings": [{"file": "audio-2-headset.flac"}, {"file": "audio-2.flac"}]},
    ]
    (root / "test.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n{broken\n")
    for name in ("audio-1-headset.flac", "audio-1.flac", "audio-2-headset.flac"):
        write_tone(root / "slurp_real" / name)
    return root


def test_slurp_preparer_reads_the_corpus_layout(tmp_path: Path) -> None:
    from speechllm_cli.data.entries import Problem, Utterance
    from speechllm_cli.data.sources.slurp import SlurpConfig, SlurpSource

    root = _slurp_fixture(tmp_path / "slurp")
    config = SlurpConfig(corpus_dir=root, splits={"slurp_test": "test.jsonl"}, microphone="all")
    entries = list(SlurpSource(config, tmp_path / "data").entries("slurp_test", lambda x, n, d: x))
    utterances = [e for e in entries if isinstance(e, Utterance)]
    problems = [e for e in entries if isinstance(e, Problem)]
    assert [u.id for u in utterances] == ["slurp-11-audio-1-headset", "slurp-11-audio-1", "slurp-12-audio-2-headset",
                                          "slurp-12-audio-2"]
    assert json.loads(utterances[0].custom["slu"]) == {"scenario": "alarm", "action": "set", "entities": [
        {"type": "time", "filler": "five am"}, {"type": "date", "filler": "this week"}]}
    assert [p.reason for p in problems] == ["bad_line"] and problems[0].where.endswith("test.jsonl:3")
    headset = SlurpSource(config.model_copy(update={"microphone": "headset"}), tmp_path / "data")
    assert len([e for e in headset.entries("slurp_test", lambda x, n, d: x) if isinstance(e, Utterance)]) == 2


def test_slurp_through_prepare_data_counts_the_missing_recording(cli, tmp_path: Path) -> None:
    root = _slurp_fixture(tmp_path / "slurp")
    config = tmp_path / "config.yaml"
    config.write_text(f"name: slurp\nprepare_data:\n  source: slurp\n  slurp:\n    corpus_dir: {root}\n"
                      "    splits: {slurp_test: test.jsonl}\n    microphone: all\n")
    failed = cli("prepare-data", "--recipe", config, "--exp-dir", tmp_path / "exp")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "test.jsonl:2" in failed.stderr and "audio-2.flac" in failed.stderr
    done = cli("prepare-data", "--recipe", config, "--exp-dir", tmp_path / "exp", "--on-bad-input", "skip")
    assert done.returncode == 0, done.stderr
    skipped = (tmp_path / "exp/data/slurp_test/skipped.tsv").read_text()
    assert "missing_audio" in skipped and "audio-2.flac" in skipped and "bad_line" in skipped
