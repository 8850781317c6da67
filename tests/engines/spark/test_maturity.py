"""The model cards' AUC on Spark: the Mann-Whitney rank sum over distinct scores, summed per range
of scores on the executors, equals ``evaluation.soft_auc`` with ties, zero weights and fractional
labels; ``nextbuy models mature``'s re-scoring writes the same card rows on either engine; and
a version's matured figures on the tiny store's traffic are the same on Spark as in process."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextbuy import paths
from nextbuy.bench.serving_fixtures import load_bundle, write_bundle_files
from nextbuy.domain.evaluation import soft_auc
from nextbuy.engines.spark import session as spark_session
from nextbuy.engines.spark.maturity import OnSpark, rank_sums, weighted_auc
from nextbuy.mlops import io, schemas
from tests.engines.spark import parity


def frame(local_spark, columns: dict):
    return spark_session.session(local_spark).createDataFrame(pd.DataFrame(columns))


def test_weighted_auc_equals_soft_auc_with_ties_zero_weights_and_fractional_labels(local_spark):
    rng = np.random.default_rng(0)
    n = 20_000
    score = np.round(rng.normal(size=n), 1)  # about 80 distinct scores: every one tied
    label = (rng.uniform(size=n) < 1 / (1 + np.exp(-score))).astype(float)
    label[rng.uniform(size=n) < 0.1] = 0.3  # delay-corrected labels are fractional
    weight = rng.lognormal(size=n) * (rng.uniform(size=n) > 0.2)  # a fifth of the rows weigh 0
    rows = frame(local_spark, {"score": score, "label": label, "weight": weight})
    want = soft_auc(label, score, weight)
    assert math.isclose(weighted_auc(rows, "score", "label", "weight"), want, rel_tol=parity.RTOL)
    assert math.isclose(weighted_auc(rows, "score", "label"), soft_auc(label, score), rel_tol=parity.RTOL)
    distinct = rows.groupBy("score").count().withColumnRenamed("count", "n")
    ranges = rank_sums(distinct, "score", [("n", "n")], 4)
    assert len(ranges) == 4  # the ranges' sums met on the driver, one row each
    assert ranges["pos0"].sum() == n


def test_weighted_auc_of_all_tied_scores_is_a_half_and_of_one_class_none(local_spark):
    tied = frame(local_spark, {"score": np.full(50, 0.7), "label": np.arange(50) % 2.0})
    assert weighted_auc(tied, "score", "label") == 0.5
    weight = np.where(np.arange(6) % 2 == 1, 0.0, 1.0)  # every positive weighs 0
    one_class = frame(local_spark, {"score": np.arange(6.0), "label": np.arange(6) % 2.0, "w": weight})
    assert weighted_auc(one_class, "score", "label", "w") is None


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """A complete version of a store's catalogue in an MLflow store of ``tmp_path`` (the cwd),
    the champion, with 28 days of traffic before its "now"."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from nextbuy.bench.serving_fixtures import mlflow_store, stored_files
    from nextbuy.domain import catalogue
    from nextbuy.mlops import tracking
    from nextbuy.model_card import Card, mlflow_cards
    from nextbuy.release import registry
    from nextbuy.release.publishing import log_serving_model

    monkeypatch.chdir(tmp_path)
    n = 40
    products = pd.DataFrame(
        {"product_id": np.arange(n), "product_key": [f"p{i}" for i in range(n)], "category": 0, "price": 1.0}
    )
    identity = catalogue.identity(products)
    tags = {registry.COMPLETE: "true", registry.PASSED: "true", registry.CATALOGUE: identity}
    rng, now, rows = np.random.default_rng(1), pd.Timestamp("2026-03-29"), 5000
    shown = now - pd.to_timedelta(rng.uniform(0, 28, rows), unit="D")
    converted = pd.Series(shown + pd.to_timedelta(rng.uniform(0, 10, rows), unit="D"))
    converted[(rng.random(rows) > 0.3) | (converted > now)] = pd.NaT
    traffic = pd.DataFrame(
        {
            "impression_id": np.arange(rows),
            "source_id": rng.integers(0, n, rows),  # 40 x 40 pairs for 5000 rows: tied scores
            "shown_id": rng.integers(0, n, rows),
            "shown_at": shown.to_numpy(),
            "clicked_at": pd.NaT,
            "carted_at": pd.NaT,
            "converted_at": converted.to_numpy(),
        }
    )
    io.write_table(traffic, paths.TRAFFIC_IMPRESSIONS, schemas.IMPRESSIONS_LOG)
    io.write_json({"now": str(now)}, paths.TRAFFIC_META)
    bundle = write_bundle_files(tmp_path / "bundle", n_products=n, d=8, seed=0, n_fit=2000)
    files = stored_files(bundle, tmp_path / "stored")  # what deploy logs
    with mlflow_store(f"sqlite:///{tmp_path / 'mlflow.db'}"):
        tracking.configure(tmp_path)
        client = MlflowClient()
        client.create_registered_model("m")
        with mlflow.start_run():
            version = log_serving_model(
                load_bundle(files),
                "m",
                files.moments,
                files.calibration,
                files.thresholds,
                files.ranking,
                tags=tags,
            )
        client.set_registered_model_alias("m", registry.CHAMPION, version)
        run_id = client.get_model_version("m", version).run_id
        mlflow_cards.write(client, Card(model_name="m", version=version, run_id=run_id))  # as deploy does
        yield client, products


def test_models_are_matured_on_spark_with_the_card_rows_of_the_pandas_engine(registered, local_spark):
    from nextbuy import model_card
    from nextbuy.config import EngineConfig
    from nextbuy.stages.monitor import maturity_engine
    from tests.conftest import TINY_PARAMS
    from tests.helpers import config

    client, products = registered
    settings = (config("monitor", matured_days=[7, 14, 28], matured_min_conversions=20), config("deploy"))
    files = (paths.TRAFFIC_IMPRESSIONS, paths.TRAFFIC_META)
    engine = parity.engine("spark", EngineConfig.model_validate(TINY_PARAMS["engine"]), local_spark)
    on_spark = maturity_engine(engine)
    assert isinstance(on_spark, partial)
    assert on_spark.func is OnSpark
    spark = model_card.mature_recent(client, "m", products, files, settings, on_spark)
    pandas_ = model_card.mature_recent(client, "m", products, files, settings)
    assert [r["maturity_days"] for r in spark[0]["rows"]] == [7, 14]  # 28 days: not one has matured
    parity.same_values(pandas_, spark)


def test_recent_versions_measure_the_same_on_spark_as_in_process(tiny_store, local_spark):
    """The card's figures of a version on the tiny store's traffic: counts exact, AUC and recall
    to ``parity.RTOL``; repeated pairs give tied scores, and the rows not yet matured for the
    longer maturities count with no mass."""
    from nextbuy.model_card import InProcess

    products = io.read_table(paths.PRODUCTS, schemas.PRODUCTS)
    bundle = load_bundle(write_bundle_files(Path("bundle"), n_products=len(products), n_buckets=2))
    now = pd.Timestamp(io.read_json(paths.TRAFFIC_META)["now"])
    days = [1, 3, 5, 30]  # 6 days of traffic: nothing has had 30 days yet
    pandas_ = InProcess(paths.TRAFFIC_IMPRESSIONS).measured(bundle, now, days)
    spark = OnSpark(local_spark, paths.TRAFFIC_IMPRESSIONS).measured(bundle, now, days)
    assert [m[:3] for m in spark] == [m[:3] for m in pandas_]  # days, rows, conversions
    parity.same_values([[m.auc, m.recall] for m in pandas_], [[m.auc, m.recall] for m in spark])
    assert pandas_[0].rows > pandas_[1].rows > pandas_[2].rows > 0
    assert pandas_[2].conversions > 0
    assert pandas_[3][1:] == (0, 0, None, None)
    traffic = io.read_table(paths.TRAFFIC_IMPRESSIONS, schemas.IMPRESSIONS_LOG)
    score = bundle.score(traffic["source_id"].to_numpy(), traffic["shown_id"].to_numpy())["score"]
    assert score.nunique() < len(score)  # ties
