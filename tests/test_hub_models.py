"""The users' hub-model path through the real CLI: a pretrained Hugging Face CTC encoder imported as is
(``train_encoder.source``) and a Hugging Face LLM folder (``align.llm.model``), from data to RESULTS.md.

No hub access here, so both models are tiny random ones built on disk in the layout the hub gives: a
wav2vec2 with a character vocabulary whose pad (the CTC blank) is not at id 0, and a Llama saved with
SmolLM2's tokenizer and chat template.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import yaml

from tests.conftest import REPO, load_cuts, tiny_wav2vec2

SYSTEMS = ["ctc", "tasu", "calibrated", "tts", "paired"]
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

    from speechllm_cli.core.llm import LLMConfig, load_llm
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
    config["align"]["llm"]["model"] = str(llm)
    config["decode"]["generation"]["max_new_tokens"] = 8
    path = tmp_path / "recipe" / "config.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def test_hub_encoder_and_llm_folders_run_every_stage(cli, tmp_path: Path) -> None:
    from transformers import AutoModelForCTC

    recipe = _recipe(tmp_path, _tiny_wav2vec2(tmp_path / "wav2vec2"), _tiny_llama(tmp_path / "llama"))
    exp = tmp_path / "exp"
    for stage in STAGES:
        result = cli(stage, "--recipe", recipe, "--exp-dir", exp, "--set", "align.train.steps=2")
        assert result.returncode == 0, f"{stage}:\n{result.stdout}\n{result.stderr}"

    AutoModelForCTC.from_pretrained(exp / "encoder" / "model")
    for split in TEST_SPLITS:
        cut_ids = [cut.id for cut in load_cuts(exp / "data" / split / "cuts.jsonl.gz")]
        assert len(cut_ids) == TEST_UTTERANCES
        for system in SYSTEMS:
            lines = (exp / "decode" / system / split / "hyps.jsonl").read_text(encoding="utf-8").splitlines()
            rows = [json.loads(line) for line in lines]
            assert [row["id"] for row in rows] == cut_ids
            assert all(set(row) == {"id", "ref", "hyp"} and row["ref"] for row in rows)
            summary = json.loads((exp / "score" / system / split / "summary.json").read_text(encoding="utf-8"))
            assert summary["num_utts"] == TEST_UTTERANCES
            assert all(isinstance(summary[key], int | float) for key in ("wer", "cer", "num_utts"))
    results = (exp / "RESULTS.md").read_text(encoding="utf-8")
    assert all(system in results for system in SYSTEMS)
