"""calibrate stage: calibration fitted on matured calib rows only; buckets ordered by uncertainty;
metrics and plots that show what the uncertainty measures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from nextbuy import paths
from nextbuy.config import IngestConfig, TrainConfig
from nextbuy.mlops import io, schemas
from nextbuy.stages import calibrate, ingest, label_delay, train
from tests.helpers import config


@pytest.fixture(scope="module")
def pipeline():
    """Ingested tiny store, its weighted impressions and a trained model's moments."""
    from tests.conftest import TINY_PARAMS

    data = ingest.ingest(IngestConfig.model_validate(TINY_PARAMS["ingest"]))
    weighted, _ = label_delay.weigh(
        data.impressions, data.snapshot, config("label_delay"), data.products, data.edges
    )
    graph = train.build_graph(data.products, data.edges)
    cfg = TrainConfig.model_validate(TINY_PARAMS["train"])
    _, moments, _ = train.fit(graph, weighted, cfg, delay_family="lognormal", progress=False)
    return data, weighted, moments


@pytest.fixture(scope="module")
def trained(pipeline):
    _, weighted, moments = pipeline
    return weighted, moments


def test_scored_holdout_is_valid_and_bucketed_by_uncertainty(trained):
    weighted, moments = trained
    scored, calibration = calibrate.score_holdout(
        weighted, moments, config("calibrate", n_buckets=2, maturity_days=4, min_bucket_size=30)
    )
    io.validate(scored, schemas.SCORED, "scored")
    assert set(scored["split"]) == {"calib", "test"}
    means = scored.groupby("bucket")["uncertainty"].mean()
    assert means.is_monotonic_increasing
    # Matured means old enough at the snapshot.
    assert (
        weighted.set_index("impression_id").loc[
            scored.loc[scored["matured"], "impression_id"], "elapsed_days"
        ]
        >= 4
    ).all()
    metrics = calibrate.summarise(scored, calibration)
    assert metrics["calib_matured"]["ece_calibrated"] <= metrics["calib_matured"]["ece_raw"] + 1e-9


def test_labels_of_immature_rows_do_not_move_the_calibration(trained):
    weighted, moments = trained
    cfg = config("calibrate", n_buckets=2, maturity_days=4, min_bucket_size=30)
    _, base = calibrate.score_holdout(weighted, moments, cfg)
    flipped = weighted.copy()
    immature = flipped["elapsed_days"] < 4
    flipped.loc[immature, "label"] = (1 - flipped.loc[immature, "label"]).astype(np.int8)
    _, other = calibrate.score_holdout(flipped, moments, cfg)
    for x, y in zip(base.knots_y, other.knots_y, strict=False):
        np.testing.assert_array_equal(x, y)


def test_too_few_matured_rows_is_a_clear_error(trained):
    weighted, moments = trained
    with pytest.raises(io.DataError, match="maturity_days"):
        calibrate.score_holdout(weighted, moments, config("calibrate", maturity_days=10_000))


def test_too_many_buckets_for_the_calibration_rows_is_refused_naming_the_key(trained):
    weighted, moments = trained
    with pytest.raises(io.DataError, match=r"calibrate.n_buckets=1000") as info:
        calibrate.score_holdout(
            weighted, moments, config("calibrate", n_buckets=1000, maturity_days=4, min_bucket_size=30)
        )
    message = str(info.value)
    assert "calibrate.min_bucket_size=30" in message
    assert str(paths.WEIGHTED_IMPRESSIONS) in message
    # The bound it names is exact: that many buckets is accepted.
    most = int(message.split("set calibrate.n_buckets <= ")[1].split()[0])
    assert most >= 2
    _, calibration = calibrate.score_holdout(
        weighted, moments, config("calibrate", n_buckets=most, maturity_days=4, min_bucket_size=30)
    )
    assert calibration.n_buckets <= most
    with pytest.raises(io.DataError, match="n_buckets"):
        calibrate.score_holdout(
            weighted, moments, config("calibrate", n_buckets=most + 1, maturity_days=4, min_bucket_size=30)
        )


def test_summary_reports_uncertainty_at_equal_score_and_ece_per_bucket(trained):
    weighted, moments = trained
    scored, calibration = calibrate.score_holdout(
        weighted, moments, config("calibrate", n_buckets=2, maturity_days=4, min_bucket_size=30)
    )
    metrics = calibrate.summarise(scored, calibration)
    test = scored["split"] == "test"
    equal_score = metrics["uncertainty_at_equal_score"]
    assert equal_score["test"]["rows"] == int(test.sum())
    assert equal_score["calib"]["rows"] == int(scored["matured"][~test].sum())
    for fit in equal_score.values():
        assert fit["ci95"][0] < fit["coef"] < fit["ci95"][1]
        assert fit["se"] > 0
    ece = metrics["ece_by_bucket"]
    assert set(ece) == {"0", "1"}
    assert sum(b["rows"] for b in ece.values()) == int(test.sum())
    assert all(0 <= b["ece_raw"] <= 1 and 0 <= b["ece_calibrated"] <= 1 for b in ece.values())


def workspace(pipeline, tmp_path, monkeypatch, tiny_params) -> None:
    """calibrate's inputs in ``tmp_path``, the working directory: a store with no order lines."""
    data, weighted, moments = pipeline
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    io.write_table(weighted, paths.WEIGHTED_IMPRESSIONS, schemas.WEIGHTED)
    io.write_npz(moments, paths.GNN_MOMENTS)
    io.write_table(data.edges, paths.EDGES, schemas.EDGES)
    io.write_json({"snapshot": str(data.snapshot)}, paths.INGEST_META)
    io.write_empty_table(paths.NEXT_PURCHASES, schemas.NEXT_PURCHASES)


def test_run_writes_uncertainty_metrics_and_the_score_band_plot(pipeline, tmp_path, monkeypatch, tiny_params):
    data, weighted, _ = pipeline
    workspace(pipeline, tmp_path, monkeypatch, tiny_params)

    returned = calibrate.run()
    metrics = json.loads(paths.metrics_file("calibrate").read_text())
    assert set(metrics) == set(returned)
    assert {"uncertainty_at_equal_score", "uncertainty_by_history", "ece_by_bucket"} <= set(metrics)
    assert set(metrics["uncertainty_at_equal_score"]) == {"test", "calib"}

    holdout = int(weighted["split"].isin(["calib", "test"]).sum())
    history = metrics["uncertainty_by_history"]
    assert sum(history["rows_by_in_degree"].values()) == holdout
    assert history["new_rows"] + history["established_rows"] == holdout
    assert history["new_within_days"] == 7
    scored = io.read_table(paths.SCORED, schemas.SCORED)
    in_degree = data.edges.groupby("dst").size().reindex(scored["shown_id"], fill_value=0).to_numpy()
    assert history["rows_by_in_degree"]["0"] == int((in_degree == 0).sum())
    if (in_degree == 0).any():
        assert history["by_in_degree"]["0"] == pytest.approx(scored["uncertainty"][in_degree == 0].mean())

    bands = pd.read_csv(paths.plots_dir("calibrate") / "positivity_by_score_band.csv")
    assert list(bands.columns) == [
        "score_band",
        "uncertainty_bin",
        "uncertainty",
        "positivity",
        "mean_score",
        "count",
    ]
    assert bands["count"].sum() == holdout
    assert bands["positivity"].between(0, 1).all()


def test_the_reliability_diagram_is_drawn_out_of_sample_so_miscalibration_can_show(trained):
    weighted, moments = trained
    scored, _ = calibrate.score_holdout(
        weighted, moments, config("calibrate", n_buckets=2, maturity_days=4, min_bucket_size=30)
    )
    table = calibrate.reliability_out_of_sample(scored)
    assert table["count"].sum() == int((scored["split"] == "test").sum())  # test rows only
    # A bucket whose calibrated probabilities are doubled sits off the diagonal.
    skewed = scored.assign(prob_calibrated=np.clip(2 * scored["prob_calibrated"], 0, 1))
    off = calibrate.reliability_out_of_sample(skewed)

    def gap(t: pd.DataFrame) -> float:
        return float((t["count"] * (t["mean_predicted"] - t["observed_rate"]).abs()).sum() / t["count"].sum())

    assert gap(off) > gap(table) + 0.01


def test_the_served_order_is_judged_on_next_purchases_when_ingest_has_them(trained):
    weighted, _ = trained
    settings = config("calibrate").served_ranking
    none = io.empty_table(schemas.NEXT_PURCHASES)
    exposures, judged_on = calibrate.judged_purchases(none, weighted, settings)
    assert "bought exposures" in judged_on  # a store ingested without order lines
    bought = weighted[(weighted["split"] == "calib") & (weighted["label"] == 1)]
    assert len(exposures) == min(len(bought), settings.max_rows)
    purchases = pd.DataFrame(
        {"source_id": [0, 1, 2, 2], "next_id": [1, 2, 2, 0], "ordered_at": pd.Timestamp("2026-01-01")}
    )
    judged, judged_on = calibrate.judged_purchases(purchases, weighted, settings)
    assert "next purchases" in judged_on
    assert judged[["source_id", "next_id"]].values.tolist() == [[0, 1], [1, 2], [2, 0]]  # never itself


def test_run_records_the_served_order_and_the_counts_it_would_rank_by(
    pipeline, tmp_path, monkeypatch, tiny_params
):
    data, _, _ = pipeline
    workspace(pipeline, tmp_path, monkeypatch, tiny_params)

    metrics = calibrate.run()
    choice = json.loads(paths.SERVED_RANKING.read_text())
    assert metrics["served_ranking"] == choice
    assert choice["served"] in ("model", "co_purchase", "popularity")
    assert set(choice["hits"]) == {"model", "co_purchase", "popularity"}
    assert choice["reason"]
    counts = np.load(paths.COUNT_TABLES)
    assert counts["counts"].sum() == pytest.approx(data.edges["weight"].sum())
    assert len(counts["popularity"]) == len(data.products)
