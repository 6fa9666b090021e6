"""The CTC-posterior interface of TASU: simulated posteriors from text, compressed posteriors from speech.

Text and speech meet in the space of per-frame distributions over the encoder's CTC units (blank = 0).
``simulate_posteriors`` (CPS) turns a tokenised transcript into the frames a projector trains on;
``label_synchronous`` (LSD) squeezes an encoder's real posteriors to about one frame per label, so at
inference the projector sees sequences shaped like the ones it was trained on (METHODS §1).

CPS knobs the paper lacks (substitution, repeated frames, blank frames) default to 0, so the defaults
reproduce TASU exactly and every departure from it is an explicit setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from speechllm_cli.core.configs import CPSConfig, LSDConfig


def simulate_posteriors(token_ids: list[list[int]], vocab_size: int, config: CPSConfig,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulated CTC posteriors for a batch of tokenised transcripts: ([B, L', V] float32, lengths [B]).

    Token ids are the encoder's own units and never the blank. Every random draw comes from
    ``generator`` (tensors live on its device), so a seeded generator gives the same batch again, which
    is what makes a resumed training run repeat an uninterrupted one.

    Per utterance the label sequence goes through, in this order:

    1. substitution, on the transcript's labels, so its rate is a rate of wrong labels per token;
    2. deletion, before anything is added, so ``deletion`` is the expected share of tokens lost and a
       dropped token leaves no orphan repeat or blank behind;
    3. repeats and blank frames after each surviving frame, then insertions at random gaps, so these
       grow the sequence the encoder would have emitted around the labels that are actually there;
    4. smoothing last, with one ``a`` per utterance, so added blanks and copies are smoothed exactly
       like the token frames and cannot be told apart by their sharpness.

    With the default knobs steps 1 and 3 do nothing, which is TASU's one frame per token, smoothing and
    5 % deletion. An empty transcript gives length 0 and all-zero rows.
    """
    _check_tokens(token_ids, vocab_size, config)
    device = generator.device
    labels = [simulate_labels(torch.tensor(ids, dtype=torch.long, device=device), vocab_size, config, generator)
              for ids in token_ids]
    smoothing = torch.rand(len(token_ids), generator=generator, device=device) * config.smoothing_max
    return _smoothed_frames(labels, smoothing, vocab_size)


def _check_tokens(token_ids: list[list[int]], vocab_size: int, config: CPSConfig) -> None:
    """Reject ids the simulation would silently turn into blanks or out-of-range one-hots."""
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2 (blank plus one unit), got {vocab_size}")
    if config.substitution > 0 and vocab_size < 3:
        raise ValueError("substitution needs at least two non-blank units to swap between")
    for ids in token_ids:
        bad = [i for i in ids if not 0 < i < vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the non-blank units 1..{vocab_size - 1}")


def simulate_labels(tokens: torch.Tensor, vocab_size: int, config: CPSConfig,
                    generator: torch.Generator) -> torch.Tensor:
    """Steps 1-3 of :func:`simulate_posteriors` on one utterance: the noised label sequence (blanks as 0),
    which the unified interface's text side also starts from."""
    if tokens.numel() == 0:
        return tokens
    labels = _substitute(tokens, config.substitution, vocab_size, generator)
    labels = _delete(labels, config.deletion, generator)
    labels = _add_repeats_and_blanks(labels, config.repeat, config.blank, generator)
    return _insert(labels, round(tokens.numel() * config.insertion), config.insertion_blank_share, generator)


def _substitute(labels: torch.Tensor, probability: float, vocab_size: int,
                generator: torch.Generator) -> torch.Tensor:
    """A nonzero shift modulo the non-blank units makes every substitution an actual error."""
    if probability == 0:
        return labels
    units = vocab_size - 1
    hit = torch.rand(labels.shape, generator=generator, device=labels.device) < probability
    shift = torch.randint(1, units, labels.shape, generator=generator, device=labels.device)
    return torch.where(hit, 1 + (labels - 1 + shift) % units, labels)


def _delete(labels: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """At least one frame survives: an empty utterance would give the projector nothing to attend to."""
    keep = torch.rand(labels.shape, generator=generator, device=labels.device) >= probability
    if not bool(keep.any()):
        keep[torch.randint(labels.numel(), (1,), generator=generator, device=labels.device)] = True
    return labels[keep]


def _add_repeats_and_blanks(labels: torch.Tensor, repeat: float, blank: float,
                            generator: torch.Generator) -> torch.Tensor:
    """Each frame may be followed by its copy and then by a blank; -1 marks an unused slot."""
    if repeat == 0 and blank == 0:
        return labels
    repeated = torch.rand(labels.shape, generator=generator, device=labels.device) < repeat
    blanked = torch.rand(labels.shape, generator=generator, device=labels.device) < blank
    unused = torch.full_like(labels, -1)
    slots = torch.stack([labels, torch.where(repeated, labels, unused), torch.where(blanked, 0, unused)], dim=1)
    slots = slots.flatten()
    return slots[slots >= 0]


def _insert(labels: torch.Tensor, count: int, blank_share: float, generator: torch.Generator) -> torch.Tensor:
    """Insert ``count`` frames into uniformly drawn gaps (several may share one gap).

    An inserted copy takes the frame left or right of its gap (the only neighbour at either end) and
    must end up touching it, else a CTC reading would see two labels where the text has one. Sort keys
    put, inside gap g, left copies (4g), then blanks (4g + 1), then right copies (4g + 2), all before
    existing frame g (4g + 3), which orders the whole sequence without a Python loop.
    """
    if count == 0:
        return labels
    device, length = labels.device, labels.numel()
    gaps = torch.randint(length + 1, (count,), generator=generator, device=device)
    side = torch.randint(2, (count,), generator=generator, device=device)
    side = torch.where(gaps == 0, 1, torch.where(gaps == length, 0, side))
    is_blank = torch.rand(count, generator=generator, device=device) < blank_share
    inserted = torch.where(is_blank, 0, labels[gaps - 1 + side])
    inserted_keys = 4 * gaps + torch.where(is_blank, 1, 2 * side)
    keys = torch.cat([4 * torch.arange(length, device=device) + 3, inserted_keys])
    return torch.cat([labels, inserted])[keys.argsort()]


def _smoothed_frames(labels: list[torch.Tensor], smoothing: torch.Tensor,
                     vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Build the smoothed one-hots by scatter instead of ``one_hot``, which would allocate int64 [B, L', V]."""
    device = smoothing.device
    lengths = torch.tensor([len(seq) for seq in labels], dtype=torch.long, device=device)
    longest = int(lengths.max()) if labels else 0
    valid = torch.arange(longest, device=device) < lengths[:, None]
    padded = torch.zeros(len(labels), longest, dtype=torch.long, device=device)
    if labels:
        padded[valid] = torch.cat(labels)
    weight = valid.to(torch.float32)
    posteriors = (weight * (smoothing / vocab_size)[:, None]).unsqueeze(-1).expand(-1, -1, vocab_size).clone()
    posteriors.scatter_add_(2, padded.unsqueeze(-1), (weight * (1 - smoothing)[:, None]).unsqueeze(-1))
    return posteriors, lengths


@dataclass(frozen=True)
class Segments:
    """LSD's segmentation of a posterior batch: which valid frame belongs to which kept segment."""

    valid: torch.Tensor
    """[B, T] frames inside their utterance."""
    run: torch.Tensor
    """[N] the run of each valid frame (valid frames flattened in batch order)."""
    kept: torch.Tensor
    """[R] runs that survive the blank threshold."""
    owner: torch.Tensor
    """[R] the utterance of each run."""

    def pool(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean of ``values`` [B, T, D] over each kept segment: zero-padded [B, T', D] and lengths [B]."""
        means = _run_means(values[self.valid].to(torch.float32), self.run, len(self.owner))
        merged, lengths = _pad(means[self.kept], self.owner[self.kept], self.valid.shape[0])
        return merged.to(values.dtype), lengths


def lsd_segments(posteriors: torch.Tensor, lengths: torch.Tensor, config: LSDConfig) -> Segments:
    """LSD's segments of real posteriors [B, T, V] (probabilities), for pooling posteriors or anything framed
    like them (the encoder's hidden states).

    A run of equal non-blank argmax frames is one segment, blank-argmax frames are one segment each, and a
    segment whose mean P(blank) is at least ``blank_threshold`` is dropped. Runs are found before dropping,
    so a confident blank between two equal labels still separates them. The whole batch is processed at
    once: its valid frames are flattened, run starts are marked where the label or the utterance changes (or
    the frame is blank), and run means come from one ``index_add_``.
    """
    _check_posteriors(posteriors, lengths, config)
    batch_size, frames_per_row, _ = posteriors.shape
    lengths = lengths.to(device=posteriors.device, dtype=torch.long)
    valid = torch.arange(frames_per_row, device=posteriors.device) < lengths[:, None]
    frames = posteriors[valid].to(torch.float32)
    owner = torch.arange(batch_size, device=posteriors.device).repeat_interleave(lengths)
    starts = _run_starts(frames.argmax(dim=-1), owner, config.blank_id)
    run = torch.cumsum(starts, dim=0) - 1
    means = _run_means(frames, run, int(starts.sum()))
    return Segments(valid, run, means[:, config.blank_id] < config.blank_threshold, owner[starts])


def label_synchronous(posteriors: torch.Tensor, lengths: torch.Tensor,
                      config: LSDConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Compress real posteriors [B, T, V] (probabilities) to about one frame per label: the mean posterior
    of each of :func:`lsd_segments`.

    Returns zero-padded frames [B, T', V] in the input dtype and lengths [B]. An utterance left with
    no frame (silence, or all frames blank-confident) gets length 0 and all-zero rows; callers must
    decide what a speech segment of length 0 means for them.
    """
    return lsd_segments(posteriors, lengths, config).pool(posteriors)


def _check_posteriors(posteriors: torch.Tensor, lengths: torch.Tensor, config: LSDConfig) -> None:
    if posteriors.dim() != 3:
        raise ValueError(f"posteriors must be [B, T, V], got shape {tuple(posteriors.shape)}")
    if lengths.shape != posteriors.shape[:1]:
        raise ValueError(f"lengths must be [{posteriors.shape[0]}], got shape {tuple(lengths.shape)}")
    if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > posteriors.shape[1]):
        raise ValueError(f"lengths must lie in 0..{posteriors.shape[1]}")
    if config.blank_id >= posteriors.shape[2]:
        raise ValueError(f"blank_id {config.blank_id} is outside a vocabulary of {posteriors.shape[2]}")


def _run_starts(labels: torch.Tensor, owner: torch.Tensor, blank_id: int) -> torch.Tensor:
    """True where a new run begins; a blank frame always begins one, so blanks are never merged."""
    starts = torch.ones_like(labels, dtype=torch.bool)
    starts[1:] = (labels[1:] != labels[:-1]) | (owner[1:] != owner[:-1]) | (labels[1:] == blank_id)
    return starts


def _run_means(frames: torch.Tensor, run: torch.Tensor, runs: int) -> torch.Tensor:
    sums = torch.zeros(runs, frames.shape[1], dtype=frames.dtype, device=frames.device).index_add_(0, run, frames)
    counts = torch.bincount(run, minlength=runs).to(frames.dtype)
    return sums / counts[:, None]


def _pad(frames: torch.Tensor, owner: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter utterance-ordered frames into a zero-padded batch; each frame's slot is its rank in its row."""
    lengths = torch.bincount(owner, minlength=batch_size)
    longest = int(lengths.max()) if batch_size else 0
    offsets = torch.cumsum(lengths, dim=0) - lengths
    position = torch.arange(owner.numel(), device=frames.device) - offsets[owner]
    padded = torch.zeros(batch_size, longest, frames.shape[1], dtype=frames.dtype, device=frames.device)
    padded[owner, position] = frames
    return padded, lengths
