"""`nextbuy bench serve`, top-K part on a small catalogue: every product measured with the
retrieval settings of params.yaml, recall against the exact method on a sample, the keys
of another catalogue size, and the table rows with their goals."""

from __future__ import annotations

import pandas as pd
import pytest

from nextbuy.bench import serve, serve_rest
from nextbuy.bench.serving_fixtures import load_bundle, write_bundle_files
from tests.helpers import config


def test_size_labels():
    assert [serve.size_label(n) for n in (1_000_000, 100_000, 20_000, 1234)] == ["1m", "100k", "20k", "1234"]


def test_served_recall_counts_the_exact_lists_found():
    exact = pd.DataFrame({"source_id": [1, 1, 2, 2], "candidate_id": [5, 6, 7, 8]})
    served = pd.DataFrame({"source_id": [1, 1, 2, 2, 3], "candidate_id": [6, 5, 7, 9, 1]})
    assert serve.served_recall(served, exact) == pytest.approx(0.75)


@pytest.fixture(scope="module")
def generic(tmp_path_factory):
    """bench_topk on a 3,000-product synthetic bundle with the params.yaml retrieval settings."""
    tmp = tmp_path_factory.mktemp("bench")
    files = write_bundle_files(tmp / "bundle", 3_000, serve.DIM, seed=0, retrieval=config("deploy.retrieval"))
    return serve.bench_topk(load_bundle(files), tmp / "topk")


def test_top_k_of_every_product_is_measured_and_compared_with_the_exact_method(generic):
    figures = serve.topk_keys(generic, serve.size_label(3_000))
    assert figures["topk_3k_index"] == "flat"  # auto, below the switch size
    assert figures["topk_3k_measured_sources"] == 3_000
    assert figures["topk_3k_rows"] == 3_000 * serve.TOP_K
    assert figures["topk_3k_extrapolated"] is False
    assert figures["topk_3k_recall_vs_exact"] == 1.0  # the exact search
    assert figures["topk_3k_exact_sampled_sources"] == serve.TOPK_EXACT_SAMPLE
    assert figures["topk_exact_3k_s"] == pytest.approx(figures["topk_3k_exact_sample_s"] * 3)
    assert 0 < figures["topk_3k_index_build_s"] < figures["topk_3k_s"]


def test_the_bench_catalogue_keeps_the_historical_keys(generic):
    figures = serve.topk_keys(generic)
    assert {"topk_100k_s", "topk_100k_extrapolated", "topk_index", "topk_recall_vs_exact"} <= set(figures)
    assert {"topk_exact_100k_s", "topk_exact_sampled_sources", "topk_measured_sources", "topk_rows"} <= set(
        figures
    )


def test_the_table_shows_the_goals_of_each_size(generic):
    from rich.console import Console

    fig = {
        "n_products": 100_000,
        "d": serve.DIM,
        "cpu_count": 2,
        "pairs_per_s": 2e6,
        "dot_pairs_per_s": 4e6,
        "score_over_dot": 2.0,
        "topk_k": serve.TOP_K,
        "topk_products": [1_000_000],
        "rest_candidates": 100,
        "rest_requests": 300,
        "rest_p50_ms": 3.0,
        "rest_p99_ms": 9.0,
        **serve.topk_keys(generic),
        **serve.topk_keys(generic | {"all_s": 2_000.0}, "1m"),
    }
    console = Console(width=200, record=True)
    console.print(serve._table(fig))
    text = console.export_text()
    assert "top-20 for all 100,000 products (flat index" in text
    assert "≤ 60 s" in text
    assert "top-20 for all 1,000,000 products" in text
    assert "≤ 900 s" in text
    assert "│ no" in text
    assert "recall@20 vs exact (1,000 sources)" in text
    assert "≥ 0.99" in text
    assert "extrapolated from 1,000 sources" in text


def test_top_k_of_a_trained_bundle_is_read_from_a_pipeline_project(tmp_path):
    import shutil

    from nextbuy import paths

    files = write_bundle_files(tmp_path / "bundle", 1_200, serve.DIM, seed=1)
    layout = {
        files.moments: paths.GNN_MOMENTS,
        files.calibration: paths.CALIBRATION_MODEL,
        files.thresholds: paths.THRESHOLDS_MODEL,
    }
    for src, dst in layout.items():
        (tmp_path / "project" / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, tmp_path / "project" / dst)
    settings = config("deploy.retrieval")
    figures = serve.bench_topk_trained(tmp_path / "project", tmp_path / "work", settings)
    assert figures["topk_trained_products"] == 1_200
    assert figures["topk_trained_1200_measured_sources"] == 1_200
    assert figures["topk_trained_1200_recall_vs_exact"] == 1.0  # flat: exact


def test_latency_summary_of_a_load_level():
    level = serve_rest.latency_summary([1.0] * 98 + [10.0, 20.0], errors=2, seconds=2.0, clients=4)
    assert level["clients"] == 4
    assert level["requests"] == 102
    assert level["errors"] == 2
    assert level["rps"] == 50.0
    assert level["p50_ms"] == 1.0
    assert 10.0 <= level["p99_ms"] <= 20.0
    empty = serve_rest.latency_summary([], errors=3, seconds=1.0, clients=1)
    assert empty["p99_ms"] is None
    assert empty["rps"] == 0.0


@pytest.mark.slow
def test_load_levels_against_several_workers(tmp_path, monkeypatch):
    """A real server with LOAD_WORKERS workers answers every level's requests without error,
    with the pair fast path and without it."""
    import numpy as np

    from nextbuy.bench import serving_fixtures as fixtures

    monkeypatch.setattr(serve_rest, "LOAD_CLIENTS", (1, 4))
    monkeypatch.setattr(serve_rest, "LOAD_REQUESTS", 24)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with fixtures.mlflow_store(uri):
        files = write_bundle_files(tmp_path / "bundle", 500, 8, seed=0, retrieval=config("deploy.retrieval"))
        fixtures.register_champion(files, tmp_path, uri)
        rng = np.random.default_rng(0)
        bodies = [
            fixtures.invocations_body(
                ["source_id", "candidate_id"],
                [[1, int(c)] for c in rng.integers(0, 500, serve_rest.REST_CANDIDATES)],
            )
            for _ in range(serve_rest.LOAD_REQUESTS + serve_rest.REST_WARMUP * serve_rest.LOAD_WORKERS)
        ]
        load = serve_rest.bench_load(uri, tmp_path, bodies)
    assert load["load_server_stopped"]
    assert load["load_workers"] == serve_rest.LOAD_WORKERS
    for key in ("load_levels", "load_levels_mlflow_path"):  # as served, and MLflow's path only
        assert [lv["clients"] for lv in load[key]] == [1, 4]
        for level in load[key]:
            assert level["requests"] == 24
            assert level["errors"] == 0
            assert level["rps"] > 0
            assert level["p99_ms"] > 0
