"""The complete Whisper (encoder and decoder, frozen) as a label-synchronous front end: ``whisper-tokens``.

A CTC head trained here on a few hours of synthesized speech spells what it hears in 256 small units, and
the LLM cannot read a question spelt that way (recipes/mini/RESULTS.md: 0.5-1 % of spoken questions
answered even from clean units). Whisper's own decoder already writes word-sized pieces, one position per
piece, from far more speech than any recipe here has. This encoder exposes its per-step posteriors through
the same contract as the CTC encoders, so LSD, calibration, the simulations, every align mode and decode
work on it unchanged:

- The units are an inventory of Whisper's word pieces, case folded (``" Paris"`` and ``" paris"`` are one
  unit): the first ``units`` distinct lowercased pieces of letters and apostrophes in Whisper's merge order,
  the most frequent first. Decoding is greedy and restricted to the inventory's pieces and the end of text,
  so no probability is spent on punctuation or case the transcripts never hold; a unit's probability is the
  sum of its pieces'.
- Each decoded piece is one frame; the blank never wins except on one frame put between two equal pieces,
  so CTC collapsing and LSD keep a repeated word ("no no").
- Text becomes units by the longest inventory piece first, word by word (a word starts with its space).

Nothing trains: ``train-encoder`` saves it as it is (weights included, so the folder is self-contained).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import torch

from speechllm_cli.common.config import validate
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import atomic_dir
from speechllm_cli.core.configs import WhisperTokensConfig
from speechllm_cli.core.encoders.base import BLANK_ID, CTCEncoder, EncoderOutput
from speechllm_cli.core.encoders.saved_folder import CONFIG_FILE, read_config
from speechllm_cli.core.whisper_asr import checked_language

MODEL_TYPE = "whisper-tokens"
WHISPER_FOLDER = "whisper"
WORD_PIECE = re.compile(r"^ ?[A-Za-z']+$")
LOG_ZERO = -30.0
"""The log-probability written for an impossible unit (the blank on a decoded piece)."""


def piece_inventory(tokenizer: Any, size: int) -> tuple[list[str], dict[int, int]]:
    """The first ``size`` distinct lowercased word pieces in Whisper's id (merge) order, and each Whisper id
    whose lowercased text is one of them -> its unit id (1-based: 0 is the blank)."""
    units: dict[str, int] = {}
    members: dict[int, int] = {}
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        if not WORD_PIECE.match(text):
            continue
        key = text.lower()
        if key not in units:
            if len(units) == size:
                continue
            units[key] = len(units) + 1
        members[token_id] = units[key]
    return list(units), members


def _load_whisper(source: str) -> tuple[Any, Any]:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from speechllm_cli.core.whisper_packages import resolve_whisper

    location = resolve_whisper(source)
    try:
        # Every window is a full 30 s (the feature extractor pads), so no mask needs eager attention; the fused
        # kernel runs the encoder's 1,500-frame attention about twice as fast on a CPU, the same pieces decoded.
        model = WhisperForConditionalGeneration.from_pretrained(location, attn_implementation="sdpa")
        processor = WhisperProcessor.from_pretrained(location)
    except (OSError, ValueError) as exc:
        raise SpeechLLMError(f"whisper-tokens: cannot load Whisper {source!r}: {str(exc).splitlines()[0]}") from None
    return model, processor


class WhisperTokens(CTCEncoder):
    config_class = WhisperTokensConfig
    model_type = MODEL_TYPE

    def __init__(self, config: WhisperTokensConfig, whisper: Any, processor: Any) -> None:
        super().__init__()
        self.config = config
        self.whisper = whisper.eval()
        for param in self.whisper.parameters():
            param.requires_grad = False
        self.processor = processor
        tokenizer = processor.tokenizer
        keys, members = piece_inventory(tokenizer, config.units)
        self._units = ["<blank>", *keys]
        self._pieces = {key: index + 1 for index, key in enumerate(keys)}
        self._longest = max(map(len, keys), default=1)
        end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        self.register_buffer("columns", torch.tensor([*members, end]), persistent=False)
        self.register_buffer("column_unit", torch.tensor(list(members.values())), persistent=False)
        self.prompt = self._prompt(tokenizer)

    def _prompt(self, tokenizer: Any) -> list[int]:
        """Start of transcript, then language and task for a multilingual model, then no timestamps."""
        language = checked_language("whisper-tokens", self.config.whisper, self.config.language,
                                    self.whisper.generation_config, "train_encoder.model.language")
        names = ["<|startoftranscript|>", *([f"<|{language}|>", "<|transcribe|>"] if language else []),
                 "<|notimestamps|>"]
        ids = tokenizer.convert_tokens_to_ids(names)
        unknown = [name for name, i in zip(names, ids, strict=True) if i is None or i == tokenizer.unk_token_id]
        if unknown:
            raise SpeechLLMError(f"whisper-tokens: {self.config.whisper} has no token {unknown[0]}")
        return ids

    @classmethod
    def from_config(cls, config: WhisperTokensConfig, **kwargs: Any) -> Self:
        """``kwargs`` (the tokenizer the encoders trained here take) are not needed: the units are Whisper's."""
        return cls(config, *_load_whisper(config.whisper))

    @classmethod
    def load(cls, folder: str | Path, map_location: str | torch.device = "cpu", **settings: Any) -> Self:
        """A folder :meth:`save` wrote, or (as ``train-encoder``'s ``source``) a Whisper alias, folder or hub id
        with this encoder's settings."""
        path = Path(folder)
        if (path / CONFIG_FILE).is_file() and (path / WHISPER_FOLDER).is_dir():
            config = read_config(path, MODEL_TYPE, WhisperTokensConfig)
            whisper, processor = _load_whisper(str(path / WHISPER_FOLDER))
        else:
            config = validate(WhisperTokensConfig, {**settings, "whisper": str(folder)}, "whisper-tokens source")
            whisper, processor = _load_whisper(config.whisper)
        return cls(config, whisper, processor).to(map_location).eval()

    def save(self, folder: Path) -> None:
        with atomic_dir(Path(folder)) as tmp:
            data = {"model_type": MODEL_TYPE, **self.config.model_dump(mode="json")}
            (tmp / CONFIG_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
            self.whisper.save_pretrained(tmp / WHISPER_FOLDER)
            self.processor.save_pretrained(tmp / WHISPER_FOLDER)

    @property
    def vocab_size(self) -> int:
        return len(self._units)

    def units(self) -> list[str]:
        return list(self._units)

    def ids_to_text(self, ids: Sequence[int]) -> str:
        return "".join(self._units[i] for i in ids if i != BLANK_ID).strip()

    def text_to_ids(self, text: str, lang: str = "en") -> list[int]:
        """Longest inventory piece first; a character no piece covers (not a letter or apostrophe) is skipped."""
        ids: list[int] = []
        for word in text.lower().split():
            rest = " " + word
            while rest:
                for end in range(min(len(rest), self._longest), 0, -1):
                    unit = self._pieces.get(rest[:end])
                    if unit is not None:
                        ids.append(unit)
                        rest = rest[end:]
                        break
                else:
                    rest = rest[1:]
        return ids

    def output_layer(self) -> torch.nn.Linear:
        """Whisper's output projection read at each unit's first piece; the blank row never wins."""
        weight = self.whisper.proj_out.weight.detach()
        layer = torch.nn.Linear(weight.shape[1], self.vocab_size)
        first: dict[int, int] = {}
        for column, unit in zip(self.columns[:-1].tolist(), self.column_unit.tolist(), strict=True):
            first.setdefault(unit, column)
        with torch.no_grad():
            layer.weight.zero_()
            layer.bias.zero_()
            rows = torch.tensor(list(first.values()), device=weight.device)
            layer.weight[torch.tensor(list(first))] = weight[rows].to(layer.weight)
            layer.bias[BLANK_ID] = LOG_ZERO
        return layer

    def _features(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        waves = [wave[: int(n)].float().cpu().numpy() for wave, n in zip(waveforms, lengths, strict=True)]
        seconds = max(int(n) for n in lengths) / self.sample_rate if len(lengths) else 0.0
        if seconds > 30.0:
            raise SpeechLLMError(f"whisper-tokens: {seconds:.1f} s of audio exceeds Whisper's 30 s window; "
                                 "segment it first")
        features = self.processor.feature_extractor(waves, sampling_rate=self.sample_rate, return_tensors="pt")
        return features.input_features.to(self.device, self.whisper.dtype)

    def encode(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        """Greedy decoding over the inventory: one frame per piece (a blank frame between two equal ones)."""
        batch = len(lengths)
        with torch.no_grad():
            encoded = self.whisper.model.encoder(self._features(waveforms, lengths)).last_hidden_state
            step = torch.tensor([self.prompt] * batch, device=self.device)
            done = torch.zeros(batch, dtype=torch.bool, device=self.device)
            rows: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(batch)]
            past = None
            for _ in range(self.config.max_tokens):
                out = self.whisper.model.decoder(input_ids=step, encoder_hidden_states=encoded, past_key_values=past,
                                                 use_cache=True)
                past = out.past_key_values
                states = out.last_hidden_state[:, -1].float()
                probs = torch.softmax(self.whisper.proj_out(out.last_hidden_state[:, -1])[:, self.columns].float(), -1)
                best = probs.argmax(dim=-1)
                ended = best == len(self.columns) - 1
                units = torch.zeros(batch, self.vocab_size, device=self.device)
                units.index_add_(1, self.column_unit, probs[:, :-1])
                units = units / units.sum(dim=1, keepdim=True).clamp(min=1e-12)
                for row in torch.nonzero(~done & ~ended).flatten().tolist():
                    rows[row].append((units[row], states[row]))
                done |= ended
                if bool(done.all()):
                    break
                step = self.columns[best][:, None]
        return self._output(rows, encoded.shape[-1])

    def _output(self, rows: list[list[tuple[torch.Tensor, torch.Tensor]]], width: int) -> EncoderOutput:
        framed = [self._separated(row, width) for row in rows]
        lengths = torch.tensor([len(probs) for probs, _ in framed], dtype=torch.long)
        longest = max(int(lengths.max()), 1) if len(lengths) else 1
        probs = torch.zeros(len(rows), longest, self.vocab_size, device=self.device)
        probs[:, :, BLANK_ID] = 1.0
        hidden = torch.zeros(len(rows), longest, width, device=self.device)
        for b, (row_probs, row_hidden) in enumerate(framed):
            probs[b, : len(row_probs)] = row_probs
            hidden[b, : len(row_hidden)] = row_hidden
        return EncoderOutput(probs.clamp(min=math.exp(LOG_ZERO)).log(), lengths, hidden)

    def _separated(self, row: list[tuple[torch.Tensor, torch.Tensor]],
                   width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The row's frames with a blank frame between two frames of the same best unit."""
        probs, hidden, previous = [], [], None
        blank = torch.zeros(self.vocab_size, device=self.device)
        blank[BLANK_ID] = 1.0
        for unit_probs, state in row:
            best = int(unit_probs.argmax())
            if best == previous:
                probs.append(blank)
                hidden.append(torch.zeros(width, device=self.device))
            probs.append(unit_probs)
            hidden.append(state)
            previous = best
        if not probs:
            return torch.zeros(0, self.vocab_size), torch.zeros(0, width)
        return torch.stack(probs), torch.stack(hidden)
