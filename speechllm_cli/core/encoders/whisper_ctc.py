"""A pretrained Whisper encoder with a CTC head over the recipe's units: ``whisper-ctc``.

No English CTC model installs here, but Whisper does; its encoder already knows speech, so only a small
head has to learn the recipe's units from a few hours of speech. The encoder is run at each utterance's
real length rather than padded to 30 s (Hugging Face's ``WhisperEncoder.forward`` insists on 3000
frames): the convolutions and layers are called directly and the positional table is sliced to the
length, as SLAM-LLM does. Every step is padding-exact, so a batch gives each utterance the posteriors
it would get alone: log-mel is computed per utterance, activations beyond an utterance are zeroed
before each convolution, and attention masks padded keys.

The model splits into a frozen *front* (features, convolutions and the frozen layers) and a trainable
*head* (the top ``trainable_layers`` Whisper layers, if any, then the CTC head), so training can cache
the front's outputs once and spend every epoch on the head alone.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Self

import torch

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import atomic_dir
from speechllm_cli.core.configs import ConformerCTCConfig, WhisperCTCConfig
from speechllm_cli.core.encoders.base import EncoderOutput, FrozenFrontEncoder
from speechllm_cli.core.encoders.conformer_ctc import ConformerBlock
from speechllm_cli.core.encoders.saved_folder import load_weights, read_config, write_model
from speechllm_cli.core.encoders.sentencepiece_units import SentencePieceUnits
from speechllm_cli.core.features import valid_mask

MODEL_TYPE = "whisper-ctc"
WHISPER_CONFIG_FILE = "whisper_config.json"
N_FFT = 400
HOP = 160
MIN_SAMPLES = N_FFT + 1
"""The centred STFT reflects 200 samples at each edge, so shorter input is zero-padded up to this."""


def whisper_log_mel(wave: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Whisper's log-mel features [frames, n_mels] of one utterance, computed on its own samples."""
    if len(wave) < MIN_SAMPLES:
        wave = torch.nn.functional.pad(wave, (0, MIN_SAMPLES - len(wave)))
    window = torch.hann_window(N_FFT, device=wave.device)
    spectrum = torch.stft(wave.float(), N_FFT, HOP, window=window, return_complex=True)
    mel = filters.T @ (spectrum[..., :-1].abs() ** 2)
    log = torch.clamp(mel, min=1e-10).log10()
    log = torch.maximum(log, log.max() - 8.0)
    return ((log + 4.0) / 4.0).T


def _extended_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, T] validity -> the additive [B, 1, 1, T] mask Whisper's attention layers take."""
    return (~mask)[:, None, None, :].to(dtype) * torch.finfo(dtype).min


def _load_whisper_encoder(source: str) -> torch.nn.Module:
    from transformers import WhisperModel

    from speechllm_cli.core.whisper_packages import resolve_whisper

    location = resolve_whisper(source)
    try:
        model = WhisperModel.from_pretrained(location, attn_implementation="eager")
    except (OSError, ValueError) as exc:
        raise SpeechLLMError(f"whisper-ctc: cannot load Whisper {source!r}: {str(exc).splitlines()[0]}") from None
    return model.get_encoder()


class WhisperCTC(SentencePieceUnits, FrozenFrontEncoder):
    config_class = WhisperCTCConfig
    model_type = MODEL_TYPE

    def __init__(self, config: WhisperCTCConfig, whisper: torch.nn.Module,
                 tokenizer: str | Path | bytes | None = None) -> None:
        """``whisper`` is a Hugging Face ``WhisperEncoder``; ``tokenizer`` a sentencepiece model for the units."""
        from transformers import WhisperFeatureExtractor

        super().__init__()
        self._init_units(tokenizer)
        self.config = config.model_copy(update={"vocab_size": self.resolve_vocab(config.vocab_size)})
        layers = len(whisper.layers)
        if config.trainable_layers > layers:
            raise SpeechLLMError(f"whisper-ctc: trainable_layers {config.trainable_layers} exceeds the "
                                 f"{layers} layers of {config.whisper}")
        self.whisper = whisper
        self.frozen_layers = layers - config.trainable_layers
        filters = WhisperFeatureExtractor(feature_size=whisper.config.num_mel_bins).mel_filters
        self.register_buffer("mel_filters", torch.tensor(filters, dtype=torch.float32), persistent=False)
        for name, param in whisper.named_parameters():
            param.requires_grad = self._in_head(name)
        head = config.head
        block = ConformerCTCConfig(vocab_size=self.config.vocab_size, d_model=head.d_model, layers=max(head.layers, 1),
                                   heads=head.heads, ff_dim=head.ff_dim, conv_kernel=head.conv_kernel,
                                   dropout=head.dropout)
        self.project = torch.nn.Linear(whisper.config.d_model, head.d_model)
        self.input_drop = torch.nn.Dropout(head.dropout)
        self.blocks = torch.nn.ModuleList(ConformerBlock(block) for _ in range(head.layers))
        self.out = torch.nn.Linear(head.d_model, self.config.vocab_size)

    def _in_head(self, name: str) -> bool:
        """Whether a Whisper parameter trains: the top layers, and the final norm when any layer trains."""
        if name.startswith("layers."):
            return int(name.split(".")[1]) >= self.frozen_layers
        return name.startswith("layer_norm.") and self.config.trainable_layers > 0

    @classmethod
    def from_config(cls, config: WhisperCTCConfig, tokenizer: str | Path | bytes | None = None) -> Self:
        return cls(config, _load_whisper_encoder(config.whisper), tokenizer)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def output_layer(self) -> torch.nn.Linear:
        return copy.deepcopy(self.out)

    @property
    def front_is_frozen(self) -> bool:
        return True

    def train(self, mode: bool = True) -> Self:
        """The frozen Whisper layers stay in eval mode (no dropout), so cached front outputs stay valid."""
        super().train(mode)
        if mode:
            for layer in self.whisper.layers[: self.frozen_layers]:
                layer.eval()
        return self

    def front(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        whisper = self.whisper
        feats = [whisper_log_mel(wave[: int(n)], self.mel_filters) for wave, n in zip(waveforms, lengths, strict=True)]
        frames = torch.tensor([len(f) for f in feats], device=waveforms.device)
        x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).transpose(1, 2)
        x = torch.nn.functional.gelu(whisper.conv1(x))
        x = x.masked_fill(~valid_mask(frames, x.shape[2])[:, None, :], 0.0)
        x = torch.nn.functional.gelu(whisper.conv2(x)).transpose(1, 2)
        out_lengths = (frames - 1) // 2 + 1
        positions = whisper.embed_positions.weight
        if x.shape[1] > positions.shape[0]:
            seconds = x.shape[1] * 2 * HOP / self.sample_rate
            raise SpeechLLMError(f"whisper-ctc: {seconds:.1f} s of audio exceeds Whisper's "
                                 f"{positions.shape[0] * 2 * HOP / self.sample_rate:.0f} s window; segment it first")
        x = x + positions[: x.shape[1]]
        return self._layers(x, out_lengths, whisper.layers[: self.frozen_layers]), out_lengths

    def _layers(self, x: torch.Tensor, lengths: torch.Tensor, layers: Any) -> torch.Tensor:
        mask = valid_mask(lengths, x.shape[1])
        extended = _extended_mask(mask, x.dtype)
        for layer in layers:
            x = layer(x, extended)
        return x.masked_fill(~mask[..., None], 0.0)

    def head(self, states: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        x = self._layers(states, lengths, self.whisper.layers[self.frozen_layers:])
        x = self.whisper.layer_norm(x)
        mask = valid_mask(lengths, x.shape[1])
        x = self.input_drop(self.project(x)).masked_fill(~mask[..., None], 0.0)
        for block in self.blocks:
            x = block(x, mask)
        return EncoderOutput(torch.log_softmax(self.out(x).float(), dim=-1), lengths, x)

    def save(self, folder: Path) -> None:
        """Self-contained: the Whisper encoder's config and weights travel with the head."""
        with atomic_dir(Path(folder)) as tmp:
            write_model(tmp, MODEL_TYPE, self.config, self)
            (tmp / WHISPER_CONFIG_FILE).write_text(self.whisper.config.to_json_string(), encoding="utf-8")
            self.save_tokenizer(tmp)

    @classmethod
    def load(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> Self:
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        folder = Path(folder)
        config = read_config(folder, MODEL_TYPE, WhisperCTCConfig, WHISPER_CONFIG_FILE)
        whisper_config = WhisperConfig.from_json_file(str(folder / WHISPER_CONFIG_FILE))
        whisper_config._attn_implementation = "eager"
        model = cls(config, WhisperEncoder(whisper_config), cls.saved_tokenizer(folder))
        load_weights(model, folder, map_location)
        return model.eval()
