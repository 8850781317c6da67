"""The real-store benchmarks' scoring: ranks among every product but the source, ties half."""

from __future__ import annotations

import numpy as np

from nextbuy.domain.served_ranking import ranks_by
from nextbuy_lab.real_stores import direction, ranking_metrics


def test_ranks_exclude_the_source_and_count_ties_half():
    scores = np.array([[9.0, 5.0, 5.0, 1.0], [0.0, 9.0, 3.0, 3.0]])
    rows = lambda su, sv: scores[su]  # noqa: E731 - a scorer
    # source 0: itself (9) left out, target 2 ties with 1 -> rank 1.5; source 1: target 0 is last
    ranks = ranks_by(rows, np.array([0, 1]), np.array([2, 0]), 4)
    assert ranks.tolist() == [1.5, 3.0]
    metrics = ranking_metrics(np.array([1.0, 12.0]))
    assert metrics["hits@10"] == 0.5
    assert metrics["hits@20"] == 1.0
    assert metrics["mrr"] == (1 + 1 / 12) / 2


def test_direction_counts_pairs_scored_forward_above_backward():
    table = {(0, 1): 2.0, (1, 0): 1.0, (2, 3): 1.0, (3, 2): 1.0}
    pair = lambda a, b: np.array([table[(x, y)] for x, y in zip(a, b, strict=True)])  # noqa: E731
    assert direction(pair, np.array([0, 2]), np.array([1, 3])) == 0.75


def test_the_gap_over_test_pairs_averages_each_pair_over_seeds():
    from nextbuy_lab.real_stores import pair_gap

    always = [np.array([1.0, 1.0, 30.0, 30.0])] * 2  # hits@20 on the first two pairs, every seed
    sometimes = [np.array([1.0, 30.0, 30.0, 30.0]), np.array([30.0, 1.0, 30.0, 30.0])]
    gap = pair_gap(always, sometimes, "hits@20")
    assert gap["mean"] == 0.25  # each of the first two pairs: 1 - 0.5
    assert gap["ci95"][0] < 0.25 < gap["ci95"][1]
    assert pair_gap(always, always, "mrr") == {"mean": 0.0, "ci95": [0.0, 0.0]}


def test_lightgcn_validation_hits_count_a_tie_half():
    from nextbuy_lab.lightgcn import VALIDATION_K, validation_hits

    n = VALIDATION_K + 2
    embedding = np.zeros((n, 2), dtype=np.float32)
    embedding[0] = [1.0, 0.0]
    embedding[1] = [1.0, 0.0]  # source 0 scores 1 above everything else
    assert validation_hits(embedding, np.array([0]), np.array([1])) == 1.0
    # v = 2 is below 1 and tied with the 19 others: rank 1 + 1 + 19 / 2 = 11.5, inside the top 20.
    assert validation_hits(embedding, np.array([0]), np.array([2])) == 1.0
    embedding[3:] = [0.5, 0.0]  # now 20 products score above v = 2
    assert validation_hits(embedding, np.array([0]), np.array([2])) == 0.0
