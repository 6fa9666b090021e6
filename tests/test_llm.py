"""The LLM loader, its GGUF conversion cache, LoRA wrapping and the chat-template prompt.

One module-scoped fixture converts the real SmolLM2-135M-Instruct GGUF (the SLOW part of this file,
~15-40 s once); its tokenizer also serves the tiny random Llama that every other model test loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.core.configs import LLMConfig, LoraSettings
from speechllm_cli.core.llm import (
    SOURCE_FILE,
    build_prompt,
    cache_folder,
    end_of_turn_id,
    load_llm,
    target_ids,
)

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2}
TINY_SHAPES = {"q_proj": (32, 32), "k_proj": (32, 16), "v_proj": (32, 16), "o_proj": (32, 32)}
"""(in, out) features of each attention projection of the tiny Llama: head_dim 8, 4 query and 2 kv heads."""


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """SLOW: the built-in alias, converted from GGUF into a fresh cache (cache dir, model, tokenizer)."""
    cache = tmp_path_factory.mktemp("llm-cache")
    model, tokenizer = load_llm(LLMConfig(), cache)
    return cache, model, tokenizer


@pytest.fixture(scope="module")
def tokenizer(smollm2) -> PreTrainedTokenizerBase:  # noqa: ANN001
    return smollm2[2]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase) -> Path:
    """A random 2-layer Llama with SmolLM2's tokenizer (and chat template), saved as a plain HF folder."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = LlamaConfig(**TINY, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_smollm2_alias_converts_once_then_reloads_and_answers(smollm2) -> None:  # noqa: ANN001
    """SLOW (uses the real 135M model): the cache is reused, and the converted weights still answer."""
    cache, _, _ = smollm2
    [folder] = cache.iterdir()
    weights = folder / "model.safetensors"
    before = (folder.stat().st_ino, weights.stat().st_ino, weights.stat().st_mtime_ns)
    assert json.loads((folder / SOURCE_FILE).read_text())["gguf"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")

    model, tokenizer = load_llm(LLMConfig(), cache)

    assert list(cache.iterdir()) == [folder]
    assert (folder.stat().st_ino, weights.stat().st_ino, weights.stat().st_mtime_ns) == before
    prompt = build_prompt(tokenizer, "What is the capital of France?", None)
    ids = torch.tensor([prompt.prefix_ids + prompt.suffix_ids])
    output = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                            eos_token_id=end_of_turn_id(tokenizer), pad_token_id=tokenizer.pad_token_id)
    assert "Paris" in tokenizer.decode(output[0, ids.shape[1]:])


def test_llm_is_frozen_in_eval_mode_fp32(tiny_folder: Path, tmp_path: Path) -> None:
    model, _ = load_llm(LLMConfig(model=str(tiny_folder)), tmp_path)
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training
    assert model.get_input_embeddings().weight.dtype == torch.float32
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("lora", [LoraSettings(), LoraSettings(rank=4, alpha=8, target_modules=list(TINY_SHAPES))])
def test_lora_trains_only_adapters(tiny_folder: Path, tmp_path: Path, lora: LoraSettings) -> None:
    model, _ = load_llm(LLMConfig(model=str(tiny_folder), lora=lora), tmp_path)
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    expected = TINY["num_hidden_layers"] * sum(lora.rank * sum(TINY_SHAPES[m]) for m in lora.target_modules)
    assert all("lora_" in name for name in trainable)
    assert sum(p.numel() for p in trainable.values()) == expected

    ids = torch.tensor([[5, 6, 7, 8]])
    model.train()
    model(inputs_embeds=model.get_input_embeddings()(ids), labels=ids).loss.backward()
    assert all(p.grad is not None for name, p in trainable.items() if "lora_B" in name)
    assert not any(p.grad is not None for p in model.parameters() if not p.requires_grad)


def _render(tokenizer: PreTrainedTokenizerBase, system_prompt: str, content: str) -> str:
    messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": content}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("system_prompt", ["", "You transcribe speech."])
def test_prompt_is_the_chat_template_split_at_the_speech(tokenizer: PreTrainedTokenizerBase,
                                                         system_prompt: str) -> None:
    prompt = build_prompt(tokenizer, "Transcribe the speech.", system_prompt)
    decoded = tokenizer.decode(prompt.prefix_ids + prompt.suffix_ids)
    assert decoded == _render(tokenizer, system_prompt, "Transcribe the speech.\n")
    assert tokenizer.decode(prompt.prefix_ids).endswith("Transcribe the speech.\n")
    assert tokenizer.decode(prompt.suffix_ids).startswith("<|im_end|>")


def test_prompt_without_system_prompt_has_no_system_turn(tokenizer: PreTrainedTokenizerBase) -> None:
    """SmolLM2's template injects a default system turn when none is given; None must remove it."""
    bare = build_prompt(tokenizer, "Transcribe the speech.", None)
    empty = build_prompt(tokenizer, "Transcribe the speech.", "")
    prefix = tokenizer.decode(bare.prefix_ids)
    assert "You are" not in prefix and "system" not in prefix
    assert prefix + tokenizer.decode(bare.suffix_ids) == (
        "<|im_start|>user\nTranscribe the speech.\n<|im_end|>\n<|im_start|>assistant\n")
    assert bare.suffix_ids == empty.suffix_ids
    assert len(bare.prefix_ids) < len(empty.prefix_ids)


def test_prompt_with_no_instruction_holds_only_the_speech(tokenizer: PreTrainedTokenizerBase) -> None:
    prompt = build_prompt(tokenizer, "  ", None)
    assert tokenizer.decode(prompt.prefix_ids) == "<|im_start|>user\n"


def test_target_ends_with_end_of_turn(tokenizer: PreTrainedTokenizerBase) -> None:
    ids = target_ids(tokenizer, "the cat sat on the mat.")
    assert ids[-1] == end_of_turn_id(tokenizer) == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.decode(ids[:-1]) == "the cat sat on the mat."


@pytest.mark.parametrize(("config", "named"), [
    ({"model": "{tmp}/no-such-folder"}, "no-such-folder"),
    ({"model": "{tmp}/missing.gguf"}, "missing.gguf"),
    ({"model": "{tmp}", "gguf_file": "missing.Q4.gguf"}, "missing.Q4.gguf"),
    ({"model": "smollm3-typo"}, "smollm3-typo"),
])
def test_user_errors_name_the_value(tmp_path: Path, config: dict[str, str], named: str) -> None:
    resolved = {key: value.format(tmp=tmp_path) for key, value in config.items()}
    with pytest.raises(SpeechLLMError, match=named):
        load_llm(LLMConfig(**resolved), tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_cache_folder_follows_the_gguf_identity(tmp_path: Path) -> None:
    gguf = tmp_path / "model.Q4.gguf"
    gguf.write_bytes(b"GGUF")
    first = cache_folder(gguf, tmp_path / "cache")
    assert cache_folder(gguf, tmp_path / "cache") == first
    assert first.name.startswith("model.Q4-")
    stat = gguf.stat()
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert cache_folder(gguf, tmp_path / "cache") != first
