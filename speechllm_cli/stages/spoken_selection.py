"""The speech a ``distill`` student hears when it reads TTS: which texts of a pool get spoken, and their LSD.

SALAD's stage II (METHODS.md §4) spends a TTS budget where the model is most misaligned: the pool is
embedded and clustered (``data.selection``), a few probe texts per cluster are spoken and the model's M is
measured on each cluster's probe, and the rest of the budget is drawn by M(c)^gamma. The probes are spoken
speech too, so they count against the budget and join the training items: active and random selection
(the control, a uniform draw from the pool) then synthesize exactly as many utterances (fewer only when the
pool runs out).

Speech is rendered into the unit's folder (``tts/``), so a killed run does not speak a file twice, and goes
through the one front end (``front_end.encode``) as a split's speech does. An utterance whose audio is too
short or too long for the encoder, or whose LSD keeps no frame, is left out and counted as ``no_speech``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechllm_cli.data.audio import MAX_SECONDS, MIN_SECONDS
from speechllm_cli.data.audio_source import AudioFiles, Subset
from speechllm_cli.data.selection import Selection, SelectionConfig
from speechllm_cli.data.tts import SpeakConfig, plan_speech, render_all
from speechllm_cli.stages.runner import Context

if TYPE_CHECKING:
    import torch

    from speechllm_cli.core.distill import Pair
    from speechllm_cli.core.encoders import CTCEncoder
    from speechllm_cli.core.speech_llm import SpeechLLM

Row = dict[str, Any]
SpeechPairs = Callable[[list[Row]], "list[Pair]"]
"""Rows with their ``lsd`` -> the distillation pairs a student would train on (responses included)."""


@dataclass
class Spoken:
    """The pool rows that were spoken and kept (each with its ``lsd``), and how they were chosen."""

    rows: list[Row]
    stats: dict[str, Any]
    skipped: dict[str, int]


def speak(context: Context, encoder: CTCEncoder, rows: Sequence[Row], keys: Sequence[str], speech: SpeakConfig,
          folder: Path, what: str) -> list[torch.Tensor | None]:
    """The LSD posteriors of each row's text spoken by ``speech``'s voices (None where there is no speech)."""
    from speechllm_cli.stages.front_end import encode

    jobs = plan_speech([row["text"] for row in rows], keys, speech, folder,
                       random.Random(f"{speech.seed}/{folder.parent.name}/{what}"))
    render_all(jobs, speech.workers, context.track, f"synthesizing {what}")
    audio = AudioFiles([job.path for job in jobs])
    usable = [i for i, seconds in enumerate(audio.seconds) if MIN_SECONDS <= seconds <= MAX_SECONDS]
    lsd: list[torch.Tensor | None] = [None] * len(rows)
    for index, encoded in encode(encoder, Subset(audio, usable), context.config.model.lsd, context.track,
                                 f"encoding {what}"):
        if encoded.lsd.shape[0] > 0:
            lsd[usable[index]] = encoded.lsd
    return lsd


def _spoken_rows(context: Context, encoder: CTCEncoder, pool: Sequence[Row], indices: Sequence[int],
                 speech: SpeakConfig, folder: Path, what: str) -> dict[int, Row]:
    """Pool rows ``indices`` that have speech, with their LSD, by pool index (in the order given)."""
    keys = [f"pool{i:06d}" for i in indices]
    lsd = speak(context, encoder, [pool[i] for i in indices], keys, speech, folder, what)
    return {i: {**pool[i], "lsd": value} for i, value in zip(indices, lsd, strict=True) if value is not None}


def _active(context: Context, encoder: CTCEncoder, model: SpeechLLM, pool: Sequence[Row], config: SelectionConfig,
            speech: SpeakConfig, folder: Path, pairs: SpeechPairs,
            batch_size: int) -> tuple[list[int], dict[int, Row], Selection, dict[str, Any]]:
    """Probe every cluster, then draw the rest of the budget by M(c)^gamma: the probe indices, the probes
    spoken, the draw, and per cluster its size, probe, M and draws."""
    from speechllm_cli.core.distill import misalignment
    from speechllm_cli.data import selection

    embeddings = selection.embed([row["text"] for row in pool], config.embed_batch_size, context.track)
    members = selection.cluster_members(selection.cluster(embeddings, config.clusters, config.seed), config.clusters)
    probes = selection.pick_probes(members, config.probe_per_cluster, config.seed)
    probed = [i for probe in probes for i in probe]
    spoken = _spoken_rows(context, encoder, pool, probed, speech, folder, "probes")
    model.eval()
    measured = {c: misalignment(model, pairs(rows), batch_size) for c, probe in enumerate(probes)
                if (rows := [spoken[i] for i in probe if i in spoken])}
    taken = set(probed)
    rest = [[i for i in texts if i not in taken] for texts in members]
    drawn = selection.sample_active(rest, measured, config.gamma, config.budget - len(probed), config.seed)
    chosen = set(drawn.indices)
    clusters = [{"texts": len(texts), "probe": len(probes[c]), "M": round(measured[c], 5) if c in measured else None,
                 "drawn": sum(i in chosen for i in texts)} for c, texts in enumerate(members)]
    return probed, spoken, drawn, {"probes": len(probed), "clusters": clusters}


def spoken_selection(context: Context, encoder: CTCEncoder, model: SpeechLLM, pool: list[Row],
                     config: SelectionConfig, speech: SpeakConfig, folder: Path, pairs: SpeechPairs,
                     batch_size: int) -> Spoken:
    """Choose ``config.budget`` texts of ``pool`` (actively or at random), speak them and keep their LSD."""
    from speechllm_cli.data.selection import sample_random

    stats: dict[str, Any] = {"selection": config.selection, "budget": config.budget, "pool": len(pool)}
    if config.selection == "active":
        probed, spoken, drawn, probing = _active(context, encoder, model, pool, config, speech, folder, pairs,
                                                 batch_size)
        stats |= probing
    else:
        probed, spoken, drawn = [], {}, sample_random(range(len(pool)), config.budget, config.seed)
    spoken |= _spoken_rows(context, encoder, pool, drawn.indices, speech, folder, "selection")
    stats["spoken"] = len(probed) + len(drawn.indices)
    no_speech = stats["spoken"] - len(spoken)
    skipped = {**drawn.skipped, **({"no_speech": no_speech} if no_speech else {})}
    return Spoken(list(spoken.values()), stats, skipped)
