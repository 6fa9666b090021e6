"""Any Hugging Face ``AutoModelForCTC`` checkpoint (wav2vec2, HuBERT, WavLM, Parakeet, ...) as a CTC encoder.

Three things make such a model fit the shared contract:

- Blank to id 0. HF CTC models use the pad token as blank, wherever the vocabulary puts it. The
  posterior columns are reordered to ``[blank, every other id in order]`` and the units listed in the
  same order, so blank is 0 here and every other unit keeps its relative order.
- Correct output lengths. The model's own length arithmetic (its feature-extractor or subsampling
  convolutions) maps each utterance's input length to its number of valid output frames.
- Padding that changes nothing. Models trained with attention masks (their feature extractor says
  ``return_attention_mask``) get one; models that cannot mask padding (wav2vec2-base style group
  norm over time) are run one utterance at a time unless ``exact_padding`` is turned off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import torch
import torchaudio

from speechllm_cli.common.config import validate
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import atomic_dir
from speechllm_cli.core.configs import HFCTCConfig
from speechllm_cli.core.encoders.base import CTCEncoder, EncoderOutput

LENGTH_FUNCTIONS = ("_get_feat_extract_output_lengths", "_get_subsampling_output_length")
"""Names under which transformers' CTC models expose input-length -> output-frames arithmetic."""


def _blank_id(model_config: Any, tokenizer: Any) -> int:
    """The CTC blank: the pad id, on which the model config and tokenizer must agree."""
    model_blank = getattr(model_config, "pad_token_id", None)
    token_blank = tokenizer.pad_token_id
    if model_blank is None and token_blank is None:
        raise SpeechLLMError("hf-ctc: neither the model config nor the tokenizer names a pad (blank) token")
    if model_blank is not None and token_blank is not None and model_blank != token_blank:
        raise SpeechLLMError(f"hf-ctc: model pad_token_id {model_blank} and tokenizer pad id {token_blank} "
                             "disagree, so the CTC blank is ambiguous")
    return model_blank if model_blank is not None else token_blank


def _length_function(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    for name in LENGTH_FUNCTIONS:
        function = getattr(model, name, None)
        if function is not None:
            return function
    raise SpeechLLMError(f"hf-ctc: {type(model).__name__} exposes no output-length function "
                         f"({', '.join(LENGTH_FUNCTIONS)}), so its valid frames are unknown")


class HFCTCEncoder(CTCEncoder):
    config_class = HFCTCConfig

    def __init__(self, model: torch.nn.Module, processor: Any, exact_padding: bool = True) -> None:
        """``processor`` bundles the feature extractor and the CTC tokenizer (e.g. a ``Wav2Vec2Processor``)."""
        super().__init__()
        self.model = model
        self.processor = processor
        self.feature_extractor = getattr(processor, "feature_extractor", processor)
        self.tokenizer = getattr(processor, "tokenizer", None)
        if self.tokenizer is None:
            raise SpeechLLMError("hf-ctc: the processor has no tokenizer, so output ids have no units")
        self.exact_padding = exact_padding
        self._output_lengths = _length_function(model)
        blank = _blank_id(model.config, self.tokenizer)
        self._to_hf = [blank, *(i for i in range(model.config.vocab_size) if i != blank)]
        self.register_buffer("_columns", torch.tensor(self._to_hf), persistent=False)

    @classmethod
    def from_config(cls, config: HFCTCConfig) -> Self:
        from transformers import AutoModelForCTC, AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(config.source)
            model = AutoModelForCTC.from_pretrained(config.source)
        except (OSError, ValueError) as exc:
            raise SpeechLLMError(f"hf-ctc: cannot load {config.source!r}: {exc}") from None
        return cls(model.eval(), processor, exact_padding=config.exact_padding)

    @classmethod
    def load(cls, folder: str | Path, **kwargs: Any) -> Self:
        return cls.from_config(validate(HFCTCConfig, {"source": str(folder), **kwargs}, "hf-ctc"))

    def save(self, folder: Path) -> None:
        """The model and processor as a plain Hugging Face folder (loads with ``from_pretrained`` too)."""
        with atomic_dir(Path(folder)) as tmp:
            self.model.save_pretrained(tmp)
            self.processor.save_pretrained(tmp)

    @property
    def vocab_size(self) -> int:
        return len(self._to_hf)

    def output_layer(self) -> torch.nn.Linear:
        """The model's ``lm_head`` (what reads ``output_hidden_states[-1]``), its rows moved blank-first."""
        head = getattr(self.model, "lm_head", None)
        if not isinstance(head, torch.nn.Linear):
            raise SpeechLLMError(f"hf-ctc: {type(self.model).__name__} has no linear lm_head to read hidden states")
        layer = torch.nn.Linear(head.in_features, self.vocab_size, bias=head.bias is not None)
        with torch.no_grad():
            layer.weight.copy_(head.weight.index_select(0, self._columns.to(head.weight.device)))
            if head.bias is not None:
                layer.bias.copy_(head.bias.index_select(0, self._columns.to(head.bias.device)))
        return layer

    def units(self) -> list[str]:
        known = len(self.tokenizer)
        return [self.tokenizer.convert_ids_to_tokens(hf_id) if hf_id < known else f"<unused{hf_id}>"
                for hf_id in self._to_hf]

    def ids_to_text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([self._to_hf[i] for i in ids], group_tokens=False)

    def text_to_ids(self, text: str, lang: str = "en") -> list[int]:
        """Tokenise in the casing the vocabulary uses (English wav2vec2 vocabularies are upper-case)."""
        ours = {hf_id: i for i, hf_id in enumerate(self._to_hf)}
        unk = self.tokenizer.unk_token_id
        candidates = [self.tokenizer(variant).input_ids for variant in (text, text.upper(), text.lower())]
        best = min(candidates, key=lambda ids: sum(i == unk for i in ids))
        return [ours[i] for i in best if ours.get(i, 0) != 0]

    @property
    def _masks_padding(self) -> bool:
        return bool(getattr(self.feature_extractor, "return_attention_mask", True))

    def encode(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        audio = [wave[: int(n)].float().cpu() for wave, n in zip(waveforms, lengths, strict=True)]
        if self._masks_padding or not self.exact_padding:
            return self._run(audio)
        return _stack([self._run([wave]) for wave in audio])

    def _features(self, audio: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        rate = self.feature_extractor.sampling_rate
        if rate != self.sample_rate:
            audio = [torchaudio.functional.resample(wave, self.sample_rate, rate) for wave in audio]
        inputs = self.feature_extractor([wave.numpy() for wave in audio], sampling_rate=rate, padding=True,
                                        return_attention_mask=True, return_tensors="pt")
        if "attention_mask" not in inputs:
            raise SpeechLLMError(f"hf-ctc: {type(self.feature_extractor).__name__} gives no attention mask, "
                                 "so input lengths are unknown")
        return dict(inputs)

    def _run(self, audio: list[torch.Tensor]) -> EncoderOutput:
        inputs = self._features(audio)
        input_lengths = inputs["attention_mask"].sum(dim=-1).to(self.device)
        if not self._masks_padding:
            del inputs["attention_mask"]
        dtype = next(self.model.parameters()).dtype
        inputs = {name: value.to(self.device, dtype=dtype if value.is_floating_point() else value.dtype)
                  for name, value in inputs.items()}
        outputs = self.model(**inputs, output_hidden_states=True)
        logits = outputs.logits
        if logits.shape[-1] != len(self._to_hf):
            raise SpeechLLMError(f"hf-ctc: the model outputs {logits.shape[-1]} units but its config says "
                                 f"{len(self._to_hf)}")
        log_probs = torch.log_softmax(logits.float(), dim=-1).index_select(-1, self._columns)
        frames = self._output_lengths(input_lengths).long().clamp(max=logits.shape[1])
        return EncoderOutput(log_probs, frames, outputs.hidden_states[-1].float())


def _stack(outputs: list[EncoderOutput]) -> EncoderOutput:
    """One batch from single-utterance outputs of different lengths."""
    def padded(field: str) -> torch.Tensor:
        return torch.nn.utils.rnn.pad_sequence([row for output in outputs for row in getattr(output, field)],
                                               batch_first=True)

    return EncoderOutput(padded("log_probs"), torch.cat([output.lengths for output in outputs]), padded("hidden"))
