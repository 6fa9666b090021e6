"""The users' hub-model path through the real CLI: a pretrained Hugging Face CTC encoder imported as is
(``train_encoder.source``) and a Hugging Face LLM folder (``model.llm.model``), from data to RESULTS.md.

No hub access here, so both models are tiny random ones built on disk in the layout the hub gives: a
wav2vec2 with a character vocabulary whose pad (the CTC blank) is not at id 0, and a Llama saved with
SmolLM2's tokenizer and chat template.
"""

from __future__ import annotations

import json
import shutil
import string
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from speechllm_cli.data.normalize import NormalizerConfig, normalize
from tests.conftest import REPO, load_cuts, run_cli, tiny_wav2vec2

SYSTEMS = ["ctc", "tasu", "calibrated", "tts", "paired", "tesu"]
TEST_SPLITS = ["test_indomain", "test_newvoice", "test_xdomain"]
TEST_UTTERANCES = 3
STAGES = ["prepare-data", "prepare-text", "train-encoder", "calibrate", "align", "decode", "score"]


def _character_vocab() -> dict[str, int]:
    """English letters, apostrophe and ``|`` as wav2vec2 vocabularies have them, with the pad mid-table so that
    moving the blank to id 0 really reorders the columns."""
    letters = list(string.ascii_lowercase)
    tokens = ["<unk>", *letters[:13], "<pad>", *letters[13:], "'", "|"]
    return {token: index for index, token in enumerate(tokens)}


def _tiny_wav2vec2(folder: Path) -> Path:
    """A random wav2vec2 CTC model with its processor; the layer-norm variant, which masks padding, so it batches.

    Its feature encoder strides 320 samples like real wav2vec2 (50 frames a second): a random encoder's LSD keeps
    almost every frame, so a finer stride would hand the LLM sequences of thousands of positions.
    """
    return tiny_wav2vec2(folder, _character_vocab(), conv_kernel=(10, 8, 8), conv_stride=(5, 8, 8))


def _tiny_llama(folder: Path) -> Path:
    """A random 2-layer Llama saved with SmolLM2's tokenizer, which brings a chat template.

    The tokenizer comes from the project's ``tiny-random-smollm2`` alias through the stages' own cache, so the
    one-time SmolLM2 conversion is shared with every other test and run on this machine.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from speechllm_cli.core.configs import LLMConfig
    from speechllm_cli.core.llm import load_llm
    from speechllm_cli.stages.speech_llm_io import llm_cache_dir

    _, tokenizer = load_llm(LLMConfig(model="tiny-random-smollm2"), llm_cache_dir())
    assert tokenizer.chat_template
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _recipe(tmp_path: Path, encoder: Path, llm: Path) -> Path:
    """The tiny recipe with both models swapped for the on-disk ones and every size cut to the minimum."""
    config = yaml.safe_load((REPO / "recipes/tiny/config.yaml").read_text(encoding="utf-8"))
    config["name"] = "hub-models"
    mini = config["prepare_data"]["mini"]
    mini["splits"]["train"]["utterances"] = 8
    mini["splits"]["dev"]["utterances"] = 2
    for split in TEST_SPLITS:
        mini["splits"][split]["utterances"] = TEST_UTTERANCES
    mini["corpora"]["commands_text"]["sentences"] = 8
    mini["corpora"]["scripture_text"]["sentences"] = 8
    config["train_encoder"] = {"encoder": "hf-ctc", "source": str(encoder)}
    config["model"]["llm"]["model"] = str(llm)
    config["decode"]["generation"]["max_new_tokens"] = 8
    config["decode"]["systems"].append("tesu")
    path = tmp_path / "recipe" / "config.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@dataclass(frozen=True)
class HubRun:
    """What the module's one pass over every stage produced, for the tests to read."""

    exp: Path
    encoder: Path
    """The source wav2vec2 folder the recipe imported."""
    recipe: Path


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> HubRun:
    """Every stage once through the installed command; the tests below read what it wrote."""
    work = tmp_path_factory.mktemp("hub")
    encoder = _tiny_wav2vec2(work / "wav2vec2")
    recipe = _recipe(work, encoder, _tiny_llama(work / "llama"))
    exp = work / "exp"
    for stage in STAGES:
        result = run_cli(stage, "--recipe", recipe, "--exp-dir", exp, "--set", "align.train.steps=2", cwd=work)
        assert result.returncode == 0, f"{stage}:\n{result.stdout}\n{result.stderr}"
    return HubRun(exp, encoder, recipe)


def test_every_stage_writes_its_outputs(hub: HubRun) -> None:
    exp = hub.exp
    assert {"calibration.json", "calibration.safetensors"} <= {
        p.name for p in (exp / "encoder" / "calibration" / "model").iterdir()}
    report = json.loads((exp / "encoder" / "calibration" / "report.json").read_text(encoding="utf-8"))
    assert report["reference"] == "real dev" and report["distance"]["real dev"] == 0.0
    assert set(report["order"]) == set(report["distance"]) == set(report["sources"]) >= {"tasu cps", "real train"}
    calibration = json.loads((exp / "encoder" / "calibration" / ".done").read_text(encoding="utf-8"))["stats"]
    assert calibration["utterances"] + calibration["left_out"] == 2, "the dev split has 2 utterances"
    for system in SYSTEMS[1:]:
        projector = exp / "align" / system / "projector"
        assert {p.name for p in projector.iterdir()} == {"config.json", "model.safetensors"}, system
        assert json.loads((exp / "align" / system / ".done").read_text(encoding="utf-8"))["stats"]["steps"] == 2
    branch = json.loads((exp / "encoder/text_branch/model/config.json").read_text(encoding="utf-8"))
    source = json.loads((hub.encoder / "config.json").read_text(encoding="utf-8"))
    assert branch["hidden_size"] == source["hidden_size"] == len(branch["residual_std"]), \
        "the unified interface reads the HF encoder's last hidden states (output_hidden_states)"
    tesu = json.loads((exp / "align/tesu/projector/config.json").read_text(encoding="utf-8"))
    assert tesu["kind"] == "hidden-lookup" and tesu["vocab_size"] == source["hidden_size"], \
        "the recipe's unit-lookup over hidden states starts from the HF model's own lm_head"
    for split in TEST_SPLITS:
        cut_ids = [cut.id for cut in load_cuts(exp / "data" / split / "cuts.jsonl.gz")]
        assert len(cut_ids) == TEST_UTTERANCES
        for system in SYSTEMS:
            rows = _hyps(exp, system, split)
            assert [row["id"] for row in rows] == cut_ids
            assert all(set(row) == {"id", "ref", "hyp"} and row["ref"] for row in rows)


def test_imported_encoder_is_the_source_model_unchanged(hub: HubRun) -> None:
    """``train_encoder.source`` imports as is: same weights, same vocabulary, nothing trained."""
    from transformers import AutoModelForCTC

    imported = AutoModelForCTC.from_pretrained(hub.exp / "encoder" / "model").state_dict()
    source = AutoModelForCTC.from_pretrained(hub.encoder).state_dict()
    assert imported.keys() == source.keys()
    assert all(torch.equal(imported[name], source[name]) for name in source)
    vocab = json.loads((hub.exp / "encoder" / "model" / "vocab.json").read_text(encoding="utf-8"))
    assert vocab == _character_vocab()
    stats = json.loads((hub.exp / "encoder" / ".done").read_text(encoding="utf-8"))["stats"]
    assert stats == {"imported": str(hub.encoder)}


def test_ctc_hypotheses_are_the_source_models_greedy_transcripts(hub: HubRun) -> None:
    """The ``ctc`` system, recomputed from scratch with transformers alone on each test cut's audio: the
    source model's argmax per frame, decoded by its own processor (blank at id 14, not 0)."""
    from transformers import AutoModelForCTC, AutoProcessor

    processor = AutoProcessor.from_pretrained(hub.encoder)
    model = AutoModelForCTC.from_pretrained(hub.encoder).eval()
    hyps = []
    for split in TEST_SPLITS:
        for cut, row in zip(load_cuts(hub.exp / "data" / split / "cuts.jsonl.gz"), _hyps(hub.exp, "ctc", split),
                            strict=True):
            inputs = processor(audio=cut.load_audio()[0], sampling_rate=16000, return_tensors="pt")
            with torch.no_grad():
                best = model(inputs.input_values, attention_mask=inputs.attention_mask).logits.argmax(dim=-1)
            assert row["hyp"] == processor.batch_decode(best)[0], cut.id
            hyps.append(row["hyp"])
    assert len(set(hyps)) > 1 and all(hyps), "a check over empty or identical transcripts would prove little"


def test_scores_are_the_jiwer_rates_of_the_written_hypotheses(hub: HubRun) -> None:
    """Every WER and CER, recomputed with jiwer from ``hyps.jsonl`` under the recipe's normaliser, and the
    same numbers in RESULTS.md's WER table."""
    import jiwer

    config = yaml.safe_load(hub.recipe.read_text(encoding="utf-8"))
    normalizer = NormalizerConfig(**config["prepare_text"]["normalize"])
    results = (hub.exp / "RESULTS.md").read_text(encoding="utf-8")
    for system in SYSTEMS:
        row = next(line for line in results.splitlines() if line.startswith(f"| {system} |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        for column, split in enumerate(TEST_SPLITS, start=1):
            rows = _hyps(hub.exp, system, split)
            refs = [normalize(r["ref"], normalizer) for r in rows]
            hyps = [normalize(r["hyp"], normalizer) for r in rows]
            summary = json.loads((hub.exp / "score" / system / split / "summary.json").read_text(encoding="utf-8"))
            assert summary["num_utts"] == TEST_UTTERANCES
            assert summary["ref_words"] == sum(len(ref.split()) for ref in refs)
            assert summary["wer"] == pytest.approx(jiwer.wer(refs, hyps), abs=1e-9), (system, split)
            assert summary["cer"] == pytest.approx(
                jiwer.cer(["".join(t.split()) for t in refs], ["".join(t.split()) for t in hyps]), abs=1e-9)
            assert cells[column] == f"{100 * summary['wer']:.2f}", (system, split)


def _hyps(exp: Path, system: str, split: str) -> list[dict[str, str]]:
    lines = (exp / "decode" / system / split / "hyps.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_a_checkpoints_generation_defaults_do_not_change_beam_decoding(tmp_path: Path) -> None:
    """A hub LLM's generation_config.json (sampling, a repetition penalty, suppressed tokens) must not leak into
    our beam search: the shipped file suppresses every token the plain model decodes, so any leak shows."""
    from speechllm_cli.core.configs import GenerationConfig, LLMConfig
    from speechllm_cli.core.llm import load_llm
    from speechllm_cli.core.speech_llm import Prompt, SpeechLLM

    def beam(folder: Path) -> list[list[int]]:
        llm, _ = load_llm(LLMConfig(model=str(folder), lora=None), tmp_path / "cache")
        with torch.random.fork_rng():
            torch.manual_seed(0)
            projector = torch.nn.Linear(8, llm.config.hidden_size)
            inserted = [projector(torch.randn(n, 8)).detach() for n in (5, 9, 3)]
        model = SpeechLLM(llm, projector, Prompt(prefix=[1, 2], suffix=[3], end_of_turn=2), pad_id=0).eval()
        return model.generate(inserted, GenerationConfig(beam=3, max_new_tokens=10, length_ratio=4.0))

    plain = _tiny_llama(tmp_path / "plain")
    expected = beam(plain)
    assert sum(len(h) for h in expected) > 6, "hypotheses too short to compare"
    shipped = tmp_path / "shipped"
    shutil.copytree(plain, shipped)
    (shipped / "generation_config.json").write_text(json.dumps(
        {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "repetition_penalty": 1.5,
         "suppress_tokens": sorted({t for h in expected for t in h}), "bos_token_id": 1, "eos_token_id": 2}))
    assert beam(shipped) == expected
