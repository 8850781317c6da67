"""calibrate stage core: calibration fitted on matured calib rows only; buckets ordered by uncertainty."""

from __future__ import annotations

import numpy as np
import pytest

from nextbuy.config import IngestConfig, TrainConfig
from nextbuy.mlops import io, schemas
from nextbuy.stages import calibrate, ingest, label_delay, train
from tests.helpers import config


@pytest.fixture(scope="module")
def trained():
    from tests.conftest import TINY_PARAMS

    data = ingest.ingest(IngestConfig.model_validate(TINY_PARAMS["ingest"]))
    weighted, _ = label_delay.weigh(
        data.impressions, data.snapshot, config("label_delay"), data.products, data.edges
    )
    _, moments, _ = train.fit(
        data.products, data.edges, weighted, TrainConfig.model_validate(TINY_PARAMS["train"]), progress=False
    )
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
