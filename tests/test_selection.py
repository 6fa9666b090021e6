"""Active selection (SALAD stage II): embeddings, k-means, probes, and sampling by M^gamma within a budget."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from speechllm_cli.common.config import validate
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.data.selection import (
    SelectionConfig,
    cluster,
    cluster_members,
    embed,
    pick_probes,
    sample_active,
    sample_random,
)


def _pool(sizes: list[int]) -> list[list[int]]:
    """Cluster members of a synthetic pool: cluster c holds the next sizes[c] indices."""
    starts = np.cumsum([0, *sizes])
    return [list(range(starts[c], starts[c + 1])) for c in range(len(sizes))]


def test_embeddings_are_unit_norm_and_put_similar_sentences_together() -> None:
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today.",
             "Shares dropped steeply on the exchange this morning.", "x" * 3000]
    seen: list[int] = []

    def track(items, total, description):  # noqa: ANN001, ANN202
        seen.append(total)
        return items

    vectors = embed(texts, batch_size=2, track=track)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    assert seen == [3]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.6 > similarity[0, 2]
    assert similarity[2, 3] > max(similarity[0, 3], similarity[1, 3])
    # Batching and order change nothing beyond float noise: a text's vector is its own.
    np.testing.assert_allclose(embed(texts[::-1], batch_size=5)[::-1], vectors, atol=1e-5)


def test_kmeans_is_deterministic_given_the_seed() -> None:
    points = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    labels = cluster(points, 8, seed=3)
    assert labels.shape == (200,) and set(labels.tolist()) == set(range(8))
    np.testing.assert_array_equal(cluster(points, 8, seed=3), labels)
    with pytest.raises(SpeechLLMError, match="selection.clusters is 8.*only 5 texts"):
        cluster(points[:5], 8, seed=3)


def test_duplicate_texts_leave_clusters_empty_and_sampling_counts_them(recwarn: pytest.WarningsRecorder) -> None:
    points = np.repeat(np.eye(3, dtype=np.float32), 2, axis=0)
    members = cluster_members(cluster(points, 5, seed=0), clusters=5)
    assert sorted(map(len, members)) == [0, 0, 2, 2, 2] and not recwarn.list
    selection = sample_active(members, dict.fromkeys(range(5), 1.0), gamma=5.0, budget=6, seed=0)
    assert sorted(selection.indices) == list(range(6)) and selection.skipped == {"empty_cluster": 2}


def test_cluster_members_and_probes() -> None:
    members = cluster_members(np.array([2, 0, 2, 2, 0, 2]), clusters=4)
    assert members == [[1, 4], [], [0, 2, 3, 5], []]
    probes = pick_probes(members, per_cluster=3, seed=1)
    assert probes[0] == [1, 4] and probes[1] == [] and probes[3] == []
    assert len(probes[2]) == 3 and set(probes[2]) <= set(members[2])
    assert pick_probes(members, per_cluster=3, seed=1) == probes
    # A cluster's probe depends on its own members only.
    assert pick_probes([[9], *members[1:]], per_cluster=3, seed=1)[2] == probes[2]


def test_active_sampling_follows_m_to_the_gamma() -> None:
    """Clusters large enough never to run out: draws per cluster are multinomial(budget, M^gamma / sum)."""
    members = _pool([3000] * 4)
    misalignment = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}
    budget, gamma = 2000, 2.0
    selection = sample_active(members, misalignment, gamma, budget, seed=0)
    assert len(selection.indices) == budget == len(set(selection.indices))
    assert selection.skipped == {}
    counts = Counter(index // 3000 for index in selection.indices)
    weights = {c: m ** gamma for c, m in misalignment.items()}
    for c, weight in weights.items():
        p = weight / sum(weights.values())
        assert abs(counts[c] - budget * p) < 4 * math.sqrt(budget * p * (1 - p)), (c, counts)
    assert sample_active(members, misalignment, gamma, budget, seed=0) == selection
    assert sample_active(members, misalignment, gamma, budget, seed=1) != selection


def test_gamma_zero_is_uniform_over_clusters_whatever_their_size_or_m() -> None:
    members = _pool([4000, 500, 500, 500])
    selection = sample_active(members, {0: 9.0, 1: 0.0, 2: 1e-3, 3: 1.0}, gamma=0.0, budget=400, seed=0)
    counts = Counter(0 if index < 4000 else 1 + (index - 4000) // 500 for index in selection.indices)
    assert all(abs(counts[c] - 100) < 4 * math.sqrt(400 * 0.25 * 0.75) for c in range(4)), counts


def test_sampling_stays_within_budget_and_pool() -> None:
    members = _pool([3, 2, 4])
    misalignment = {0: 1.0, 1: 5.0, 2: 0.5}
    small = sample_active(members, misalignment, gamma=5.0, budget=4, seed=2)
    assert len(small.indices) == 4 and len(set(small.indices)) == 4
    # A budget beyond the pool takes every text once, each cluster's texts uniformly without replacement.
    whole = sample_active(members, misalignment, gamma=5.0, budget=100, seed=2)
    assert sorted(whole.indices) == list(range(9))
    assert whole.indices[:4] == small.indices  # nested budgets


def test_empty_unmeasured_and_zero_weight_clusters_are_skipped_and_counted() -> None:
    members = [[0, 1], [], [2, 3], [4], [], [5]]
    selection = sample_active(members, {0: 1.0, 2: 0.0, 3: 2.0}, gamma=1.0, budget=10, seed=0)
    assert selection.skipped == {"empty_cluster": 2, "unmeasured_cluster": 1, "zero_weight_cluster": 1}
    assert sorted(selection.indices) == [0, 1, 4]
    nothing = sample_active([[], [0]], {}, gamma=1.0, budget=3, seed=0)
    assert nothing.indices == [] and nothing.skipped == {"empty_cluster": 1, "unmeasured_cluster": 1}


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.5])
def test_a_misalignment_that_is_not_a_finite_non_negative_number_is_an_error(value: float) -> None:
    with pytest.raises(SpeechLLMError, match="cluster 7: misalignment must be a finite number"):
        sample_active(_pool([2] * 8), {0: 1.0, 7: value}, gamma=5.0, budget=3, seed=0)


def test_a_misalignment_for_a_cluster_that_does_not_exist_is_an_error() -> None:
    with pytest.raises(SpeechLLMError, match="cluster 8: misalignment given for a cluster that does not exist"):
        sample_active(_pool([2] * 8), {0: 1.0, 8: 1.0}, gamma=5.0, budget=3, seed=0)


def test_random_control_draws_exactly_the_budget_uniformly() -> None:
    pool = list(range(10, 1010))
    selection = sample_random(pool, budget=300, seed=4)
    assert len(selection.indices) == 300 == len(set(selection.indices)) and set(selection.indices) <= set(pool)
    assert selection.skipped == {} and sample_random(pool, 300, seed=4) == selection
    assert abs(sum(i < 510 for i in selection.indices) - 150) < 4 * math.sqrt(300 * 0.25)
    assert sample_random(pool, budget=100, seed=4).indices == selection.indices[:100]
    assert sorted(sample_random(pool[:5], budget=300, seed=4).indices) == pool[:5]


def test_config_is_strict_and_the_module_imports_no_model_library() -> None:
    config = validate(SelectionConfig, {"selection": "random", "budget": 50, "clusters": 16}, "distill.selection")
    assert (config.selection, config.budget, config.clusters, config.gamma) == ("random", 50, 16, 5.0)
    with pytest.raises(SpeechLLMError, match=r"distill.selection: gamma"):
        validate(SelectionConfig, {"gamma": -1}, "distill.selection")
    with pytest.raises(SpeechLLMError, match="distill: sellection: unknown key"):
        validate(SelectionConfig, {"selection": "active", "sellection": "random"}, "distill")
    with pytest.raises(SpeechLLMError, match=r"budget 64 leaves nothing to select after the probes .* = 64 utt"):
        validate(SelectionConfig, {"budget": 64, "clusters": 16, "probe_per_cluster": 4}, "distill.selection")
    assert validate(SelectionConfig, {"selection": "random", "budget": 64, "clusters": 16}, "x").budget == 64
    probe = ("import sys, speechllm_cli.data.selection; "
             "print(sorted(m for m in ('torch', 'transformers', 'sklearn') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"
