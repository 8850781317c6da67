"""The served top-K order: count rankings rank what the store bought, the evaluated purchase
takes no part in the counts it is ranked by, and a count ranking is served only when it beats
the model's order beyond its CI."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbuy.domain import served_ranking
from nextbuy.domain.served_ranking import CountTables
from nextbuy.domain.uncertainty import BucketCalibration


def tables_of(pairs: list[tuple[int, int, float]], n: int) -> CountTables:
    src, dst, weight = (np.array(x) for x in zip(*pairs, strict=True))
    return CountTables.from_edges(src, dst, weight, n)


def test_co_purchase_ranks_by_counts_and_breaks_ties_by_popularity():
    # 0 -> 2 bought 3 times, 0 -> 1 once; 3 is the most popular product overall.
    tables = tables_of([(0, 2, 3), (0, 1, 1), (4, 3, 9), (1, 3, 2)], n=5)
    top = tables.top_k("co_purchase", np.array([0]), k=4, exclude_self=True)[0]
    assert top.tolist() == [2, 1, 3, 4]  # counts first, then popularity (3: 11, 4: 9)
    assert tables.top_k("popularity", np.array([0]), k=2, exclude_self=True)[0].tolist() == [3, 4]


def test_a_source_the_counts_never_saw_gets_popularity():
    tables = tables_of([(0, 2, 3), (4, 3, 9)], n=5)
    unseen = tables.top_k("co_purchase", np.array([5]), k=2, exclude_self=True)[0]
    assert unseen.tolist() == [3, 4]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(1, 5)), min_size=1, max_size=40))
def test_scores_and_pair_counts_agree_with_a_dense_count_matrix(pairs):
    n = 8
    dense = np.zeros((n, n))
    for u, v, w in pairs:
        dense[u, v] += w
    merged = {(u, v): dense[u, v] for u, v, _ in pairs}
    tables = tables_of([(u, v, w) for (u, v), w in merged.items()], n)
    sources = np.arange(n)
    np.testing.assert_allclose(
        tables.scores("co_purchase", sources) - tables.popularity_term(), dense, atol=1e-9
    )
    u, v = np.repeat(sources, n), np.tile(sources, n)
    np.testing.assert_array_equal(tables.pair_count(u, v), dense[u, v])
    np.testing.assert_allclose(tables.popularity, dense.sum(axis=0) + dense.sum(axis=1))
    assert tables.check() is None
    for ranker in ("popularity", "co_purchase"):
        smoothed = tables.with_prior(50.0)
        np.testing.assert_allclose(
            smoothed.pair_scores(ranker, u, v), smoothed.scores(ranker, sources)[u, v], rtol=1e-12
        )


def test_a_popularity_prior_ranks_a_source_with_few_counts_by_what_sells():
    # 0 -> 1 bought once; 2 is bought far more often overall (with 3 and 4).
    tables = tables_of([(0, 1, 1), (3, 2, 40), (4, 2, 40), (3, 4, 1)], n=5)
    plain = tables.top_k("co_purchase", np.array([0, 3]), k=2, exclude_self=True)
    assert plain[0].tolist() == [1, 2]  # one count beats any popularity
    smoothed = tables.with_prior(10.0)
    top = smoothed.top_k("co_purchase", np.array([0, 3]), k=2, exclude_self=True)
    assert top[0].tolist()[0] == 2  # 10 pseudo-counts x 2's share (80/164) > 1 count
    assert top[1].tolist() == [2, 4]  # 3's own 40 purchases of 2 still lead
    share = tables.popularity / tables.popularity.sum()
    np.testing.assert_allclose(
        smoothed.scores("co_purchase", np.array([0]))[0] - tables.popularity_term(),
        np.array([0, 1, 0, 0, 0]) + 10.0 * share,
    )
    assert CountTables.from_arrays(smoothed.to_arrays()).prior == 10.0


def test_the_prior_is_chosen_on_every_row_and_judged_out_of_fold():
    rows = 1000
    steady = _hits(0.2, rows, 0)
    lucky = np.zeros(rows)
    lucky[:5] = 1.0  # wins nothing but a handful of rows: out of fold it is never picked
    prior, cross_fitted = served_ranking.cross_fit_prior({0.0: steady, 3.0: steady * 0, 30.0: lucky}, 5, 0)
    assert prior == 0.0
    np.testing.assert_array_equal(cross_fitted, steady)
    tied, _ = served_ranking.cross_fit_prior({10.0: steady, 1.0: steady}, 5, 0)
    assert tied == 1.0  # ties go to the smaller prior
    # A prior that wins on the whole grid only by the rows it is judged on scores worse out of
    # fold than in sample: half the rows favour one prior, half the other.
    a = np.r_[np.ones(10), np.zeros(10)]
    b = np.r_[np.zeros(10), np.ones(9), 0.0]
    best, oof = served_ranking.cross_fit_prior({0.0: a, 1.0: b}, 2, 0)
    assert best == 0.0
    assert oof.mean() < a.mean()


def test_the_ranked_purchase_takes_no_part_in_its_own_count():
    # The only evidence for 0 -> 1 is the purchase being ranked: left out, 1 ranks by its
    # popularity alone, behind 2 (bought three times after 0) and the more popular 3.
    tables = tables_of([(0, 1, 1), (0, 2, 3), (3, 1, 5), (3, 4, 3)], n=5)
    rows = served_ranking.leave_one_out(tables, "co_purchase")
    u, v = np.array([0, 0]), np.array([1, 2])
    assert served_ranking.ranks_by(rows, u, v, tables.n_products).tolist() == [3.0, 1.0]
    counted = served_ranking.ranks_by(lambda su, sv: tables.scores("co_purchase", su), u, v, 5)
    assert counted.tolist() == [2.0, 1.0]  # counting it would have put 1 second


def _hits(rate: float, rows: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(rows) < rate).astype(float)


def test_a_count_ranking_is_served_only_when_it_wins_beyond_its_ci():
    model = _hits(0.05, 4000, 0)
    clear_win = served_ranking.choose(
        {"model": model, "popularity": np.maximum(model, _hits(0.05, 4000, 1))}, 20, 0.95, "test"
    )
    assert clear_win.served == "popularity"
    assert clear_win.gaps["popularity"].low > 0
    assert "popularity" in clear_win.reason
    noise = served_ranking.choose({"model": model, "popularity": _hits(0.05, 4000, 2)}, 20, 0.95, "test")
    assert noise.served == "model"
    assert served_ranking.RankingChoice.from_dict(clear_win.to_dict()) == clear_win
    smoothed = served_ranking.choose(
        {"model": model, "co_purchase": np.maximum(model, _hits(0.05, 4000, 1))},
        20,
        0.95,
        "test",
        30.0,
        {"30": 0.1},
    )
    assert smoothed.served == "co_purchase"
    assert "30 popularity pseudo-counts" in smoothed.reason
    assert served_ranking.RankingChoice.from_dict(smoothed.to_dict()) == smoothed


def test_too_few_purchases_serve_the_models_order():
    tables = tables_of([(0, 1, 1)], n=2)
    moments = {
        "s_mean": np.ones((2, 1), np.float32),
        "s_var": np.zeros((2, 1), np.float32),
        "t_mean": np.ones((2, 1), np.float32),
        "t_var": np.zeros((2, 1), np.float32),
        "head_w": np.ones(1, np.float32),
        "head_b": np.zeros(1, np.float32),
    }
    calibration = BucketCalibration(np.zeros(0), [np.array([0.0, 1.0])], [np.array([0.0, 1.0])])
    choice = served_ranking.choose_served(
        np.array([0]),
        np.array([1]),
        moments,
        calibration,
        tables,
        served_ranking.ChoiceSettings(20, 0.95),
        "test",
    )
    assert choice.served == "model"
    assert choice.rows == 1


def test_the_model_ranks_by_its_calibrated_probability():
    rng = np.random.default_rng(0)
    n, d = 30, 4
    moments = {
        "s_mean": rng.normal(size=(n, d)).astype(np.float32),
        "s_var": np.full((n, d), 0.01, np.float32),
        "t_mean": rng.normal(size=(n, d)).astype(np.float32),
        "t_var": np.full((n, d), 0.01, np.float32),
        "head_w": np.ones(d, np.float32),
        "head_b": np.zeros(1, np.float32),
    }
    calibration = BucketCalibration(np.zeros(0), [np.array([0.0, 1.0])], [np.array([0.0, 1.0])])
    rows = served_ranking.model_rows(moments, calibration)
    u = np.array([3])
    best = int(np.argmax(np.where(np.arange(n) == 3, -np.inf, rows(u, u)[0])))
    assert served_ranking.ranks_by(rows, u, np.array([best]), n).tolist() == [1.0]


@pytest.mark.parametrize("broken", ["indptr", "indices"])
def test_inconsistent_count_tables_are_named(broken):
    tables = tables_of([(0, 1, 1), (1, 2, 2)], n=3)
    arrays = tables.to_arrays()
    arrays[broken] = arrays[broken][:-1] if broken == "indptr" else arrays[broken] + 5
    assert CountTables.from_arrays(arrays).check() is not None
