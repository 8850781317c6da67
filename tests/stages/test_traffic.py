"""traffic stage cores: simulated days after the snapshot, and the bucket-shift drift drill
(the monitor catching it end to end: tests/stages/test_monitor.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from nextbuy import paths
from nextbuy.bench.serving_fixtures import synthetic_moments
from nextbuy.config import IngestConfig
from nextbuy.data.simulator import simulate_world
from nextbuy.domain.graph.scoring import score_and_uncertainty
from nextbuy.domain.timeunits import DAY
from nextbuy.domain.uncertainty import assign_buckets, fit_bucket_calibration
from nextbuy.mlops import io, schemas
from nextbuy.stages import traffic
from tests.conftest import ROOT, TINY_PARAMS
from tests.helpers import config

INGEST = IngestConfig.model_validate(TINY_PARAMS["ingest"])
N_PRODUCTS = INGEST.simulator.n_products
DRIFT = {"kind": "bucket_shift", "bucket": 1, "start_day": 2, "odds_multiplier": 0.25}


@pytest.fixture(scope="module")
def world():
    """The tiny store's hidden truth (what the ingest stage simulates), without training."""
    return simulate_world(INGEST.simulator, INGEST.seed)


@pytest.fixture(scope="module")
def model():
    """Moments for the world's products and a 3-bucket calibration fitted on their pairs."""
    moments = synthetic_moments(N_PRODUCTS, 8, seed=0)
    rng = np.random.default_rng(1)
    src, dst = rng.integers(0, N_PRODUCTS, 6000), rng.integers(0, N_PRODUCTS, 6000)
    score, unc = score_and_uncertainty(moments, src, dst)
    calibration = fit_bucket_calibration(score, unc, (rng.uniform(size=score.size) < score), 3, 100)
    return moments, calibration


def test_simulate_covers_cfg_days_after_the_snapshot(world):
    cfg = config("traffic", days=3, impressions_per_day=200)
    sim, start, now = traffic.simulate(world, INGEST, cfg)
    assert start == world.snapshot
    assert now == world.snapshot + 3 * DAY
    shown = sim.impressions["shown_at"]
    assert len(sim.impressions) == 600
    assert (shown >= start).all()
    assert (shown < now).all()
    assert shown.dt.floor("D").nunique() == 3
    # Observed at "now": nothing later is visible; ids never collide with the training history's.
    events = sim.impressions[["clicked_at", "carted_at", "converted_at"]]
    assert events.max().max() <= now
    assert (sim.impressions["impression_id"] >= 10**12).all()
    assert sim.truth["impression_id"].equals(sim.impressions["impression_id"])


def test_simulate_is_seeded(world):
    cfg = config("traffic", days=2, impressions_per_day=100)
    a, _, _ = traffic.simulate(world, INGEST, cfg)
    b, _, _ = traffic.simulate(world, INGEST, cfg)
    c, _, _ = traffic.simulate(world, INGEST, config("traffic", days=2, impressions_per_day=100, seed=7))
    pd.testing.assert_frame_equal(a.impressions, b.impressions)
    assert not a.impressions["shown_id"].equals(c.impressions["shown_id"])


def test_drift_multiplier_is_one_before_the_start_and_the_odds_factor_only_in_its_bucket_after(model):
    moments, calibration = model
    drift = config("traffic.drift", **DRIFT)
    start = pd.Timestamp("2026-02-12")
    multiplier = traffic.bucket_drift(moments, calibration, drift, start)
    rng = np.random.default_rng(2)
    src, dst = rng.integers(0, N_PRODUCTS, 3000), rng.integers(0, N_PRODUCTS, 3000)
    bucket = assign_buckets(score_and_uncertainty(moments, src, dst)[1], calibration.edges)
    assert set(bucket) == {0, 1, 2}

    before = multiplier(src, dst, np.full(src.size, start.value - 1))
    assert (before == 1.0).all()
    after = multiplier(src, dst, np.full(src.size, start.value))  # from drift_start on, inclusive
    np.testing.assert_array_equal(after, np.where(bucket == 1, 0.25, 1.0))


def test_drift_multiplier_follows_each_impressions_own_time(model):
    moments, calibration = model
    start = pd.Timestamp("2026-02-12")
    multiplier = traffic.bucket_drift(moments, calibration, config("traffic.drift", **DRIFT), start)
    rng = np.random.default_rng(3)
    src, dst = rng.integers(0, N_PRODUCTS, 500), rng.integers(0, N_PRODUCTS, 500)
    in_bucket = assign_buckets(score_and_uncertainty(moments, src, dst)[1], calibration.edges) == 1
    late = rng.uniform(size=500) < 0.5
    shown = np.where(late, start.value + DAY.value, start.value - DAY.value)
    np.testing.assert_array_equal(multiplier(src, dst, shown), np.where(in_bucket & late, 0.25, 1.0))


def test_simulated_drift_scales_the_true_odds_of_drifted_pairs_only(world, model):
    moments, calibration = model
    cfg = config("traffic", days=4, impressions_per_day=500, drift=DRIFT)
    drift_start = world.snapshot + cfg.drift.start_day * DAY
    multiplier = traffic.bucket_drift(moments, calibration, cfg.drift, drift_start)
    clean, _, _ = traffic.simulate(world, INGEST, cfg)
    drifted, _, _ = traffic.simulate(world, INGEST, cfg, multiplier)
    imp = drifted.impressions
    drawn = ["source_id", "shown_id", "shown_at"]
    pd.testing.assert_frame_equal(imp[drawn], clean.impressions[drawn])  # same draws, only the odds move

    def odds(p):
        return p / (1 - p)

    ratio = odds(drifted.truth["p_convert"].to_numpy()) / odds(clean.truth["p_convert"].to_numpy())
    bucket = assign_buckets(
        score_and_uncertainty(moments, imp["source_id"], imp["shown_id"])[1], calibration.edges
    )
    hit = (bucket == 1) & (imp["shown_at"] >= drift_start).to_numpy()
    assert hit.any()
    assert (~hit & (bucket == 1)).any()
    np.testing.assert_allclose(ratio[hit], 0.25, rtol=1e-9)
    np.testing.assert_allclose(ratio[~hit], 1.0, rtol=1e-9)


def test_real_traffic_log_writes_every_declared_out_with_an_empty_truth(tmp_path, monkeypatch):
    """dvc.yaml declares data/traffic_truth: a real log (no ground truth) must still write it,
    or `dvc repro` fails the stage; a simulated run's stale truth is replaced, not kept."""
    from typer.testing import CliRunner

    from nextbuy.cli import app

    monkeypatch.chdir(tmp_path)
    params = {**TINY_PARAMS, "traffic": {**TINY_PARAMS["traffic"], "impressions_path": "inputs/log.csv"}}
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    keys = [f"sku-{i}" for i in range(5)]
    io.write_table(
        pd.DataFrame(
            {
                "product_id": np.arange(5, dtype=np.int64),
                "product_key": keys,
                "category": np.full(5, -1, dtype=np.int64),
                "price": np.full(5, np.nan),
            }
        ),
        paths.PRODUCTS,
        schemas.PRODUCTS,
    )
    t = pd.Timestamp("2026-03-01")
    pd.DataFrame(
        {
            "source_id": keys[:4],
            "shown_id": keys[1:],
            "shown_at": [t + pd.Timedelta(hours=h) for h in range(4)],
            "converted_at": [t + pd.Timedelta(days=1), pd.NaT, pd.NaT, t + pd.Timedelta(days=2)],
        }
    ).to_csv(inputs / "log.csv", index=False)
    paths.TRAFFIC_TRUTH.mkdir(parents=True)
    paths.TRAFFIC_TRUTH_IMPRESSIONS.write_bytes(b"stale truth of a simulated run")

    result = CliRunner().invoke(app, ["traffic"])
    assert result.exit_code == 0, result.output
    assert len(io.read_table(paths.TRAFFIC_IMPRESSIONS, schemas.IMPRESSIONS_LOG)) == 4
    truth = pd.read_parquet(paths.TRAFFIC_TRUTH_IMPRESSIONS)
    assert truth.empty
    assert list(truth.columns) == list(schemas.TRUTH_IMPRESSIONS.columns)
    schemas.TRUTH_IMPRESSIONS.validate(truth)
    for out in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["traffic"]["outs"]:
        assert (tmp_path / out).exists(), out


def _events_project(tmp_path, monkeypatch, snapshot: str | None):
    """A project whose ingest reads the tiny store written as raw logs (6 days past its snapshot)."""
    from typer.testing import CliRunner

    from nextbuy.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    written = CliRunner().invoke(app, ["simulate-logs", "inputs/store", "--days-after", "6"])
    assert written.exit_code == 0, written.output
    printed = yaml.safe_load(written.stdout[written.stdout.index("ingest:") :])["ingest"]
    ingest = TINY_PARAMS["ingest"] | {"source": "events", "snapshot": snapshot}
    ingest |= {"catalogue_path": printed["catalogue_path"]}
    ingest["events"] = TINY_PARAMS["ingest"]["events"] | printed["events"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS | {"ingest": ingest}))
    result = CliRunner().invoke(app, ["ingest"])
    assert result.exit_code == 0, result.output
    return CliRunner().invoke(app, ["traffic"])


def test_after_raw_logs_traffic_is_their_part_after_the_snapshot_labelled_alike(tmp_path, monkeypatch):
    result = _events_project(tmp_path, monkeypatch, "2026-02-10")
    assert result.exit_code == 0, result.output
    logged = io.read_table(paths.TRAFFIC_IMPRESSIONS, schemas.IMPRESSIONS_LOG)
    snapshot = pd.Timestamp("2026-02-10")
    assert logged["shown_at"].min() > snapshot
    assert logged["shown_at"].max() <= snapshot + 6 * DAY
    assert logged["converted_at"].notna().any()
    ingested_ids = set(io.read_table(paths.IMPRESSIONS, schemas.IMPRESSIONS)["impression_id"])
    assert not ingested_ids & set(logged["impression_id"])  # nothing the model trained on
    meta = io.read_json(paths.TRAFFIC_META)
    assert pd.Timestamp(meta["start"]) == snapshot
    assert meta["drift"] is None


def test_raw_logs_ending_at_the_snapshot_say_in_one_line_what_to_set(tmp_path, monkeypatch):
    result = _events_project(tmp_path, monkeypatch, None)  # the snapshot is the logs' end
    assert result.exit_code == 2
    assert "no impression after the snapshot" in result.output
    assert "set ingest.snapshot before the log's end, or traffic.impressions_path" in result.output
