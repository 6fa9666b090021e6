"""The tiny recipe through run.sh: data, text, encoder, TASU and paired alignment, decoding, scoring.

The tiny recipe runs the same code as mini with a tiny encoder and a tiny random LLM, so these tests
check mechanics (files, shapes, resumption, skipping), not accuracy.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, SPEECHLLM, load_cuts

SPLITS = ["train", "dev", "test_indomain", "test_newvoice", "test_xdomain"]


def _run(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REPO / "recipes/tiny/run.sh"), *args], cwd=work, capture_output=True, text=True,
                          check=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    work = tmp_path_factory.mktemp("tiny")
    result = _run(work)
    assert result.returncode == 0, result.stderr
    return work / "exp" / "tiny", result


def test_each_stage_that_places_a_model_names_device_dtype_and_processes_once(tiny) -> None:
    _, result = tiny
    stages = result.stderr.split("== stage ")[1:]
    named = {block.split(":")[1].split()[1]: [line for line in block.splitlines() if line.startswith("device ")]
             for block in stages}
    assert named["prepare-data"] == named["prepare-text"] == [], "no model, no device line"
    for stage in ("train-encoder", "calibrate", "align", "decode", "curriculum-finetune"):
        assert len(named[stage]) == 1, (stage, named[stage])
        assert named[stage][0].startswith("device cpu (") and ", fp32, 1 process (torch " in named[stage][0]


def test_cutsets_load_at_16k_with_audio(tiny) -> None:
    exp, _ = tiny
    for split in SPLITS:
        cuts = load_cuts(exp / "data" / split / "cuts.jsonl.gz")
        assert len(cuts) == (24 if split == "train" else 6)
        for cut in cuts:
            assert cut.sampling_rate == 16000 and cut.duration > 0.3
            audio = cut.load_audio()
            assert audio.shape[0] == 1 and audio.shape[1] == cut.num_samples and abs(audio).max() > 0.01
            assert cut.supervisions[0].text.strip()


def test_splits_have_disjoint_text_and_held_out_voices(tiny) -> None:
    exp, _ = tiny
    texts, voices = {}, {}
    for split in SPLITS:
        cuts = load_cuts(exp / "data" / split / "cuts.jsonl.gz")
        texts[split] = {c.supervisions[0].text for c in cuts}
        voices[split] = {c.supervisions[0].custom["voice"] for c in cuts}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            assert not texts[a] & texts[b], (a, b)
    assert not voices["train"] & voices["test_newvoice"]
    assert not voices["train"] & voices["test_xdomain"]
    xdomain = load_cuts(exp / "data/test_xdomain/cuts.jsonl.gz")
    frame = json.loads(xdomain[0].supervisions[0].custom["slu"])
    assert set(frame) == {"scenario", "action", "entities"}


def test_text_sets_and_tokenizer(tiny) -> None:
    import sentencepiece

    exp, _ = tiny
    rows = [json.loads(line) for line in (exp / "text/commands_text.jsonl").read_text().splitlines()]
    assert len(rows) == 40
    assert set(rows[0]) == {"id", "text", "target", "task", "lang", "domain"}
    assert all(r["domain"] == "commands" and r["task"] == "asr" and r["text"] == r["text"].lower() for r in rows)
    train = [json.loads(line) for line in (exp / "text/train.jsonl").read_text().splitlines()]
    assert len(train) == 24 and all(r["domain"] == "scripture" for r in train)
    spm = sentencepiece.SentencePieceProcessor(model_file=str(exp / "tokenizer/tokenizer.model"))
    assert spm.id_to_piece(0) == "<blk>"
    assert 30 < spm.get_piece_size() <= 80
    assert spm.decode(spm.encode(train[0]["text"])) == train[0]["text"]


def test_rerun_skips_finished_stages(tiny) -> None:
    exp, _ = tiny
    markers = sorted(exp.rglob(".done"))
    before = {m: m.stat().st_mtime_ns for m in markers}
    result = _run(exp.parent.parent)
    assert result.returncode == 0, result.stderr
    assert "prepare-data: 14 outputs (14 up to date)" in result.stdout
    assert result.stdout.count("up to date") >= 12 + 10 + 1 + 1 + 4 + 18 + 24 + 18
    assert " done " not in result.stdout
    assert {m: m.stat().st_mtime_ns for m in markers} == before


def test_encoder_and_alignment_outputs(tiny) -> None:
    exp, _ = tiny
    assert json.loads((exp / "encoder/encoder.json").read_text()) == {"encoder": "whisper-ctc"}
    assert {"config.json", "whisper_config.json", "model.safetensors", "tokenizer.model"} == {
        p.name for p in (exp / "encoder/model").iterdir()}
    encoder_stats = json.loads((exp / "encoder/.done").read_text())["stats"]
    assert encoder_stats["steps"] == 12 and encoder_stats["utterances"] == 24
    for system in ("tasu", "calibrated", "tts", "paired"):
        folder = exp / "align" / system
        assert {p.name for p in (folder / "projector").iterdir()} == {"config.json", "model.safetensors"}
        stats = json.loads((folder / ".done").read_text())["stats"]
        assert stats["steps"] == 6 and stats["examples"] > 0
        log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log] == [2, 4, 6]
    assert json.loads((exp / "align/tasu/.done").read_text())["stats"]["examples"] == 100


def _jiwer_rates(hyps: Path) -> tuple[float, float, int]:
    """WER, CER and reference word count recomputed from a ``hyps.jsonl`` with jiwer's own corpus rates.

    Independent of ``metrics.asr`` (which counts jiwer's alignments itself): only the recipe's normaliser is
    shared, since the score is defined on normalised text; characters exclude whitespace as the score's do.
    """
    import jiwer
    import yaml

    from speechllm_cli.data.normalize import NormalizerConfig, normalize

    config = yaml.safe_load((REPO / "recipes/tiny/config.yaml").read_text(encoding="utf-8"))
    normalizer = NormalizerConfig(**config["prepare_text"]["normalize"])
    rows = [json.loads(line) for line in hyps.read_text().splitlines()]
    refs = [normalize(r["ref"], normalizer) for r in rows]
    outs = [normalize(r["hyp"], normalizer) for r in rows]
    wer = jiwer.wer(refs, outs)
    cer = jiwer.cer(["".join(t.split()) for t in refs], ["".join(t.split()) for t in outs])
    return wer, cer, sum(len(t.split()) for t in refs)


def test_decode_and_score_outputs(tiny) -> None:
    exp, run = tiny
    for noise in ("Both `max_new_tokens`", "attention mask is not set", "generation-related arguments"):
        assert noise not in run.stderr, noise
    for system in ("ctc", "ctc_lm", "tasu", "calibrated", "tts", "paired", "whisper"):
        for split in ("test_indomain", "test_newvoice", "test_xdomain"):
            hyps = exp / "decode" / system / split / "hyps.jsonl"
            rows = [json.loads(line) for line in hyps.read_text().splitlines()]
            cuts = load_cuts(exp / "data" / split / "cuts.jsonl.gz")
            assert [r["id"] for r in rows] == list(cuts.ids)
            assert all(r["ref"] == cuts[r["id"]].supervisions[0].text for r in rows)
            decoded = json.loads((exp / "decode" / system / split / "summary.json").read_text())
            assert decoded["num_utts"] == 6 and decoded["rtf"] > 0
            assert decoded["command"].startswith("speechllm decode --recipe")
            summary = json.loads((exp / "score" / system / split / "summary.json").read_text())
            wer, cer, ref_words = _jiwer_rates(hyps)
            assert summary["num_utts"] == len(cuts) == 6 and summary["ref_words"] == ref_words
            assert summary["wer"] == pytest.approx(wer, abs=1e-9) and summary["cer"] == pytest.approx(cer, abs=1e-9)
            assert "\n%WER " in (exp / "score" / system / split / "errors.txt").read_text()
    results = (exp / "RESULTS.md").read_text()
    for name in ("| ctc |", "| tasu |", "| calibrated |", "| tts |", "| paired |", "| whisper |", "test_xdomain",
                 "speechllm decode --recipe"):
        assert name in results
    whisper = json.loads((exp / "score/whisper/test_newvoice/summary.json").read_text())
    ctc = json.loads((exp / "score/ctc/test_newvoice/summary.json").read_text())
    assert whisper["cer"] < 0.6 and whisper["cer"] < ctc["cer"], "pretrained Whisper beats a 12-step CTC head"
    whisper_wers = [json.loads((exp / "score/whisper" / split / "summary.json").read_text())["wer"]
                    for split in ("test_indomain", "test_newvoice", "test_xdomain")]
    assert max(whisper_wers) < 0.8, f"pretrained Whisper measured at 37, 58 and 8 % WER; got {whisper_wers}"


def test_spoken_questions_are_asked_of_speech_llms_and_cascades_only(tiny) -> None:
    exp, _ = tiny
    lines = (exp / "text/qa_test.jsonl").read_text().splitlines()
    answers = {row["id"]: row["target"] for row in map(json.loads, lines)}
    for system in ("tasu", "calibrated", "tts", "paired", "text_llm", "ctc_llm"):
        rows = [json.loads(line) for line in (exp / "decode" / system / "qa_test/hyps.jsonl").read_text().splitlines()]
        assert len(rows) == 6 and all(row["ref"] == answers[row["id"]] for row in rows)
        decoded = json.loads((exp / "decode" / system / "qa_test/summary.json").read_text())
        assert decoded["instruction"] == "Answer the question in one word."
        scored = json.loads((exp / "score" / system / "qa_test/summary.json").read_text())
        listing = (exp / "score" / system / "qa_test/answers.txt").read_text().splitlines()
        assert scored["accuracy"] == pytest.approx(sum("\tright\t" in line for line in listing) / 6)
    for system in ("ctc", "ctc_lm", "whisper"):
        assert not (exp / "decode" / system / "qa_test").exists()
    for split in ("test_indomain", "test_newvoice", "test_xdomain"):
        assert not (exp / "decode/ctc_llm" / split).exists()
    results = (exp / "RESULTS.md").read_text()
    assert "## Answer accuracy (spoken tasks)" in results and "| text_llm |" in results and "of text ceiling" in results


def test_a_system_asked_two_instructions_builds_two_prompts(tiny) -> None:
    from speechllm_cli.common.batching import Batching
    from speechllm_cli.stages.front_end import SpeechFrontEnd
    from speechllm_cli.stages.recipe import load_recipe
    from speechllm_cli.stages.runner import Context
    from speechllm_cli.stages.systems import speech_llm_system, split_utterances

    exp, _ = tiny
    context = Context(load_recipe("tiny", []).config, exp)
    front = SpeechFrontEnd(context)
    system = speech_llm_system(context, front, "tasu", context.config.decode.generation, Batching(4))
    trained, built = system.model.prompt, []
    factory = system.prompt
    system.prompt = lambda instruction: built.append(factory(instruction)) or built[-1]
    utterances = split_utterances(front, "qa_test")
    for instruction in ("Answer the question in one word.", "Repeat the question."):
        assert len(system.transcribe(utterances, "asking", instruction)) == 6
        assert system.model.prompt is trained
    first, second = (prompt.prefix for prompt in built)
    assert first != second
    words = system.tokenizer("Repeat the question.", add_special_tokens=False).input_ids
    assert any(second[i:i + len(words)] == words for i in range(len(second)))


def test_the_cascade_is_the_original_llm_reading_the_ctc_transcript(tiny) -> None:
    from speechllm_cli.common.batching import Batching
    from speechllm_cli.stages.front_end import SpeechFrontEnd
    from speechllm_cli.stages.recipe import load_recipe
    from speechllm_cli.stages.runner import Context
    from speechllm_cli.stages.systems import original_llm

    exp, _ = tiny
    clips = sorted((exp / "data/audio/qa_test").glob("*.flac"))[:3]
    ask = "Answer the question in one word."
    transcripts = _speechllm("decode", "--recipe", "tiny", "--exp-dir", exp, "--system", "ctc", *clips)
    cascade = _speechllm("decode", "--recipe", "tiny", "--exp-dir", exp, "--system", "ctc_llm", "--instruction", ask,
                         *clips)
    assert transcripts.returncode == 0 and cascade.returncode == 0, transcripts.stderr + cascade.stderr
    context = Context(load_recipe("tiny", []).config, exp)
    reader = original_llm(context, SpeechFrontEnd(context), context.config.decode.generation, Batching(8))
    expected = reader.read([line.split("\t", 1)[1] for line in transcripts.stdout.splitlines()], "reading", ask)
    assert [line.split("\t", 1)[1] for line in cascade.stdout.splitlines()] == expected
    refused = _speechllm("decode", "--recipe", "tiny", "--exp-dir", exp, "--system", "ctc", "--instruction", ask,
                         clips[0])
    assert refused.returncode == 1
    assert refused.stderr == "error: --instruction: ctc only transcribes; ask a speech LLM or a cascade\n"


def test_a_cascade_reads_with_the_llm_it_names(tiny, tmp_path: Path) -> None:
    """A cascade's ``llm`` replaces the recipe's LLM (tiny's is a random-weight SmolLM2, which writes nothing) as
    the reader, here with the real SmolLM2; an LLM that cannot load is a one-line error naming it."""
    exp, _ = tiny
    work = _copy_aligned(exp, tmp_path / "exp")
    other = "decode.cascades.text_other={transcripts: reference, llm: smollm2-135m-instruct}"
    result = _speechllm("decode", "--recipe", "tiny", "--exp-dir", work, "--set", other,
                        "--set", "decode.systems=[text_llm, text_other]")
    assert result.returncode == 0, result.stderr
    hyps = {name: [json.loads(line) for line in (work / f"decode/{name}/qa_test/hyps.jsonl").read_text().splitlines()]
            for name in ("text_llm", "text_other")}
    assert [r["id"] for r in hyps["text_llm"]] == [r["id"] for r in hyps["text_other"]]
    assert [r["hyp"] for r in hyps["text_llm"]] != [r["hyp"] for r in hyps["text_other"]]
    assert all(r["hyp"] for r in hyps["text_other"])
    missing = tmp_path / "no-such-llm"
    failed = _speechllm("decode", "--recipe", "tiny", "--exp-dir", work, "--set",
                        f"decode.cascades.text_other={{transcripts: reference, llm: {missing}}}",
                        "--set", "decode.systems=[text_other]")
    assert failed.returncode == 1 and len(failed.stderr.splitlines()) == 1
    assert failed.stderr.startswith("error: ") and str(missing) in failed.stderr


def test_multitask_examples_hold_each_instruction_at_its_share(tiny) -> None:
    from collections import Counter

    from speechllm_cli.core.llm import target_ids
    from speechllm_cli.stages.align import task_items
    from speechllm_cli.stages.inputs import load_trained_encoder
    from speechllm_cli.stages.recipe import load_recipe
    from speechllm_cli.stages.runner import Context
    from speechllm_cli.stages.speech_llm_io import build_speech_llm, prompt_for

    exp, _ = tiny
    context = Context(load_recipe("tiny", []).config, exp)
    config = context.section("align")
    system = config.systems["multitask"]
    encoder = load_trained_encoder(context)
    model, tokenizer = build_speech_llm(context.config.model, config.instruction, encoder)
    items, left_out = task_items(context, system, config, encoder, model, tokenizer)
    total = config.train.steps * config.train.batch_size
    prompts = {task.instruction: tuple(prompt_for(tokenizer, task.instruction, context.config.model).prefix)
               for task in system.tasks}
    counts = Counter(tuple(item.prompt.prefix) for item in items)
    assert left_out == 0 and len(items) == total
    assert counts == {prompts[task.instruction]: round(task.share * total) for task in system.tasks}
    rows = [json.loads(line) for name in ("scripture_text", "commands_text")
            for line in (exp / f"text/{name}.jsonl").read_text().splitlines()]
    transcripts = {tuple(target_ids(tokenizer, row["target"])) for row in rows}
    first = prompts[system.tasks[0].instruction]
    assert all(tuple(item.target) in transcripts for item in items if tuple(item.prompt.prefix) == first)
    trained = json.loads((exp / "align/multitask/.done").read_text())
    assert trained["stats"]["examples"] == total and trained["stats"]["steps"] == config.train.steps


def test_a_frozen_llm_system_trains_the_projector_alone(tiny) -> None:
    from safetensors.torch import load_file

    exp, _ = tiny
    assert not (exp / "align/frozen/lora").exists() and (exp / "align/tasu/lora").is_dir()
    trained = json.loads((exp / "align/frozen/.done").read_text())
    assert trained["stats"]["steps"] == 6
    saved = {name for name in load_file(str(exp / "align/frozen/checkpoint/step-6/tensors.safetensors"))
             if name.startswith("model.")}
    assert saved and all(name.startswith("model.projector.") for name in saved), sorted(saved)[:3]
    with_lora = load_file(str(exp / "align/tasu/checkpoint/step-6/tensors.safetensors"))
    assert any(name.startswith("model.llm.") for name in with_lora)


def test_from_scratch_encoder_is_a_recipe_option(tiny, tmp_path: Path) -> None:
    exp, _ = tiny
    copy = tmp_path / "exp"
    for part in ("data", "text", "tokenizer"):
        shutil.copytree(exp / part, copy / part)
    result = subprocess.run(
        [str(SPEECHLLM), "train-encoder", "--recipe", "tiny", "--exp-dir", str(copy),
         "--set", "train_encoder.encoder=conformer-ctc",
         "--set", "train_encoder.model={d_model: 32, layers: 1, heads: 4, ff_dim: 64, conv_kernel: 7}"],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads((copy / "encoder/encoder.json").read_text()) == {"encoder": "conformer-ctc"}
    assert not (copy / "encoder/checkpoint/front_states").exists()
    log = [json.loads(line) for line in (copy / "encoder/train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4, 6, 8, 10, 12]


def test_the_encoder_trains_on_extra_splits_beside_its_own(tiny, tmp_path: Path) -> None:
    """Issue 22: more paired speech for the head (mini: everyday sentences beside the scripture)."""
    exp, _ = tiny
    copy = tmp_path / "exp"
    for part in ("data", "text", "tokenizer"):
        shutil.copytree(exp / part, copy / part)
    missing = _speechllm("train-encoder", "--recipe", "tiny", "--exp-dir", copy,
                         "--set", "train_encoder.extra_splits={dev: nope}")
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"error: {copy / 'text/nope.jsonl'}") and missing.stderr.count("\n") == 1
    trained = _speechllm("train-encoder", "--recipe", "tiny", "--exp-dir", copy,
                         "--set", "train_encoder.extra_splits={dev: dev}")
    assert trained.returncode == 0, trained.stderr
    done = json.loads((copy / "encoder/.done").read_text())
    assert (done["stats"]["utterances"], done["stats"]["left_out"]) == (24 + 6, 0)
    assert done["key"] != json.loads((exp / "encoder/.done").read_text())["key"]


def test_the_complete_whisper_is_an_encoder_with_nothing_to_train(tiny, tmp_path: Path) -> None:
    """Issues 23, 22: ``whisper-tokens`` (the packaged Whisper tiny.en's decoder posteriors over its word pieces),
    read through ``unit-embedding`` as in the mini recipe's default, goes through train-encoder, calibrate,
    align (TASU's simulation and the calibrated one) and decode as the CTC encoders do."""
    exp, _ = tiny
    copy = tmp_path / "exp"
    for part in ("data", "text", "tokenizer"):
        shutil.copytree(exp / part, copy / part)
    settings = ("--recipe", "tiny", "--exp-dir", copy, "--set", "train_encoder.encoder=whisper-tokens",
                "--set", "train_encoder.model={units: 500}", "--set", "calibrate.compare={}",
                "--set", "calibrate.text_branch=null", "--set", "model.projector.kind=unit-embedding")
    for command in (("train-encoder",), ("calibrate",), ("align", "--system", "tasu", "--system", "calibrated"),
                    ("decode", "--system", "ctc", "--system", "tasu", "--system", "calibrated",
                     "--set", "decode.splits=[test_newvoice]", "--set", "decode.tasks={}")):
        result = _speechllm(*command, *settings)
        assert result.returncode == 0, result.stderr
    assert json.loads((copy / "encoder/encoder.json").read_text()) == {"encoder": "whisper-tokens"}
    assert not (copy / "encoder/checkpoint").exists() and (copy / "encoder/model/whisper/config.json").is_file()
    calibration = json.loads((copy / "encoder/calibration/model/calibration.json").read_text())
    assert calibration["vocab_size"] == 501 and calibration["rates"]["correct"] > 0.1
    for system in ("tasu", "calibrated"):
        projector = json.loads((copy / f"align/{system}/projector/config.json").read_text())
        assert (projector["kind"], projector["vocab_size"]) == ("unit-embedding", 501), system
    rows = {system: [json.loads(line) for line in (copy / f"decode/{system}/test_newvoice/hyps.jsonl").open()]
            for system in ("ctc", "tasu", "calibrated")}
    assert len(rows["ctc"]) == len(rows["tasu"]) == len(rows["calibrated"]) == 6
    assert sum(len(row["hyp"].split()) >= 3 for row in rows["ctc"]) >= 4, "Whisper's own transcript, word by word"


def test_decode_transcribes_audio_files_given_on_the_command_line(tiny, tmp_path: Path) -> None:
    exp, _ = tiny
    clips = sorted((exp / "data/audio/test_newvoice").glob("*.flac"))[:2]
    result = subprocess.run([str(SPEECHLLM), "decode", "--recipe", "tiny", "--exp-dir", str(exp), "--system", "ctc",
                             *map(str, clips)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(c) for c in clips]
    bad = subprocess.run([str(SPEECHLLM), "decode", "--recipe", "tiny", "--exp-dir", str(exp), str(tmp_path / "x.wav")],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and bad.stderr == f"error: {tmp_path / 'x.wav'}: audio file does not exist\n"


def _copy_prepared(exp: Path, target: Path) -> Path:
    """A new experiment folder with the data, text, tokenizer and encoder of the tiny run (no alignment)."""
    for part in ("data", "text", "tokenizer", "encoder"):
        shutil.copytree(exp / part, target / part)
    return target


def _align(exp_dir: Path, *sets: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SPEECHLLM), "align", "--recipe", "tiny", "--exp-dir", str(exp_dir), *sets],
                          capture_output=True, text=True, check=False)


ONLY_TASU = ("--set", "align.systems={tasu: {mode: cps, text_sets: [commands_text]}}")
ONLY = {
    "tasu": ONLY_TASU,
    "calibrated": ("--set", "align.systems={calibrated: {mode: calibrated, text_sets: [commands_text], "
                            "levels: [[0.0, 0.0], [0.5, 1.0], [1.0, 2.0]]}}"),
    "tesu": ("--set", "align.systems={tesu: {mode: unified, text_sets: [commands_text]}}"),
}


def test_a_deleted_calibration_and_a_damaged_projector_are_rebuilt_not_taken_as_done(tiny, tmp_path: Path) -> None:
    """Issue 25, findings 5 and 6: the marker records its outputs' digests, so a unit whose output was deleted
    or cut short runs again and writes it as it was (the projector from the unit's last checkpoint)."""
    exp, _ = tiny
    copy = _copy_prepared(exp, tmp_path / "exp")
    model, marker = copy / "encoder/calibration/model", copy / "encoder/calibration/.done"
    written, stamp = {p.name: p.read_bytes() for p in model.iterdir()}, marker.stat().st_mtime_ns
    shutil.rmtree(model)
    result = subprocess.run([str(SPEECHLLM), "calibrate", "--recipe", "tiny", "--exp-dir", str(copy)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert marker.stat().st_mtime_ns != stamp, "calibrate ran again"
    assert {p.name: p.read_bytes() for p in model.iterdir()} == written
    for damage, message in [("{not json", f"{model / 'calibration.json'}: damaged, not JSON ("),
                            ('{"rates": "x"}', f"{model}: damaged calibration, 'vocab_size' is missing")]:
        (model / "calibration.json").write_text(damage)
        refused = _align(copy, *ONLY["calibrated"])
        assert refused.returncode == 1 and refused.stderr.strip().startswith(f"error: {message}"), refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    rebuilt = subprocess.run([str(SPEECHLLM), "calibrate", "--recipe", "tiny", "--exp-dir", str(copy)],
                             capture_output=True, text=True, check=False)
    assert rebuilt.returncode == 0 and {p.name: p.read_bytes() for p in model.iterdir()} == written

    assert _align(copy, *ONLY_TASU).returncode == 0
    projector, marker = copy / "align/tasu/projector/model.safetensors", copy / "align/tasu/.done"
    trained, stamp = projector.read_bytes(), marker.stat().st_mtime_ns
    projector.write_bytes(trained[: len(trained) // 2])
    decoded = _speechllm("decode", "--recipe", "tiny", "--exp-dir", copy, "--system", "tasu", *ONLY_TASU,
                         "--set", "decode.splits=[test_indomain]")
    assert decoded.returncode == 1 and decoded.stderr.strip() == (
        f"error: {projector.parent}: changed since align trained 'tasu' (damaged or replaced); run align again "
        "to rebuild it")
    again = _align(copy, *ONLY_TASU)
    assert again.returncode == 0, again.stderr
    assert marker.stat().st_mtime_ns != stamp and projector.read_bytes() == trained
    stamp = marker.stat().st_mtime_ns
    assert _align(copy, *ONLY_TASU).returncode == 0 and marker.stat().st_mtime_ns == stamp, "then up to date"


def test_a_second_run_on_a_unit_in_use_stops_in_one_line_and_the_first_ends_as_a_clean_run(tiny,
                                                                                           tmp_path: Path) -> None:
    """Issue 25, finding 1: two aligns of one system on one folder with different configs. The second stops at
    once naming the first (pid, host, command); the first's weights are a clean run's; a third run later is
    up to date. The first is paused while the second tries: on loaded cores it used to finish its 16 tiny steps
    before the second had started."""
    from safetensors.torch import load_file

    exp, _ = tiny
    longer = ("--set", "align.train.steps=16", "--set", "align.train.checkpoint_every=4")
    clean = _copy_prepared(exp, tmp_path / "clean")
    assert _align(clean, *ONLY_TASU, *longer).returncode == 0
    shared = _copy_prepared(exp, tmp_path / "shared")
    first = subprocess.Popen([str(SPEECHLLM), "align", "--recipe", "tiny", "--exp-dir", str(shared), *ONLY_TASU,
                              *longer], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoints = shared / "align/tasu/checkpoint"
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None and not list(checkpoints.glob("step-*")):
        time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)
    assert first.poll() is None, "the first align ended before the second could start"
    try:
        second = _align(shared, *ONLY_TASU, "--set", "align.train.steps=7")
    finally:
        first.send_signal(signal.SIGCONT)
    first_stderr = first.communicate()[1]
    assert first.returncode == 0, first_stderr
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 1 and len(lines) == 1, second.stderr
    assert lines[0].startswith(f"error: {shared / 'align/tasu'}: in use by pid {first.pid} on ")
    assert "speechllm align --recipe tiny" in lines[0]
    ours = load_file(str(shared / "align/tasu/projector/model.safetensors"))
    theirs = load_file(str(clean / "align/tasu/projector/model.safetensors"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

    def logged(folder: Path) -> list[int]:
        return [json.loads(line)["step"] for line in (folder / "align/tasu/train_log.jsonl").read_text().splitlines()]

    assert logged(shared) == logged(clean), "each step logged once"
    again = _align(shared, *ONLY_TASU, *longer)
    assert again.returncode == 0 and "up to date" in again.stdout


@pytest.mark.parametrize("system", ["tasu", "calibrated", "tesu"])
def test_text_only_alignment_reads_no_audio(tiny, tmp_path: Path, system: str) -> None:
    exp, _ = tiny
    copy = _copy_prepared(exp, tmp_path / "exp")
    shutil.rmtree(copy / "data" / "audio")
    shutil.rmtree(copy / "encoder" / "posteriors")
    assert not list(copy.rglob("*.flac"))
    result = _align(copy, *ONLY[system])
    assert result.returncode == 0, result.stderr
    assert (copy / "align" / system / "projector/model.safetensors").is_file()


def test_calibrated_alignment_needs_the_calibration(tiny, tmp_path: Path) -> None:
    exp, _ = tiny
    copy = _copy_prepared(exp, tmp_path / "exp")
    shutil.rmtree(copy / "encoder" / "calibration")
    result = _align(copy, *ONLY["calibrated"])
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {copy / 'encoder/calibration/model'}: no calibration of the encoder (run calibrate first)"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("system", ["tasu", "calibrated", "tesu"])
def test_killed_alignment_resumes_past_a_damaged_checkpoint_to_the_uninterrupted_result(tiny, tmp_path: Path,
                                                                                       system: str) -> None:
    """SIGKILL after two checkpoints, then the newest one truncated: the resume says so, continues from the
    one before, and ends with the weights of a run never interrupted (issue 11 finding 5)."""
    from safetensors.torch import load_file

    exp, _ = tiny
    longer = ("--set", "align.train.steps=16", "--set", "align.train.checkpoint_every=2")
    reference = _copy_prepared(exp, tmp_path / "reference")
    assert _align(reference, *ONLY[system], *longer).returncode == 0
    killed = _copy_prepared(exp, tmp_path / "killed")
    process = subprocess.Popen([str(SPEECHLLM), "align", "--recipe", "tiny", "--exp-dir", str(killed),
                                *ONLY[system], *longer], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = killed / "align" / system / "checkpoint"

    def saved() -> list[Path]:
        return sorted(checkpoints.glob("step-*"), key=lambda folder: int(folder.name.split("-")[1]))

    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and len(saved()) < 2:
        time.sleep(0.05)
    assert process.poll() is None, "align finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "align" / system / ".done").exists()
    older, newest = saved()[-2:]
    damaged = newest / "tensors.safetensors"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    result = _align(killed, *ONLY[system], *longer)
    assert result.returncode == 0, result.stderr
    assert f"skipped {newest.name} (tensors.safetensors does not match its sha256" in result.stderr
    stats = json.loads((killed / "align" / system / ".done").read_text())["stats"]
    assert stats["resumed_from"] == int(older.name.split("-")[1])
    ours = load_file(str(killed / "align" / system / "projector/model.safetensors"))
    theirs = load_file(str(reference / "align" / system / "projector/model.safetensors"))
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        assert (tensor - theirs[name]).abs().max() < 1e-5, name


def test_unified_alignment_needs_the_text_branch(tiny, tmp_path: Path) -> None:
    exp, _ = tiny
    copy = _copy_prepared(exp, tmp_path / "exp")
    result = _align(copy, *ONLY["tesu"], "--set", "calibrate.text_branch=null")
    assert result.returncode == 1 and result.stderr.splitlines() == [
        "error: align: unified mode needs calibrate.text_branch (the text branch it trains through)"]
    shutil.rmtree(copy / "encoder" / "text_branch")
    result = _align(copy, *ONLY["tesu"])
    assert result.returncode == 1 and result.stderr.splitlines() == [
        f"error: {copy / 'encoder/text_branch/model'}: no text branch (set calibrate.text_branch and run "
        "calibrate first)"]


def test_text_branch_learns_the_encoder_space_at_lsd_lengths(tiny) -> None:
    """Issue 14: the branch's loss falls, and fed an utterance's LSD segment labels it gives one vector per
    segment, as wide as the encoder's hidden layer, nearer the utterance's pooled states than an untrained one."""
    from speechllm_cli.core.configs import LSDConfig
    from speechllm_cli.core.encoders import load_encoder
    from speechllm_cli.core.posteriors import label_synchronous, lsd_segments
    from speechllm_cli.core.text_branch import TextBranch, pad_ids

    exp, _ = tiny
    stats = json.loads((exp / "encoder/text_branch/.done").read_text())["stats"]
    assert stats["pairs"] == 24 and stats["steps"] == 12 and stats["last_loss"] < 0.5 * stats["first_loss"]
    branch = TextBranch.load(exp / "encoder/text_branch/model")
    encoder = load_encoder("whisper-ctc", exp / "encoder/model")
    waves = [cut.load_audio()[0] for cut in load_cuts(exp / "data/dev/cuts.jsonl.gz")][:2]
    lsd = LSDConfig(blank_threshold=0.9)
    with torch.no_grad():
        output = encoder([torch.from_numpy(w) for w in waves])
        posteriors = output.log_probs.exp()
        segments = lsd_segments(posteriors, output.lengths, lsd)
        hidden, lengths = segments.pool(output.hidden)
        compressed, lsd_lengths = label_synchronous(posteriors, output.lengths, lsd)
        assert torch.equal(lengths, lsd_lengths) and torch.equal(segments.pool(posteriors)[0], compressed)
        labels = [compressed[i, : int(n)].argmax(-1).tolist() for i, n in enumerate(lsd_lengths)]
        predicted = branch(*pad_ids(labels))
    assert predicted.shape == hidden.shape and hidden.shape[-1] == encoder.config.head.d_model
    untrained = TextBranch(branch.config).eval()
    inside = torch.arange(hidden.shape[1])[None, :] < lengths[:, None]
    with torch.no_grad():
        errors = [((guess - hidden) ** 2).mean(-1)[inside].mean() for guess in (predicted, untrained(*pad_ids(labels)))]
    assert errors[0] < 0.5 * errors[1], "held-out dev speech: the trained branch predicts its states"
    report = json.loads((exp / "encoder/text_branch/report.json").read_text())
    sources = report["sources"]
    assert report["distance"]["speech (itself)"] < 1e-6 < report["distance"]["units"]
    assert sources["units"]["positions_per_unit"] == 1.0
    assert sources["cps labels"]["positions_per_unit"] < 1.0, "TASU's 5 % deletion"
    speech_pace = sources["speech (itself)"]["positions_per_unit"]
    assert abs(sources["calibrated labels"]["positions_per_unit"] - speech_pace) < abs(1.0 - speech_pace), \
        "the calibrated labels have the speech's insertions and kept blanks"


def test_calibration_and_mismatch_report(tiny) -> None:
    exp, _ = tiny
    folder = exp / "encoder" / "calibration"
    meta = json.loads((folder / "model/calibration.json").read_text())
    assert meta["utterances"] == 6 and meta["templates"] > 0
    assert sum(meta["rates"][k] for k in ("correct", "substitution", "soft", "deletion")) == pytest.approx(1.0)
    report = json.loads((folder / "report.json").read_text())
    assert report["order"] == ["real dev", "real train", "real tts_text", "tasu cps", "calibrated (level 1)"]
    assert report["sources"]["real train"]["utterances"] == 24
    assert report["distance"]["real dev"] == 0.0
    assert report["distance"]["calibrated (level 1)"] < report["distance"]["tasu cps"]
    assert (exp / "plots/posterior_mismatch.png").stat().st_size > 10_000
    results = (exp / "RESULTS.md").read_text()
    assert "## Simulated against real posteriors" in results and "| calibrated | " in results
    assert "| System | test_indomain | test_newvoice | test_xdomain | align s |" in results


def test_calibration_refuses_a_test_split(tiny, tmp_path: Path) -> None:
    exp, _ = tiny
    copy = _copy_prepared(exp, tmp_path / "exp")
    result = subprocess.run([str(SPEECHLLM), "calibrate", "--recipe", "tiny", "--exp-dir", str(copy), "--set",
                             "calibrate.split=test_newvoice"], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: calibrate: split 'test_newvoice' is a decode test split; calibration statistics must never come "
        "from test data"]


def test_changed_config_reruns_only_what_depends_on_it(tiny) -> None:
    exp, _ = tiny
    work = exp.parent.parent
    result = _run(work, "--stage", "2", "--stop-stage", "2", "--set", "prepare_text.normalize.lowercase=false")
    assert result.returncode == 0, result.stderr
    statuses = {line.split()[0]: line.split()[-1] for line in result.stdout.splitlines() if line.startswith(" ")}
    assert statuses["text/train.jsonl"] == "done" and statuses["tokenizer/tokenizer.model"] == "done"
    train = json.loads((exp / "text/train.jsonl").read_text().splitlines()[0])
    assert train["text"] != train["text"].lower()
    forced = _run(work, "--stage", "2", "--stop-stage", "2", "--force")
    assert forced.returncode == 0 and "up to date" not in forced.stdout
    train = json.loads((exp / "text/train.jsonl").read_text().splitlines()[0])
    assert train["text"] == train["text"].lower()


def _cell(exp: Path, track: str, scheme: str, budget: int) -> dict:
    return json.loads((exp / "curriculum" / track / scheme / f"b{budget}" / "cell.json").read_text())


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {**load_file(str(folder / "projector/model.safetensors")),
            **load_file(str(folder / "lora/adapter_model.safetensors"))}


def _changed(a: dict, b: dict, part: str) -> bool:
    names = [n for n in a if (part == "lora") == ("lora" in n)]
    assert names
    return any((a[n] - b[n]).abs().max() > 0 for n in names)


def test_each_preset_trains_what_it_names_and_decodes_both_inputs(tiny) -> None:
    exp, _ = tiny
    tasu = _weights(exp / "align/tasu")
    expected = {"text-only": [(["text"], ["lora"])],
                "direct-mix": [(["text", "speech"], ["projector", "lora"])],
                "curriculum": [(["text"], ["lora"]), (["text", "speech"], ["projector", "lora"])],
                "tasu-then-speech": [(["cps"], ["projector", "lora"]), (["speech"], ["projector", "lora"])]}
    for scheme, phases in expected.items():
        record = _cell(exp, "en", scheme, 100)
        assert [(sorted(p["inputs"]), p["train"]) for p in record["phases"]] == [
            (sorted(inputs), parts) for inputs, parts in phases], scheme
        first = _weights(exp / "curriculum/phases" / record["phases"][0]["key"])
        assert _changed(first, tasu, "lora")
        assert _changed(first, tasu, "projector") == ("projector" in phases[0][1]), scheme
        final = exp / record["eval_dir"]
        for kind in ("speech", "text"):
            rows = [json.loads(line) for line in (final / f"{kind}.jsonl").read_text().splitlines()]
            assert len(rows) == 4 and all(json.loads(r["ref"])["scenario"] for r in rows)
    scored = json.loads((exp / "score/slu/en/curriculum/b100.json").read_text())
    hyps = [json.loads(line)["hyp"] for line in (exp / _cell(exp, "en", "curriculum", 100)["eval_dir"] /
                                                 "speech.jsonl").read_text().splitlines()]
    unparsable = 0
    for hyp in hyps:
        try:
            unparsable += not isinstance(json.loads(hyp), dict)
        except ValueError:
            unparsable += 1
    assert scored["speech"]["invalid_json"] == unparsable and scored["speech"]["utterances"] == 4


def test_speech_budgets_and_shared_phases(tiny) -> None:
    from speechllm_cli.data.budget import speech_subset

    exp, _ = tiny
    ids = [json.loads(line)["id"] for line in (exp / "text/slu_train.jsonl").read_text().splitlines()]
    for budget, count in ((0, 0), (25, 5), (100, 20)):
        records = [_cell(exp, "en", scheme, budget) for scheme in ("direct-mix", "curriculum", "tasu-then-speech")]
        assert all(r["budget_utterances"] == count and r["budget_pool"] == 20 for r in records)
        assert all(r["budget_ids"] == speech_subset(ids, budget, 0) for r in records)
        german = _cell(exp, "en-de", "direct-mix", budget)
        assert german["target_speech"] == 4 and german["speech_utterances"] == count + 4
        assert german["phases"][0]["examples"] == {"text": 20, "speech": count + 4}
    keys = {budget: [p["key"] for p in _cell(exp, "en", "curriculum", budget)["phases"]] for budget in (0, 25, 100)}
    assert keys[0][0] == keys[25][0] == keys[100][0] and len({k[1] for k in keys.values()}) == 3
    text_only = {_cell(exp, "en", "text-only", b)["phases"][0]["key"] for b in (0, 25, 100)}
    assert text_only == {_cell(exp, "en", "direct-mix", 0)["phases"][0]["key"]}
    assert [len(_cell(exp, "en", "tasu-then-speech", b)["phases"]) for b in (0, 25)] == [1, 2]


def test_slu_results_table_and_plot(tiny) -> None:
    exp, result = tiny
    results = (exp / "RESULTS.md").read_text()
    assert "## SLU" in results and "### Track en-de" in results and "curriculum-finetune --recipe" in results
    assert results.count("| tasu-then-speech |") == 6
    assert (exp / "plots/slu_f1_vs_budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "24 SLU runs" in result.stdout
    work = exp.parent.parent
    wider = _run(work, "--stage", "8", "--set", "curriculum_finetune.budgets=[0, 25, 50, 100]")
    assert wider.returncode == 0 and "(8 cells not run yet)" in wider.stdout


def _curriculum_args(exp_dir: Path) -> list[str]:
    """One cell (en, curriculum, 100 %) with longer phases and frequent checkpoints."""
    return [str(SPEECHLLM), "curriculum-finetune", "--recipe", "tiny", "--exp-dir", str(exp_dir), "--track", "en",
            "--scheme", "curriculum", "--budget", "100", "--set", "curriculum_finetune.epochs=4",
            "--set", "curriculum_finetune.train.checkpoint_every=2"]


def _curriculum(exp_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_curriculum_args(exp_dir), capture_output=True, text=True, check=False)


def _copy_aligned(exp: Path, target: Path) -> Path:
    _copy_prepared(exp, target)
    shutil.copytree(exp / "align", target / "align")
    return target


def test_a_cell_starts_from_a_frozen_llm_system_with_a_fresh_lora(tiny, tmp_path: Path) -> None:
    """Issue 23: SLU fine-tuning from a system that trained its projector alone; its first phase starts exactly
    as that system (its projector, LoRA B = 0) and the cell saves a LoRA of its own."""
    from safetensors.torch import load_file

    from speechllm_cli.stages.curriculum.cells import Runner
    from speechllm_cli.stages.curriculum.config import Cell
    from speechllm_cli.stages.curriculum.plan import plan_phases
    from speechllm_cli.stages.curriculum.records import cell_weights
    from speechllm_cli.stages.recipe import load_recipe
    from speechllm_cli.stages.runner import Context

    exp, _ = tiny
    copy = _copy_aligned(exp, tmp_path / "exp")
    init = ["--set", "curriculum_finetune.init=frozen"]
    context = Context(load_recipe("tiny", [init[1]]).config, copy)
    config, cell = context.section("curriculum_finetune"), Cell("en", "text-only", 0)
    runner = Runner(context, config)
    pools = runner.pools("en")
    speech, kept = pools.speech(0)
    first = plan_phases(context, config, cell, {"text": pools.text, "cps": pools.cps, "speech": speech}, kept)[0]
    assert first.previous == copy / "align/frozen" and not first.previous_lora
    model, _ = runner._model(first.previous, first.previous_lora)
    saved = load_file(str(copy / "align/frozen/projector/model.safetensors"))
    assert all(torch.equal(model.projector.state_dict()[name], tensor) for name, tensor in saved.items())
    lora_b = [p for name, p in model.llm.named_parameters() if "lora_B" in name]
    assert lora_b and all(not p.any() for p in lora_b)
    finetuned = subprocess.run([str(SPEECHLLM), "curriculum-finetune", "--recipe", "tiny", "--exp-dir", str(copy),
                                "--track", "en", "--scheme", "text-only", "--budget", "0", *init],
                               capture_output=True, text=True, check=False)
    assert finetuned.returncode == 0, finetuned.stderr
    weights = _weights(cell_weights(context, cell))
    assert any("lora_B" in name and tensor.any() for name, tensor in weights.items())


def test_an_slu_cascade_is_the_cells_model_reading_the_normalised_ctc_transcript(tiny, tmp_path: Path) -> None:
    """Issue 23: ``curriculum_finetune.cascades`` has each cell's model also read a transcriber's transcript of the
    test speech; only the evaluation reruns, and score reports it beside the speech and text inputs."""
    from speechllm_cli.data.normalize import normalize
    from speechllm_cli.stages.recipe import load_recipe

    exp, _ = tiny
    copy = _copy_aligned(exp, tmp_path / "exp")
    shutil.copytree(exp / "curriculum", copy / "curriculum")
    cell = ("curriculum-finetune", "--recipe", "tiny", "--exp-dir", copy, "--track", "en", "--scheme", "text-only",
            "--budget", "0")
    refused = _speechllm(*cell, "--set", "curriculum_finetune.cascades=[tasu]")
    assert refused.returncode == 1
    assert refused.stderr == ("error: curriculum_finetune.cascades: 'tasu' is a speech-llm system, not a transcriber "
                              "of decode (ctc, peer, search)\n")
    result = _speechllm(*cell, "--set", "curriculum_finetune.cascades=[ctc]")
    assert result.returncode == 0, result.stderr
    record = _cell(copy, "en", "text-only", 0)
    assert record["phases"][0]["status"] == "up to date" and record["evaluation"]["status"] != "up to date"
    folder = copy / record["eval_dir"]
    speech, cascade = ([json.loads(line) for line in (folder / name).read_text().splitlines()]
                       for name in ("speech.jsonl", "cascade-ctc.jsonl"))
    assert [r["id"] for r in cascade] == [r["id"] for r in speech] and len(cascade) == 4
    clips = [next((copy / "data/audio/slu_test").glob(f"{r['id']}-*.flac")) for r in cascade]
    transcribed = _speechllm("decode", "--recipe", "tiny", "--exp-dir", copy, "--system", "ctc", *clips)
    assert transcribed.returncode == 0, transcribed.stderr
    normalizer = load_recipe("tiny", []).config.prepare_text.normalize
    assert [r["text"] for r in cascade] == [normalize(line.split("\t", 1)[1], normalizer)
                                            for line in transcribed.stdout.splitlines()]
    scored = _speechllm("score", "--recipe", "tiny", "--exp-dir", copy)
    assert scored.returncode == 0, scored.stderr
    summary = json.loads((copy / "score/slu/en/text-only/b0.json").read_text())
    assert summary["cascades"]["ctc"]["utterances"] == 4
    results = (copy / "RESULTS.md").read_text()
    assert "#### Track en: cascades" in results and results.count("| text-only | 0 | ctc |") == 1


def test_killed_curriculum_resumes_mid_phase_to_the_uninterrupted_result(tiny, tmp_path: Path) -> None:
    exp, _ = tiny
    reference = _copy_aligned(exp, tmp_path / "reference")
    done = _curriculum(reference)
    assert done.returncode == 0, done.stderr
    assert "1 cells" in done.stdout
    killed = _copy_aligned(exp, tmp_path / "killed")
    process = subprocess.Popen(_curriculum_args(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    second: Path | None = None
    while time.time() < deadline and process.poll() is None and second is None:
        for log in (killed / "curriculum/phases").glob("*/train_log.jsonl"):
            finished = list((killed / "curriculum/phases").glob("*/.done"))
            steps = [json.loads(line)["step"] for line in log.read_text().splitlines() if line.strip()]
            if finished and not (log.parent / ".done").exists() and steps and max(steps) >= 4:
                second = log.parent
        time.sleep(0.05)
    assert process.poll() is None and second is not None, "the run finished before its second phase was killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = _curriculum(killed)
    assert resumed.returncode == 0, resumed.stderr
    record = _cell(killed, "en", "curriculum", 100)
    assert record["phases"][0]["status"] == "up to date"
    assert 2 <= record["phases"][1]["resumed_from"] < record["phases"][1]["steps"]
    ours = _weights(killed / "curriculum/phases" / record["phases"][1]["key"])
    theirs = _weights(reference / "curriculum/phases" / record["phases"][1]["key"])
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        assert (tensor - theirs[name]).abs().max() < 1e-5, name
    theirs_hyps = (reference / _cell(reference, "en", "curriculum", 100)["eval_dir"] / "speech.jsonl").read_text()
    assert (killed / record["eval_dir"] / "speech.jsonl").read_text() == theirs_hyps



def test_tts_split_speaks_sentences_of_the_text_corpora(tiny) -> None:
    exp, _ = tiny
    corpora = {json.loads(line)["text"] for name in ("scripture_text", "commands_text")
               for line in (exp / "data" / "corpora" / f"{name}.jsonl").read_text().splitlines()}
    cuts = load_cuts(exp / "data/tts_text/cuts.jsonl.gz")
    assert len(cuts) == 12
    assert {c.supervisions[0].text for c in cuts} <= corpora
    assert {c.supervisions[0].custom["voice"] for c in cuts} <= {
        "espeak-ng:en-us", "espeak-ng:en-us+m3", "espeak-ng:en-gb+f3", "espeak-ng:en-gb-scotland+m1"}
    assert json.loads((exp / "align/tts/.done").read_text())["stats"]["examples"] == 12


def test_align_trains_only_the_named_systems(tiny, tmp_path: Path) -> None:
    exp, _ = tiny
    copy = _copy_prepared(exp, tmp_path / "exp")
    result = _align(copy, "--system", "calibrated")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (copy / "align").iterdir()) == ["calibrated"]
    unknown = _align(copy, "--system", "bogus")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == (
        "error: --system bogus: not in align.systems (known: tasu, calibrated, paired, tesu, tts, frozen, multitask)")


def test_score_counts_systems_not_decoded_yet(tiny, tmp_path: Path) -> None:
    exp, _ = tiny
    copy = tmp_path / "exp"
    for part in ("text", "encoder", "align", "decode"):
        shutil.copytree(exp / part, copy / part)
    shutil.rmtree(copy / "decode" / "paired")
    result = subprocess.run([str(SPEECHLLM), "score", "--recipe", "tiny", "--exp-dir", str(copy)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "18 system x split scores (3 not decoded yet)" in result.stdout
    results = (copy / "RESULTS.md").read_text()
    assert "| tasu |" in results and "| paired |" not in results


def _speechllm(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SPEECHLLM), *map(str, args)], capture_output=True, text=True, check=False)


def _cached_seconds(exp: Path, split: str) -> dict[str, float]:
    """Audio seconds by utterance as the newest posterior cache of ``split`` holds them."""
    from safetensors import safe_open

    newest = max((exp / "encoder/posteriors").glob(f"{split}-*"), key=lambda p: p.stat().st_mtime_ns)
    seconds = {}
    for part in sorted(newest.glob("part-*.safetensors")):
        with safe_open(str(part), framework="pt") as handle:
            seconds |= {uid: fields["seconds"] for uid, fields in json.loads(handle.metadata()["utterances"]).items()}
    return seconds


def test_re_prepared_audio_is_encoded_again(tiny, tmp_path: Path) -> None:
    """Issue 11 finding 1: the posterior cache ignored the split's audio, so new voices decoded as the old."""
    exp, _ = tiny
    copy = _copy_prepared(exp, tmp_path / "exp")
    other = _speechllm("prepare-data", "--recipe", "tiny", "--exp-dir", copy,
                       "--set", "prepare_data.mini.splits.test_newvoice.voices=train")
    assert other.returncode == 0, other.stderr
    durations = {cut.id: cut.duration for cut in load_cuts(copy / "data/test_newvoice/cuts.jsonl.gz")}
    assert durations != _cached_seconds(exp, "test_newvoice"), "the new voices must change the audio"
    decoded = _speechllm("decode", "--recipe", "tiny", "--exp-dir", copy, "--system", "ctc",
                         "--set", "decode.splits=[test_newvoice]")
    assert decoded.returncode == 0, decoded.stderr
    assert "decode/ctc/test_newvoice" in decoded.stdout and " done" in decoded.stdout
    assert _cached_seconds(copy, "test_newvoice") == pytest.approx(durations)


class _Payload:
    """Unpickling this creates a folder: proof that a file was unpickled."""

    def __init__(self, proof: Path) -> None:
        self.proof = proof

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.mkdir, (str(self.proof),)


def test_crafted_pickles_in_caches_and_checkpoints_are_never_executed(tiny, tmp_path: Path) -> None:
    import pickle

    exp, _ = tiny
    copy = _copy_prepared(exp, tmp_path / "exp")
    shutil.copytree(exp / "align/tasu", copy / "align/tasu")
    proof = tmp_path / "code-ran"
    crafted = pickle.dumps({"payload": _Payload(proof)})
    caches = sorted((copy / "encoder/posteriors").glob("test_newvoice-*/part-*.safetensors"))
    assert caches, "the prepared experiment has a posterior cache to plant into"
    for cache in caches:
        cache.write_bytes(crafted)
        cache.with_suffix(".pt").write_bytes(crafted)
    key = json.loads((copy / "align/tasu/.done").read_text())["key"]
    (copy / "align/tasu/.done").unlink()
    (copy / "align/tasu/.in-progress").write_text(key + "\n")
    (copy / "align/tasu/checkpoint").mkdir(exist_ok=True)
    (copy / "align/tasu/checkpoint/state.pt").write_bytes(crafted)
    aligned = _speechllm("align", "--recipe", "tiny", "--exp-dir", copy, "--system", "tasu")
    decoded = _speechllm("decode", "--recipe", "tiny", "--exp-dir", copy, "--system", "ctc",
                         "--set", "decode.splits=[test_newvoice]")
    assert aligned.returncode == 0, aligned.stderr
    assert decoded.returncode == 0, decoded.stderr
    assert not proof.exists()
    assert _cached_seconds(copy, "test_newvoice") == _cached_seconds(exp, "test_newvoice"), "the cache is rebuilt"


def test_truncated_posterior_cache_is_rebuilt(tiny, tmp_path: Path) -> None:
    exp, _ = tiny
    copy = _copy_prepared(exp, tmp_path / "exp")
    for cache in (copy / "encoder/posteriors").glob("test_indomain-*/part-*.safetensors"):
        cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    decoded = _speechllm("decode", "--recipe", "tiny", "--exp-dir", copy, "--system", "ctc", "--force",
                         "--set", "decode.splits=[test_indomain]")
    assert decoded.returncode == 0, decoded.stderr
    rows = (copy / "decode/ctc/test_indomain/hyps.jsonl").read_text()
    assert rows == (exp / "decode/ctc/test_indomain/hyps.jsonl").read_text()


def test_decode_before_align_is_one_line(tiny, tmp_path: Path) -> None:
    exp, _ = tiny
    copy = _copy_prepared(exp, tmp_path / "exp")
    result = _speechllm("decode", "--recipe", "tiny", "--exp-dir", copy, "--system", "tasu",
                        "--set", "decode.splits=[test_indomain]")
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: {copy / 'align/tasu'}: align system 'tasu' is not trained yet "
                                     "(run align first)")
    audio = sorted((copy / "data/audio/test_indomain").glob("*.flac"))[:1]
    ctc = _speechllm("decode", "--recipe", "tiny", "--exp-dir", copy, "--system", "ctc", *audio)
    assert ctc.returncode == 0, ctc.stderr
    assert [line.split("\t")[0] for line in ctc.stdout.splitlines()] == [str(audio[0])]
    asked = _speechllm("decode", "--recipe", "tiny", "--exp-dir", copy, "--system", "tasu", *audio)
    assert asked.returncode == 1 and asked.stderr.strip() == result.stderr.strip()


def test_outputs_of_a_unit_without_its_marker_are_not_read(tiny, tmp_path: Path) -> None:
    """Issue 25, finding 4: a decode that failed (no marker, old hypotheses beside) is not scored, and a system
    whose align failed (no marker, old weights beside) is not decoded."""
    exp, _ = tiny
    copy = tmp_path / "exp"
    shutil.copytree(exp, copy)
    (copy / "decode/tasu/test_newvoice/.done").unlink()
    shutil.rmtree(copy / "score")
    scored = _speechllm("score", "--recipe", "tiny", "--exp-dir", copy)
    assert scored.returncode == 0, scored.stderr
    assert "tasu / test_indomain" in scored.stdout and "tasu / test_newvoice" not in scored.stdout
    assert not (copy / "score/tasu/test_newvoice").exists()
    (copy / "align/tasu/.done").unlink()
    result = _speechllm("decode", "--recipe", "tiny", "--exp-dir", copy, "--system", "tasu")
    assert result.returncode == 1 and result.stderr.strip() == (
        f"error: {copy / 'align/tasu'}: align system 'tasu' is not trained yet (run align first)")


def test_a_run_that_fails_before_touching_its_outputs_leaves_the_finished_unit_finished(tiny, tmp_path: Path) -> None:
    """An extra split that was never prepared is found when train-encoder starts; the trained encoder it found
    stays done (it used to lose its marker and train again on the next run)."""
    exp, _ = tiny
    copy = _copy_prepared(exp, tmp_path / "exp")
    marker = (copy / "encoder/.done").read_bytes()
    failed = _speechllm("train-encoder", "--recipe", "tiny", "--exp-dir", copy, "--set",
                        "train_encoder.extra_splits={more: train}")
    assert failed.returncode == 1 and failed.stderr.strip().endswith(
        "split 'more' is not prepared (run prepare-data first)"), failed.stderr
    assert (copy / "encoder/.done").read_bytes() == marker
    again = _speechllm("train-encoder", "--recipe", "tiny", "--exp-dir", copy)
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout


def test_a_deleted_marker_over_unchanged_inputs_redoes_only_that_unit(tiny, tmp_path: Path) -> None:
    """Issue 11 finding 7: rebuilt manifests and tokenizers had new bytes, so everything downstream retrained.

    In a copy of the folder: its manifests name their audio relative to it, so the copy keeps every key."""
    exp, _ = tiny
    copy = _copy_prepared(exp, tmp_path / "exp")
    cuts, tokenizer = copy / "data/train/cuts.jsonl.gz", copy / "tokenizer/tokenizer.model"
    before = cuts.read_bytes(), tokenizer.read_bytes()
    (copy / "data/train/.done").unlink()
    prepared = _speechllm("prepare-data", "--recipe", "tiny", "--exp-dir", copy)
    assert prepared.returncode == 0, prepared.stderr
    assert "prepare-data: 14 outputs (13 up to date)" in prepared.stdout
    text = _speechllm("prepare-text", "--recipe", "tiny", "--exp-dir", copy, "--force")
    assert text.returncode == 0, text.stderr
    assert (cuts.read_bytes(), tokenizer.read_bytes()) == before
    encoder = _speechllm("train-encoder", "--recipe", "tiny", "--exp-dir", copy)
    assert encoder.returncode == 0, encoder.stderr
    assert "up to date" in encoder.stdout and " done" not in encoder.stdout


def test_a_users_file_decodes_as_the_split_decoder_decodes_it(tiny) -> None:
    """Issue 12: one decoding path. A speech LLM system given an utterance's audio file gives the hypothesis
    the split decoder wrote for that utterance (in a batch of others, through the posterior cache)."""
    exp, _ = tiny
    hyps = {row["id"]: row["hyp"] for row in map(json.loads, (exp / "decode/tasu/test_indomain/hyps.jsonl")
                                                  .read_text().splitlines())}
    cuts = load_cuts(exp / "data/test_indomain/cuts.jsonl.gz")
    chosen = [cut for cut in cuts if cut.start == 0 and cut.duration == cut.recording.duration][:2]
    assert chosen, "the tiny recipe writes one file per utterance"
    files = [Path(cut.recording.sources[0].source) for cut in chosen]
    result = _speechllm("decode", "--recipe", "tiny", "--exp-dir", exp, "--system", "tasu", *files)
    assert result.returncode == 0, result.stderr
    printed = dict(line.split("\t", 1) for line in result.stdout.splitlines())
    assert {Path(path).name: text for path, text in printed.items()} == {
        file.name: hyps[cut.id] for file, cut in zip(files, chosen, strict=True)}


def test_a_positions_budget_decodes_the_same_hypotheses_in_other_batches(tiny, tmp_path: Path) -> None:
    """Issue 24, finding 8: decode.max_positions batches by size (here every utterance alone); the hypotheses do
    not depend on the batches."""
    exp, _ = tiny
    copy = _copy_prepared(exp, tmp_path / "exp")
    shutil.copytree(exp / "align/tasu", copy / "align/tasu")
    result = _speechllm("decode", "--recipe", "tiny", "--exp-dir", copy, "--system", "tasu", "--set",
                        "decode.splits=[test_indomain]", "--set", "decode.tasks={}", "--set", "decode.max_positions=1")
    assert result.returncode == 0, result.stderr
    written = "decode/tasu/test_indomain/hyps.jsonl"
    assert (copy / written).read_text() == (exp / written).read_text()


def test_ctc_decoding_depends_on_neither_lsd_nor_generation(tiny, tmp_path: Path) -> None:
    exp, _ = tiny
    copy = _copy_prepared(exp, tmp_path / "exp")
    shutil.copytree(exp / "decode", copy / "decode")
    shutil.copytree(exp / "align/tasu", copy / "align/tasu")
    changed = ("--set", "model.lsd.blank_threshold=0.8", "--set", "decode.generation.max_new_tokens=5",
               "--set", "decode.splits=[test_indomain]", "--set", "decode.tasks={}")
    result = _speechllm("decode", "--recipe", "tiny", "--exp-dir", copy, "--system", "ctc", "--system", "tasu",
                        *changed)
    assert result.returncode == 0, result.stderr
    rows = [line.split(maxsplit=3) for line in result.stdout.splitlines() if line.strip().startswith("decode/")]
    assert {name: state.strip() for name, _, _, state in rows} == {
        "decode/ctc/test_indomain": "up to date", "decode/tasu/test_indomain": "done"}


def test_two_processes_decode_what_one_process_decodes(tiny, tmp_path: Path) -> None:
    """Issue 12: data-parallel decoding. Each process decodes every second utterance; the merged hypotheses,
    written once by the main process, equal one process's."""
    exp, _ = tiny
    copy = _copy_prepared(exp, tmp_path / "exp")
    shutil.copytree(exp / "align/tasu", copy / "align/tasu")
    result = _speechllm("decode", "--recipe", "tiny", "--exp-dir", copy, "--system", "tasu", "--system", "ctc",
                        "--set", "decode.splits=[test_newvoice]", "--num-processes", "2")
    assert result.returncode == 0, result.stderr
    for system in ("tasu", "ctc"):
        ours = (copy / "decode" / system / "test_newvoice/hyps.jsonl").read_text()
        assert ours == (exp / "decode" / system / "test_newvoice/hyps.jsonl").read_text()
        assert len(ours.splitlines()) == 6
    again = _speechllm("decode", "--recipe", "tiny", "--exp-dir", copy, "--system", "tasu",
                       "--set", "decode.splits=[test_newvoice]", "--num-processes", "2")
    assert again.returncode == 0 and "up to date" in again.stdout, again.stderr


def _distill(exp_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _speechllm("distill", "--recipe", "tiny", "--exp-dir", exp_dir, "--system", "salad",
                      "--set", "distill.train.steps=12", *args)


def test_distill_resumes_after_sigkill_counts_transcripts_without_speech_and_decodes(tiny, tmp_path: Path) -> None:
    """Issue 13: distillation from the tasu system on the train split's speech, with a transcript that has no
    speech (counted), killed after two checkpoints: the resume ends at the uninterrupted weights; the gap is
    measured for tasu and for the distilled system; the distilled system decodes like any other."""
    from safetensors.torch import load_file

    exp, _ = tiny
    runs = {}
    for name in ("reference", "killed"):
        runs[name] = _copy_prepared(exp, tmp_path / name)
        shutil.copytree(exp / "align/tasu", runs[name] / "align/tasu")
        with (runs[name] / "text/train.jsonl").open("a") as handle:
            handle.write(json.dumps({"id": "no-such-utterance", "text": "and god said", "target": "and god said",
                                     "task": "asr", "lang": "en", "domain": "scripture"}) + "\n")
    assert (result := _distill(runs["reference"])).returncode == 0, result.stderr
    stats = json.loads((runs["reference"] / "distill/salad/.done").read_text())["stats"]
    assert stats["skipped"] == {"no_speech": 1}
    assert stats["items"] == 24 + 6, "24 utterances with speech and a text share of 0.2"
    gap = {name: json.loads((runs["reference"] / "gap" / name / ".done").read_text())["stats"]
           for name in ("tasu", "salad")}
    for measured in gap.values():
        assert measured["F"] >= 0 and measured["M"] > 0 and measured["utterances"] == 6
        assert measured["speech_acc"] <= 1 and measured["text_acc"] <= 1
        assert measured["qa_questions"] == 6 and 0 <= measured["qa_speech_acc"] <= 1
        assert 0 <= measured["qa_text_acc"] <= 1
    assert gap["salad"]["M"] != gap["tasu"]["M"]
    for key in ("text_acc", "qa_text_acc"):
        assert gap["salad"][key] == gap["tasu"][key], "the original LLM, whichever system is measured"

    process = subprocess.Popen([str(SPEECHLLM), "distill", "--recipe", "tiny", "--exp-dir", str(runs["killed"]),
                                "--system", "salad", "--set", "distill.train.steps=12"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = runs["killed"] / "distill/salad/checkpoint"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and len(list(checkpoints.glob("step-*"))) < 2:
        time.sleep(0.05)
    assert process.poll() is None, "distill finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (result := _distill(runs["killed"])).returncode == 0, result.stderr
    assert json.loads((runs["killed"] / "distill/salad/.done").read_text())["stats"]["resumed_from"] > 0
    for part in ("projector/model.safetensors", "lora/adapter_model.safetensors"):
        ours, theirs = (load_file(str(runs[name] / "distill/salad" / part)) for name in ("killed", "reference"))
        assert ours.keys() == theirs.keys()
        for key, tensor in ours.items():
            assert (tensor - theirs[key]).abs().max() < 1e-5, key

    decoded = _speechllm("decode", "--recipe", "tiny", "--exp-dir", runs["reference"], "--set",
                         "decode.systems=[salad]", "--set", "decode.splits=[test_newvoice]")
    assert decoded.returncode == 0, decoded.stderr
    assert len((runs["reference"] / "decode/salad/test_newvoice/hyps.jsonl").read_text().splitlines()) == 6


def test_stage_two_speaks_the_budget_chosen_by_misalignment_or_at_random_and_counts_empty_clusters(
        tiny, tmp_path: Path) -> None:
    """Issue 13, SALAD's stage II: salad_active and salad_random continue the text-only salad_text on 10
    utterances they synthesize; active probes each of its 4 clusters (M per cluster) and draws the other 6."""
    exp, _ = tiny
    work = _copy_aligned(exp, tmp_path / "exp")
    systems = ("salad_text", "salad_active", "salad_random")
    result = _speechllm("distill", "--recipe", "tiny", "--exp-dir", work,
                        *(arg for name in systems for arg in ("--system", name)))
    assert result.returncode == 0, result.stderr
    stats = {name: json.loads((work / "distill" / name / ".done").read_text())["stats"] for name in systems}
    for name in ("salad_active", "salad_random"):
        assert stats[name]["init"] == "salad_text" and stats[name]["input"] == "tts"
        assert stats[name]["selection"]["spoken"] == 10
        assert len(list((work / "distill" / name / "tts").glob("pool*.flac"))) == 10
        assert stats[name]["items"] == 10 - stats[name]["skipped"].get("no_speech", 0) >= 8
    clusters = stats["salad_active"]["selection"]["clusters"]
    assert len(clusters) == 4 and sum(c["texts"] for c in clusters) == 100, "the pool: 60 + 40 sentences"
    assert [c["probe"] for c in clusters] == [1, 1, 1, 1] and sum(c["drawn"] for c in clusters) == 6
    assert all(c["M"] > 0 for c in clusters)
    finished = {name: (work / "distill" / name / ".done").stat().st_mtime_ns for name in systems}
    again = _speechllm("distill", "--recipe", "tiny", "--exp-dir", work, "--system", "salad_active")
    assert again.returncode == 0, again.stderr
    assert {name: (work / "distill" / name / ".done").stat().st_mtime_ns for name in systems} == finished
    decoded = _speechllm("decode", "--recipe", "tiny", "--exp-dir", work, "--set", "decode.systems=[salad_active]",
                         "--set", "decode.splits=[test_newvoice]")
    assert decoded.returncode == 0, decoded.stderr
    assert (scored := _speechllm("score", "--recipe", "tiny", "--exp-dir", work)).returncode == 0, scored.stderr
    results = (work / "RESULTS.md").read_text()
    for row in ("| tasu | align | ", "| salad_text | tasu + simulated | ", "| salad_active | salad_text + tts, "
                "active 10 utt | ", "| salad_random | salad_text + tts, random 10 utt | "):
        assert row in results
    assert "test word accuracy: undefined over 1 systems" in results
    assert "held-out speech accuracy over 4 systems" in results
    assert (work / "plots/accuracy_vs_log_m.png").is_file()

    # A pool of six texts, two of them distinct, leaves two of the four clusters empty: counted, and the
    # budget is spent only as far as the pool goes (2 probes + the 4 texts left).
    texts = [json.loads(line) for line in (work / "text/commands_text.jsonl").read_text().splitlines()[:6]]
    with (work / "text/commands_text.jsonl").open("w") as handle:
        for number, row in enumerate(texts):
            handle.write(json.dumps({**row, "text": texts[number % 2]["text"], "target": texts[number % 2]["text"]})
                         + "\n")
    result = _speechllm("distill", "--recipe", "tiny", "--exp-dir", work, "--system", "salad_active",
                        "--set", "distill.systems.salad_active.text_sets=[commands_text]")
    assert result.returncode == 0, result.stderr
    done = json.loads((work / "distill/salad_active/.done").read_text())["stats"]
    assert done["skipped"]["empty_cluster"] == 2
    assert done["selection"]["spoken"] == 6 and [c["texts"] for c in done["selection"]["clusters"]].count(0) == 2

    # Another instruction is another prompt for teacher and student: the same items train other weights.
    from safetensors.torch import load_file

    lora = work / "distill/salad_text/lora/adapter_model.safetensors"
    before = load_file(str(lora))
    result = _speechllm("distill", "--recipe", "tiny", "--exp-dir", work, "--system", "salad_text",
                        "--set", "distill.systems.salad_text.instruction=Reply in one short sentence.")
    assert result.returncode == 0, result.stderr
    after = load_file(str(lora))
    assert any(not torch.equal(after[key], tensor) for key, tensor in before.items())


def test_salad_over_instructions_distils_each_instruction_at_its_share_in_its_prompt(tiny, tmp_path: Path) -> None:
    """Issue 23: SALAD from simulated input over two instructions; each item carries its task's prompt, the
    transcription task scores the dataset's transcripts, the question task the original LLM's own answers."""
    from collections import Counter

    from speechllm_cli.core.distill import teacher_responses
    from speechllm_cli.core.llm import encode_text, target_ids
    from speechllm_cli.stages.distill import Student, _task_items, distill_dir
    from speechllm_cli.stages.inputs import load_trained_encoder
    from speechllm_cli.stages.recipe import load_recipe
    from speechllm_cli.stages.runner import Context
    from speechllm_cli.stages.speech_llm_io import load_trained, prompt_for

    exp, _ = tiny
    work = _copy_aligned(exp, tmp_path / "exp")
    result = _speechllm("distill", "--recipe", "tiny", "--exp-dir", work, "--system", "salad_tasks")
    assert result.returncode == 0, result.stderr
    stats = json.loads((work / "distill/salad_tasks/.done").read_text())["stats"]
    context = Context(load_recipe("tiny", []).config, work)
    config = context.section("distill")
    system = config.systems["salad_tasks"]
    total = config.train.steps * config.train.batch_size
    assert stats["items"] == total - sum(stats["skipped"].values()) and stats["steps"] == config.train.steps

    encoder = load_trained_encoder(context)
    model, tokenizer = load_trained(context, encoder, "tasu")
    items = _task_items(Student(context, config, system, encoder, model, tokenizer, distill_dir(context, "x")))
    prompts = [prompt_for(tokenizer, task.instruction, context.config.model) for task in system.tasks]
    by_prompt = Counter(tuple(pair.student.prompt.prefix) for pair in items.pairs)
    assert by_prompt == {tuple(p.prefix): round(t.share * total) for p, t in zip(prompts, system.tasks, strict=True)}
    transcribe, answer = ([p for p in items.pairs if p.student.prompt.prefix == prompt.prefix] for prompt in prompts)
    assert all(p.student.kind == "cps" for p in items.pairs)
    assert all(p.student.target == target_ids(tokenizer, tokenizer.decode(p.transcript)) for p in transcribe)
    pair = answer[0]
    [reply] = teacher_responses(model, [pair.transcript], config.generation, 1, prompts[1])
    assert pair.student.target == reply != target_ids(tokenizer, tokenizer.decode(pair.transcript))
    assert pair.transcript == encode_text(tokenizer, tokenizer.decode(pair.transcript))


def test_a_curriculum_cell_is_measured_and_distilled_like_any_speech_llm(tiny, tmp_path: Path) -> None:
    """Issue 13: F and M of curriculum-finetune systems, and a student initialised from one."""
    exp, _ = tiny
    work = _copy_aligned(exp, tmp_path / "exp")
    for stage in ("curriculum", "decode"):
        shutil.copytree(exp / stage, work / stage)
    cell = "en/curriculum/b100"
    result = _speechllm("distill", "--recipe", "tiny", "--exp-dir", work, "--system", "salad_text",
                        "--set", f"distill.systems.salad_text.init={cell}",
                        "--set", "distill.measure.systems=[tasu, en/text-only/b0]")
    assert result.returncode == 0, result.stderr
    assert json.loads((work / "distill/salad_text/.done").read_text())["stats"]["init"] == cell
    gap = {name: json.loads((work / "gap/_cells" / name / ".done").read_text())["stats"]
           for name in ("en/text-only/b0", cell)}
    tasu = json.loads((work / "gap/tasu/.done").read_text())["stats"]
    for measured in gap.values():
        assert measured["F"] > 0 and measured["M"] > 0 and measured["utterances"] == 6
        assert measured["text_acc"] == tasu["text_acc"], "the original LLM, whichever system is measured"
    assert gap[cell]["F"] != gap["en/text-only/b0"]["F"] != tasu["F"]
    assert (scored := _speechllm("score", "--recipe", "tiny", "--exp-dir", work, "--set",
                                 "distill.measure.systems=[tasu, en/text-only/b0]", "--set",
                                 f"distill.systems.salad_text.init={cell}")).returncode == 0, scored.stderr
    results = (work / "RESULTS.md").read_text()
    for row in (f"| {cell} | curriculum-finetune | ", "| en/text-only/b0 | curriculum-finetune | ",
                f"| salad_text | {cell} + simulated | "):
        assert row in results

    (work / "curriculum/en/direct-mix/b25/cell.json").unlink()
    for setting, message in (("distill.measure.systems=[en/nope/b0]",
                              "distill.measure.systems: 'en/nope/b0': not a cell of curriculum_finetune"),
                             ("distill.measure.systems=[en/direct-mix/b25]",
                              "cell en/direct-mix/b25 has not been run (speechllm curriculum-finetune --track en "
                              "--scheme direct-mix --budget 25)"),
                             ("distill.systems.salad_text.init=en/x/b5",
                              "distill.systems.salad_text.init: 'en/x/b5': not a cell")):
        result = _speechllm("distill", "--recipe", "tiny", "--exp-dir", work, "--system", "salad_text",
                            "--set", setting)
        assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert message in result.stderr, result.stderr


def test_distill_settings_that_cannot_work_are_one_line(tiny) -> None:
    exp, _ = tiny
    for setting, message in (
            ("distill.systems.salad.init=nope",
             "distill.systems.salad.init: 'nope' is neither an align system nor a distill system listed before it"),
            ("distill.systems.salad.loss.direction=sideways", "distill.systems.salad.loss.direction"),
            ("model.llm.lora=null", "distill.systems.salad.text_share: plain-text items need model.llm.lora")):
        result = _speechllm("distill", "--recipe", "tiny", "--exp-dir", exp, "--system", "salad", "--set", setting)
        assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert message in result.stderr, result.stderr
    assert not (exp / "distill").exists()
    result = _speechllm("distill", "--recipe", "tiny", "--exp-dir", exp, "--system", "salad_active",
                        "--set", "distill.systems.salad_active.selection.budget=4")
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "selection: budget 4 leaves nothing to select after the probes" in result.stderr
