"""Acoustic features for encoders that take raw waveforms: log-mel fbank, normalisation, SpecAugment.

Everything works on a padded batch plus per-utterance lengths, and is written so that padding never
changes a real frame: fbank is computed on each utterance's own samples, statistics only cover valid
frames, and masks only fall inside an utterance. A model fed these features can then give the same
output for an utterance whether it is decoded alone or in a batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchaudio

from speechllm_cli.core.configs import SpecAugmentConfig

SAMPLE_RATE = 16000
WINDOW_MS = 25.0
HOP_MS = 10.0
WINDOW = int(SAMPLE_RATE * WINDOW_MS / 1000)
HOP = int(SAMPLE_RATE * HOP_MS / 1000)
KALDI_SCALE = 32768.0
"""Kaldi computes fbank on 16-bit sample values; scaling keeps quiet audio above the log floor."""


def pad_waveforms(audio: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A list of 1-D waveforms as a zero-padded float batch [B, S] and their sample counts [B]."""
    lengths = torch.tensor([len(wave) for wave in audio], dtype=torch.long)
    batch = torch.nn.utils.rnn.pad_sequence([wave.float().reshape(-1) for wave in audio], batch_first=True)
    return batch, lengths


def valid_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """Boolean [B, max_length], True on each utterance's real positions."""
    return torch.arange(max_length, device=lengths.device) < lengths[:, None]


def frame_counts(sample_lengths: torch.Tensor) -> torch.Tensor:
    """Frames of a 25/10 ms analysis without edge padding (Kaldi's snip_edges); 0 below one window."""
    return torch.where(sample_lengths >= WINDOW, 1 + (sample_lengths - WINDOW) // HOP, 0)


def fbank(waveforms: torch.Tensor, lengths: torch.Tensor, n_mels: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    """Kaldi-compatible log-mel fbank of a padded 16 kHz batch: features [B, F, n_mels] and frame counts [B].

    Each utterance is analysed on its own samples only, so trailing padding cannot leak into its frames.
    """
    frames = frame_counts(lengths)
    feats = waveforms.new_zeros(len(lengths), int(frames.max().item()) if len(frames) else 0, n_mels)
    for row, (wave, count) in enumerate(zip(waveforms, frames.tolist(), strict=True)):
        if count:
            samples = wave[: int(lengths[row])].float().unsqueeze(0) * KALDI_SCALE
            feats[row, :count] = torchaudio.compliance.kaldi.fbank(
                samples, num_mel_bins=n_mels, frame_length=WINDOW_MS, frame_shift=HOP_MS,
                sample_frequency=SAMPLE_RATE, dither=0.0)
    return feats, frames.to(waveforms.device)


def normalize(feats: torch.Tensor, lengths: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-utterance mean/variance normalisation over valid frames; padded frames become 0.

    Removes channel and loudness differences without corpus statistics, so a model carries no
    normalisation file and works on audio from anywhere.
    """
    mask = valid_mask(lengths, feats.shape[1]).unsqueeze(-1).to(feats.dtype)
    count = mask.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (feats * mask).sum(dim=1, keepdim=True) / count
    var = (((feats - mean) * mask) ** 2).sum(dim=1, keepdim=True) / count
    return (feats - mean) / torch.sqrt(var + eps) * mask


def _band_masks(count: int, max_width: torch.Tensor, extent: torch.Tensor, size: int) -> torch.Tensor:
    """``count`` random bands per row, each of width in [0, max_width] inside [0, extent); [B, size] bool."""
    rows = len(extent)
    device = extent.device
    width = (torch.rand(rows, count, device=device) * (max_width[:, None] + 1)).floor().long()
    room = (extent[:, None] - width + 1).clamp(min=1)
    start = (torch.rand(rows, count, device=device) * room).floor().long()
    position = torch.arange(size, device=device)[None, None, :]
    inside = (position >= start[..., None]) & (position < (start + width)[..., None])
    return inside.any(dim=1)


class SpecAugment(torch.nn.Module):
    """Time and frequency masking (Park et al., 2019), active only in training mode.

    Masks are set to 0, the mean of normalised features, and drawn for the whole batch at once.
    """

    def __init__(self, config: SpecAugmentConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return feats
        batch, frames, bins = feats.shape
        cfg = self.config
        device = feats.device
        freq = _band_masks(cfg.freq_masks, torch.full((batch,), min(cfg.freq_width, bins), device=device),
                           torch.full((batch,), bins, device=device), bins)
        time_width = torch.minimum((lengths.float() * cfg.max_time_ratio).floor().long(),
                                   torch.full_like(lengths, cfg.time_width))
        time = _band_masks(cfg.time_masks, time_width, lengths, frames)
        masked = freq[:, None, :] | time[:, :, None]
        return feats.masked_fill(masked, 0.0)
