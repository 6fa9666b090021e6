"""The project's own small Conformer-CTC encoder, for corpora with no pretrained CTC model.

Written here rather than taken from ``torchaudio.models.Conformer`` because that one lets padded frames
leak into real ones through its depthwise convolution (a padded batch gives other posteriors than
each utterance alone). Here every stage is padding-exact: the subsampling convolutions do not pad in
time, attention masks padded keys, and the depthwise convolution sees zeros beyond each utterance,
exactly what it would see at the utterance's own end. Normalisation is LayerNorm throughout (no
batch statistics). Positions are absolute sinusoids added after subsampling; relative position comes
from the convolutions.

Output units are the ids of the project's sentencepiece tokenizer (id 0 = ``<blk>``), which is saved
with the weights as ``tokenizer.model``.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Self

import torch

from speechllm_cli.common.io import atomic_dir
from speechllm_cli.core.configs import ConformerCTCConfig
from speechllm_cli.core.encoders.base import CTCEncoder, EncoderOutput
from speechllm_cli.core.encoders.saved_folder import load_weights, read_config, write_model
from speechllm_cli.core.encoders.sentencepiece_units import SentencePieceUnits
from speechllm_cli.core.features import SpecAugment, fbank, normalize, valid_mask

MODEL_TYPE = "conformer-ctc"


def _halve(lengths: torch.Tensor) -> torch.Tensor:
    """Frames left by a kernel-3, stride-2 convolution without padding."""
    return ((lengths - 1) // 2).clamp(min=0)


class Subsampling(torch.nn.Module):
    """Two stride-2 3x3 convolutions: 4x fewer frames (40 ms each).

    No padding in time, so every output frame counted in the output lengths is computed from valid
    input frames only.
    """

    MIN_FRAMES = 7
    """Input frames the two convolutions need to produce a single output frame."""

    def __init__(self, n_mels: int, d_model: int) -> None:
        super().__init__()
        self.convs = torch.nn.Sequential(
            torch.nn.Conv2d(1, d_model, 3, stride=2), torch.nn.ReLU(),
            torch.nn.Conv2d(d_model, d_model, 3, stride=2), torch.nn.ReLU())
        bins = ((n_mels - 1) // 2 - 1) // 2
        self.out = torch.nn.Linear(d_model * bins, d_model)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return _halve(_halve(lengths))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        short = self.MIN_FRAMES - feats.shape[1]
        if short > 0:
            feats = torch.nn.functional.pad(feats, (0, 0, 0, short))
        x = self.convs(feats.unsqueeze(1))
        batch, channels, frames, bins = x.shape
        return self.out(x.transpose(1, 2).reshape(batch, frames, channels * bins))


def sinusoids(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """Absolute sinusoidal position codes [length, dim] (Vaswani et al., 2017)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    codes = torch.zeros(length, dim, device=device)
    codes[:, 0::2] = torch.sin(position * rate)
    codes[:, 1::2] = torch.cos(position * rate)
    return codes


class FeedForward(torch.nn.Module):
    def __init__(self, d_model: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.LayerNorm(d_model), torch.nn.Linear(d_model, ff_dim), torch.nn.SiLU(),
            torch.nn.Dropout(dropout), torch.nn.Linear(ff_dim, d_model), torch.nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SelfAttention(torch.nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm = torch.nn.LayerNorm(d_model)
        self.qkv = torch.nn.Linear(d_model, 3 * d_model)
        self.out = torch.nn.Linear(d_model, d_model)
        self.drop = torch.nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, frames, dim = x.shape
        q, k, v = self.qkv(self.norm(x)).view(batch, frames, 3, self.heads, dim // self.heads).unbind(dim=2)
        attended = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0)
        return self.drop(self.out(attended.transpose(1, 2).reshape(batch, frames, dim)))


class ConvModule(torch.nn.Module):
    """Pointwise-GLU, depthwise convolution over time, pointwise; padded frames zeroed before the depthwise step."""

    def __init__(self, d_model: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(d_model)
        self.expand = torch.nn.Linear(d_model, 2 * d_model)
        self.depthwise = torch.nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.depth_norm = torch.nn.LayerNorm(d_model)
        self.project = torch.nn.Linear(d_model, d_model)
        self.drop = torch.nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        gated = torch.nn.functional.glu(self.expand(self.norm(x)), dim=-1)
        gated = gated.masked_fill(~mask[..., None], 0.0)
        mixed = self.depthwise(gated.transpose(1, 2)).transpose(1, 2)
        return self.drop(self.project(torch.nn.functional.silu(self.depth_norm(mixed))))


class ConformerBlock(torch.nn.Module):
    """Macaron feed-forwards around attention and convolution (Gulati et al., 2020)."""

    def __init__(self, config: ConformerCTCConfig) -> None:
        super().__init__()
        self.ff1 = FeedForward(config.d_model, config.ff_dim, config.dropout)
        self.attention = SelfAttention(config.d_model, config.heads, config.dropout)
        self.conv = ConvModule(config.d_model, config.conv_kernel, config.dropout)
        self.ff2 = FeedForward(config.d_model, config.ff_dim, config.dropout)
        self.norm = torch.nn.LayerNorm(config.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.attention(x, mask)
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x)


class ConformerCTC(SentencePieceUnits, CTCEncoder):
    config_class = ConformerCTCConfig
    model_type = MODEL_TYPE

    def __init__(self, config: ConformerCTCConfig, tokenizer: str | Path | bytes | None = None) -> None:
        """``tokenizer`` is a sentencepiece model file (or its bytes) whose ids are the output units."""
        super().__init__()
        self._init_units(tokenizer)
        self.config = config.model_copy(update={"vocab_size": self.resolve_vocab(config.vocab_size)})
        self.spec_augment = SpecAugment(self.config.spec_augment)
        self.subsampling = Subsampling(self.config.n_mels, self.config.d_model)
        self.input_drop = torch.nn.Dropout(self.config.dropout)
        self.blocks = torch.nn.ModuleList(ConformerBlock(self.config) for _ in range(self.config.layers))
        self.head = torch.nn.Linear(self.config.d_model, self.config.vocab_size)

    @classmethod
    def from_config(cls, config: ConformerCTCConfig, tokenizer: str | Path | bytes | None = None) -> Self:
        return cls(config, tokenizer)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def output_layer(self) -> torch.nn.Linear:
        return copy.deepcopy(self.head)

    def encode(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        feats, frames = fbank(waveforms, lengths, self.config.n_mels)
        feats = self.spec_augment(normalize(feats, frames), frames)
        x = self.subsampling(feats)
        out_lengths = Subsampling.output_lengths(frames)
        mask = valid_mask(out_lengths, x.shape[1])
        x = self.input_drop(x + sinusoids(x.shape[1], x.shape[2], x.device))
        for block in self.blocks:
            x = block(x, mask)
        return EncoderOutput(torch.log_softmax(self.head(x).float(), dim=-1), out_lengths, x)

    def save(self, folder: Path) -> None:
        """``config.json`` + ``model.safetensors`` (+ ``tokenizer.model``), Hugging Face style."""
        with atomic_dir(Path(folder)) as tmp:
            write_model(tmp, MODEL_TYPE, self.config, self)
            self.save_tokenizer(tmp)

    @classmethod
    def load(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> Self:
        folder = Path(folder)
        model = cls(read_config(folder, MODEL_TYPE, ConformerCTCConfig), cls.saved_tokenizer(folder))
        load_weights(model, folder, map_location)
        return model.eval()
