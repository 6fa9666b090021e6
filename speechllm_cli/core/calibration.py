"""What the actual encoder does to each unit, measured once on paired speech, and a simulation that repeats it.

TASU's CPS describes an encoder that is almost always right and always sharp. A small encoder meeting new
voices substitutes, drops and adds units, and its frames are flat; a projector trained only on clean
one-hot frames has never seen what it meets at test time. Calibration aligns the real label-synchronous
(LSD) frames of a paired split with the reference units and keeps, per reference unit:

- how often it came out right, substituted, *soft* (a frame whose argmax is blank but whose best non-blank
  unit is the reference: the encoder half-heard it) or not at all (deleted);
- which units it was confused with (the confusion counts);
- real frames for each of these events (sparse top-k templates), so simulated frames have the encoder's
  own sharpness and second choices instead of uniform label smoothing;

and, between units, the rate of inserted frames and real templates of them.

:class:`CalibratedSimulator` then turns a transcript into frames by drawing one event per unit and a real
template for it. A template recorded for reference unit ``r'`` is reused for unit ``r`` by swapping the
two units' probabilities, which keeps its shape (a correct frame stays correct, a substitution keeps its
wrong argmax, a soft frame keeps its mass on the reference). Units seen often in calibration mostly reuse
their own templates and confusions; rare or unseen ones back off to the whole pool.

One number, ``level``, scales every error rate: 0 gives error-free but real-shaped frames, 1 the measured
encoder, above 1 a worse one. A difficulty curriculum is a schedule over it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import atomic_dir, load_tensors, read_json
from speechllm_cli.core.configs import SimulatorConfig

CORRECT, SUBSTITUTION, SOFT, DELETION = range(4)
EVENTS = ("correct", "substitution", "soft", "deletion")
INSERTION = 4
"""Template kind of a frame that belongs to no reference unit."""

_MATCH, _SOFT_MATCH, _GAP = 0.0, 0.5, 1.0
"""Alignment costs. A soft match (blank argmax, reference unit the best non-blank) costs less than a
substitution but more than nothing, so a frame that is clearly right always wins the reference unit."""
_SUBSTITUTE, _LEAN_BONUS = 1.0, 0.4
"""A substitution costs 1, less up to 0.4 as the frame's mass outside its argmax leans to the unit: when a
unit is lost next to a substitution, the wrong frame goes to the unit it half-heard."""


@dataclass(frozen=True)
class FrameLabels:
    """What alignment needs to know of each frame: its argmax, its best non-blank unit, its probabilities."""

    argmax: list[int]
    best_unit: list[int]
    probs: torch.Tensor

    @classmethod
    def of(cls, frames: torch.Tensor, blank_id: int) -> FrameLabels:
        frames = frames.float()
        units = frames.clone()
        units[:, blank_id] = -1.0
        return cls(frames.argmax(dim=-1).tolist(), units.argmax(dim=-1).tolist(), frames)

    def lean(self, reference: Sequence[int]) -> list[list[float]]:
        """[frames][units]: the share of each frame's mass outside its argmax that lies on each unit."""
        if not reference or not self.argmax:
            return [[] for _ in self.argmax]
        top = self.probs.max(dim=-1, keepdim=True).values
        share = self.probs[:, list(reference)] / (1 - top).clamp(min=1e-6)
        return share.clamp(max=1.0).tolist()


def align_frames(labels: FrameLabels, reference: Sequence[int], blank_id: int) -> list[int]:
    """For each frame, the index of the reference unit it stands for, or -1 if it stands for none.

    A monotonic alignment of least cost: a frame whose argmax is the unit costs nothing, a soft frame
    0.5, any other non-blank frame about 1 (a substitution); an unmatched frame or unit costs 1. A blank
    frame can only stand for the unit it leans to, so a blank between two words is never read as a
    substitution. Reference units that no frame stands for are the deletions.
    """
    frames, units = len(labels.argmax), len(reference)
    inf = float("inf")
    lean = labels.lean(reference)
    cost = [[0.0] * (units + 1) for _ in range(frames + 1)]
    step = [[0] * (units + 1) for _ in range(frames + 1)]
    for i in range(1, units + 1):
        cost[0][i], step[0][i] = i * _GAP, 2
    for j in range(1, frames + 1):
        cost[j][0], step[j][0] = j * _GAP, 1
        label, best, leaning = labels.argmax[j - 1], labels.best_unit[j - 1], lean[j - 1]
        row, previous = cost[j], cost[j - 1]
        for i in range(1, units + 1):
            unit = reference[i - 1]
            if label == unit:
                match = _MATCH
            elif label != blank_id:
                match = _SUBSTITUTE - _LEAN_BONUS * leaning[i - 1]
            else:
                match = _SOFT_MATCH if best == unit else inf
            options = (previous[i - 1] + match, previous[i] + _GAP, row[i - 1] + _GAP)
            choice = min(range(3), key=options.__getitem__)
            row[i], step[j][i] = options[choice], choice
    owner = [-1] * frames
    j, i = frames, units
    while j > 0 or i > 0:
        move = step[j][i]
        if move == 0:
            owner[j - 1] = i - 1
            j, i = j - 1, i - 1
        elif move == 1:
            j -= 1
        else:
            i -= 1
    return owner


@dataclass
class Templates:
    """Real LSD frames kept as their top-k units and probabilities, with what they stood for."""

    ids: torch.Tensor
    """[N, K] long: the frame's K most probable units."""
    probs: torch.Tensor
    """[N, K] float32: their probabilities; the rest of the mass is spread evenly over the vocabulary."""
    kind: torch.Tensor
    """[N] long: CORRECT, SUBSTITUTION, SOFT or INSERTION."""
    unit: torch.Tensor
    """[N] long: the reference unit the frame stood for; for an insertion, its best non-blank unit."""
    side: torch.Tensor
    """[N] long: for an insertion, -1 if its best unit is the reference unit before it, +1 if after, else 0."""

    def __len__(self) -> int:
        return int(self.kind.numel())


@dataclass
class Calibration:
    """The measured behaviour of one encoder under one LSD setting."""

    vocab_size: int
    blank_id: int
    events: torch.Tensor
    """[V, 4] counts per reference unit of correct, substitution, soft, deletion."""
    confusion: torch.Tensor
    """[V, V] sparse counts of reference unit -> argmax of the frame that stood for it (column blank = soft):
    sparse, since an inventory of word pieces (``whisper-tokens``: 16,000 units) would need gigabytes dense."""
    insertions: int
    gaps: int
    """Places an insertion could go: units plus one per utterance."""
    utterances: int
    templates: Templates

    @property
    def insertion_rate(self) -> float:
        return self.insertions / max(self.gaps, 1)

    def rates(self) -> dict[str, float]:
        """Event shares over all reference units, and inserted frames per reference unit."""
        totals = self.events.sum(dim=0).double()
        units = max(float(totals.sum()), 1.0)
        return {name: float(totals[k]) / units for k, name in enumerate(EVENTS)} | {
            "insertion": self.insertions / units}


def measure(frames: Sequence[torch.Tensor], references: Sequence[Sequence[int]], vocab_size: int,
            blank_id: int = 0, top_k: int = 16, max_templates: int = 200_000, seed: int = 0) -> Calibration:
    """Calibrate from real LSD frames ([L_i, V] probabilities) and the reference units of the same utterances.

    Templates beyond ``max_templates`` are subsampled at random (seeded), every kind keeping its share.
    """
    if len(frames) != len(references):
        raise ValueError(f"{len(frames)} frame sequences for {len(references)} references")
    events = torch.zeros(vocab_size, 4, dtype=torch.long)
    confusion: Counter[tuple[int, int]] = Counter()
    k = min(top_k, vocab_size)
    top_ids, top_probs, kinds, units, sides = [], [], [], [], []
    insertions = gaps = 0
    for sequence, reference in zip(frames, references, strict=True):
        reference = list(reference)
        labels = FrameLabels.of(sequence, blank_id)
        owner = align_frames(labels, reference, blank_id)
        probs, ids = labels.probs.topk(k, dim=-1)
        top_ids.append(ids)
        top_probs.append(probs)
        covered, last = set(), -1
        for j, i in enumerate(owner):
            if i >= 0:
                last = i
                unit, label = reference[i], labels.argmax[j]
                kind = CORRECT if label == unit else SOFT if label == blank_id else SUBSTITUTION
                events[unit, kind] += 1
                confusion[unit, label] += 1
                covered.add(i)
                kinds.append(kind), units.append(unit), sides.append(0)
            else:
                gap = last + 1
                anchor = labels.best_unit[j]
                side = -1 if gap > 0 and reference[gap - 1] == anchor else (
                    1 if gap < len(reference) and reference[gap] == anchor else 0)
                kinds.append(INSERTION), units.append(anchor), sides.append(side)
                insertions += 1
        for i, unit in enumerate(reference):
            if i not in covered:
                events[unit, DELETION] += 1
        gaps += len(reference) + 1
    templates = _templates(top_ids, top_probs, kinds, units, sides, k, max_templates, seed)
    return Calibration(vocab_size, blank_id, events, _sparse(confusion, vocab_size), insertions, gaps, len(frames),
                       templates)


def _sparse(counts: Counter[tuple[int, int]], vocab_size: int) -> torch.Tensor:
    keys = sorted(counts)
    indices = torch.tensor(keys, dtype=torch.long).reshape(-1, 2).T
    values = torch.tensor([counts[key] for key in keys], dtype=torch.long)
    return torch.sparse_coo_tensor(indices, values, (vocab_size, vocab_size), check_invariants=True).coalesce()


def _templates(top_ids: list[torch.Tensor], top_probs: list[torch.Tensor], kinds: list[int], units: list[int],
               sides: list[int], k: int, max_templates: int, seed: int) -> Templates:
    """Frames are reduced to top-k per utterance, so a large calibration split never holds [N, V] at once."""
    ids = torch.cat(top_ids) if top_ids else torch.zeros(0, k, dtype=torch.long)
    probs = torch.cat(top_probs) if top_probs else torch.zeros(0, k)
    kind, unit, side = (torch.tensor(x, dtype=torch.long) for x in (kinds, units, sides))
    if len(kind) > max_templates:
        chosen = torch.randperm(len(kind), generator=torch.Generator().manual_seed(seed))[:max_templates]
        chosen = chosen.sort().values
        ids, probs, kind, unit, side = ids[chosen], probs[chosen], kind[chosen], unit[chosen], side[chosen]
    return Templates(ids, probs, kind, unit, side)


def save_calibration(calibration: Calibration, folder: Path) -> None:
    """``calibration.json`` (sizes and rates, readable) + ``calibration.safetensors`` (counts and templates)."""
    t = calibration.templates
    with atomic_dir(folder) as tmp:
        meta = {"vocab_size": calibration.vocab_size, "blank_id": calibration.blank_id,
                "insertions": calibration.insertions, "gaps": calibration.gaps,
                "utterances": calibration.utterances, "templates": len(t), "rates": calibration.rates()}
        (tmp / "calibration.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        confusion = calibration.confusion.coalesce()
        save_file({"events": calibration.events, "confusion_indices": confusion.indices().contiguous(),
                   "confusion_counts": confusion.values().contiguous(), "template_ids": t.ids,
                   "template_probs": t.probs.half(), "template_kind": t.kind, "template_unit": t.unit,
                   "template_side": t.side}, str(tmp / "calibration.safetensors"))


def load_calibration(folder: Path) -> Calibration:
    """What :func:`save_calibration` wrote; a file damaged in a way its format still parses is named too."""
    meta, tensors = read_json(folder / "calibration.json"), load_tensors(folder / "calibration.safetensors")
    try:
        templates = Templates(tensors["template_ids"], tensors["template_probs"].float(), tensors["template_kind"],
                              tensors["template_unit"], tensors["template_side"])
        vocab_size = int(meta["vocab_size"])
        confusion = (tensors["confusion"].to_sparse() if "confusion" in tensors else  # written before 2026-12-07
                     torch.sparse_coo_tensor(tensors["confusion_indices"], tensors["confusion_counts"],
                                             (vocab_size, vocab_size), check_invariants=True).coalesce())
        return Calibration(vocab_size, int(meta["blank_id"]), tensors["events"], confusion,
                           int(meta["insertions"]), int(meta["gaps"]), int(meta["utterances"]), templates)
    except KeyError as error:
        raise SpeechLLMError(f"{folder}: damaged calibration, {error.args[0]!r} is missing") from error
    except (TypeError, ValueError, RuntimeError) as error:
        raise SpeechLLMError(f"{folder / 'calibration.json'}: damaged calibration ({error})") from error


class CalibratedSimulator:
    """Simulated LSD frames for tokenised transcripts, drawn from a :class:`Calibration` (see
    :class:`SimulatorConfig` for how sparse counts are smoothed)."""

    def __init__(self, calibration: Calibration, config: SimulatorConfig | None = None) -> None:
        config = config or SimulatorConfig()
        self.calibration = calibration
        self.template_prior = config.template_prior
        self.max_error = config.max_error
        self.vocab_size = calibration.vocab_size
        counts = calibration.events.double()
        shares = counts.sum(dim=0) / counts.sum().clamp(min=1)
        self._unit_events = (counts + config.prior * shares) / (counts.sum(dim=1, keepdim=True) + config.prior)
        self._index_templates()

    def _index_templates(self) -> None:
        """Templates sorted by (kind, unit), so each kind and each (kind, unit) is one contiguous range.

        An encoder that got no unit right (an untrained one) leaves no correct frame to copy; a one-hot
        frame, TASU's shape, stands in for it so the simulation still runs.
        """
        t = self.calibration.templates
        if not bool((t.kind == CORRECT).any()):
            blank, width = self.calibration.blank_id, t.ids.shape[1]
            unit = 2 if blank == 1 else 1
            ids = torch.full((1, width), blank, dtype=torch.long)
            ids[0, 0] = unit
            probs = torch.zeros(1, width)
            probs[0, 0] = 1.0
            t = Templates(torch.cat([t.ids, ids]), torch.cat([t.probs, probs]),
                          torch.cat([t.kind, torch.tensor([CORRECT])]), torch.cat([t.unit, torch.tensor([unit])]),
                          torch.cat([t.side, torch.tensor([0])]))
        key = t.kind * self.vocab_size + t.unit
        order = key.argsort(stable=True)
        self._ids, self._probs = t.ids[order], t.probs[order]
        self._unit, self._side = t.unit[order], t.side[order]
        sorted_key = key[order]
        bounds = torch.arange(5 * self.vocab_size + 1)
        starts = torch.searchsorted(sorted_key, bounds)
        self._unit_start = starts[:-1].view(5, self.vocab_size)
        self._unit_count = (starts[1:] - starts[:-1]).view(5, self.vocab_size)
        self._kind_start = self._unit_start[:, 0]
        self._kind_count = self._unit_count.sum(dim=1)

    def event_probabilities(self, level: float) -> torch.Tensor:
        """[V, 4] probabilities of correct, substitution, soft, deletion per unit at an error ``level``.

        Error events with no template to draw from are impossible (never measured, so never simulated).
        """
        errors = self._unit_events[:, 1:] * level
        errors[:, SOFT - 1] *= float(self._kind_count[SOFT] > 0)
        errors[:, SUBSTITUTION - 1] *= float(self._kind_count[SUBSTITUTION] > 0)
        total = errors.sum(dim=1, keepdim=True)
        errors = errors * torch.where(total > self.max_error, self.max_error / total.clamp(min=1e-12), 1.0)
        return torch.cat([1 - errors.sum(dim=1, keepdim=True), errors], dim=1).float()

    def __call__(self, token_ids: Sequence[Sequence[int]], generator: torch.Generator,
                 level: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """([B, L', V] float32 frames, lengths [B]); every draw comes from ``generator``."""
        probabilities = self.event_probabilities(level)
        rows = [self._utterance(list(ids), probabilities, level, generator) for ids in token_ids]
        lengths = torch.tensor([len(row[0]) for row in rows], dtype=torch.long)
        longest = int(lengths.max()) if rows else 0
        frames = torch.zeros(len(rows), longest, self.vocab_size)
        for b, (index, source, target) in enumerate(rows):
            if len(index):
                frames[b, : len(index)] = self._frames(index, source, target)
        return frames, lengths

    def _utterance(self, units: list[int], probabilities: torch.Tensor, level: float,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Template indices and the unit swap (source -> target) applied to each, in output order."""
        bad = [u for u in units if not 0 <= u < self.vocab_size or u == self.calibration.blank_id]
        if bad:
            raise ValueError(f"token id {bad[0]} is not a non-blank unit of a {self.vocab_size}-unit vocabulary")
        empty = torch.zeros(0, dtype=torch.long)
        if not units:
            return empty, empty, empty
        unit = torch.tensor(units, dtype=torch.long)
        event = torch.multinomial(probabilities[unit], 1, generator=generator).squeeze(1)
        if bool((event == DELETION).all()):
            event[torch.randint(len(units), (1,), generator=generator)] = CORRECT
        kept = event != DELETION
        unit_index = self._draw(event[kept], unit[kept], generator)
        unit_source = self._unit[unit_index]
        counts = torch.poisson(torch.full((len(units) + 1,), level * self.calibration.insertion_rate),
                               generator=generator).long()
        if self._kind_count[INSERTION] == 0:
            counts.zero_()
        gap = torch.repeat_interleave(torch.arange(len(units) + 1), counts)
        inserted = self._kind_start[INSERTION] + (
            torch.rand(gap.numel(), generator=generator) * self._kind_count[INSERTION]).long()
        side = self._side[inserted]
        neighbour = torch.where(side < 0, gap - 1, gap)
        has_neighbour = (side != 0) & (neighbour >= 0) & (neighbour < len(units))
        inserted_source = self._unit[inserted]
        inserted_target = torch.where(has_neighbour, unit[neighbour.clamp(0, len(units) - 1)], inserted_source)
        keys = torch.cat([2 * torch.arange(len(units))[kept] + 1, 2 * gap])
        order = keys.argsort(stable=True)
        index = torch.cat([unit_index, inserted])[order]
        source = torch.cat([unit_source, inserted_source])[order]
        target = torch.cat([unit[kept], inserted_target])[order]
        return index, source, target

    def _draw(self, kind: torch.Tensor, unit: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One template per (kind, unit): the unit's own with probability n / (n + template_prior), else any."""
        own = self._unit_count[kind, unit]
        draws = torch.rand(3, kind.numel(), generator=generator)
        use_own = draws[0] < own / (own + self.template_prior)
        own_index = self._unit_start[kind, unit] + (draws[1] * own).long()
        any_index = self._kind_start[kind] + (draws[2] * self._kind_count[kind]).long()
        return torch.where(use_own, own_index, any_index)

    def _frames(self, index: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Dense frames: each template with units ``source`` and ``target`` swapped."""
        ids = self._ids[index]
        swapped = torch.where(ids == source[:, None], target[:, None],
                              torch.where(ids == target[:, None], source[:, None], ids))
        probs = self._probs[index]
        rest = (1 - probs.sum(dim=1, keepdim=True)).clamp(min=0) / self.vocab_size
        frames = rest.expand(-1, self.vocab_size).clone()
        return frames.scatter_add_(1, swapped, probs)


