"""label_delay stage: weights from the delay model bring recent positivity back to the truth."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy.config import IngestConfig
from nextbuy.domain.delay import expected_eventual_label
from nextbuy.mlops import io, schemas
from nextbuy.stages import ingest, label_delay
from tests.helpers import config

CFG = config("label_delay")


def test_recent_positivity_corrected_towards_truth(tiny_params):
    tiny_params["ingest"]["simulator"]["n_impressions"] = 30000
    data = ingest.ingest(IngestConfig.model_validate(tiny_params["ingest"]))
    weighted, model = label_delay.weigh(data.impressions, data.snapshot, CFG)
    io.validate(weighted, schemas.WEIGHTED, "weighted")
    truth = data.truth_impressions.set_index("impression_id").loc[weighted["impression_id"]]
    recent = (weighted["elapsed_days"] < 5).to_numpy()
    true_rate = truth["label_eventual"].to_numpy()[recent].mean()
    observed = weighted["label"].to_numpy()[recent].mean()
    corrected = expected_eventual_label(weighted["label"].to_numpy(), weighted["p_flip"].to_numpy())[
        recent
    ].mean()
    assert observed < true_rate
    assert abs(corrected - true_rate) < 0.5 * abs(observed - true_rate)
    # Observed positives are never "flipped"; immature carted negatives count less as negatives.
    assert (weighted.loc[weighted["label"] == 1, "p_flip"] == 0).all()
    negatives = weighted[(weighted["label"] == 0) & (weighted["elapsed_days"] < 2)]
    assert (
        negatives.loc[negatives["carted"] == 1, "weight_iw"].mean()
        < negatives.loc[negatives["carted"] == 0, "weight_iw"].mean()
    )


def test_delay_model_ignores_holdout_labels(tiny_params):
    data = ingest.ingest(IngestConfig.model_validate(tiny_params["ingest"]))
    _, model = label_delay.weigh(data.impressions, data.snapshot, CFG)
    # Removing every calib/test conversion must not change the fitted delay model.
    blinded = data.impressions.copy()
    blinded.loc[blinded["split"] != "train", "converted_at"] = pd.NaT
    _, blind_model = label_delay.weigh(blinded, data.snapshot, CFG)
    np.testing.assert_allclose(model.conv_coef, blind_model.conv_coef)
    np.testing.assert_allclose(model.delay_coef, blind_model.delay_coef)


def test_weighted_rows_carry_what_was_observed_at_the_snapshot():
    snapshot = pd.Timestamp("2026-01-10")
    at = lambda days: snapshot - pd.Timedelta(days=days)  # noqa: E731
    nat = pd.NaT
    impressions = pd.DataFrame(
        {
            "impression_id": [1, 2, 3, 4, 5, 6],
            "source_id": [0, 0, 1, 1, 2, 2],
            "shown_id": [1, 2, 0, 2, 0, 1],
            "shown_at": [at(5), at(3), at(2), at(1), at(4), snapshot + pd.Timedelta(hours=6)],
            "clicked_at": [at(4.9), nat, at(1.9), at(0.9), at(3.9), nat],
            "carted_at": [at(4.8), nat, nat, at(0.8), nat, nat],
            "converted_at": [at(4), nat, nat, nat, at(2), nat],
            "split": ["train", "train", "train", "train", "test", "test"],
        }
    )
    weighted, _ = label_delay.weigh(impressions, snapshot, CFG)
    assert weighted["impression_id"].tolist() == [1, 2, 3, 4, 5, 6]
    assert weighted["label"].tolist() == [1, 0, 0, 0, 1, 0]
    assert weighted["clicked"].tolist() == [1, 0, 1, 1, 1, 0]
    assert weighted["carted"].tolist() == [1, 0, 0, 1, 0, 0]
    # Days since shown at the snapshot; a row stamped after it counts as just shown.
    np.testing.assert_allclose(weighted["elapsed_days"], [5, 3, 2, 1, 4, 0])
    assert (weighted.loc[weighted["label"] == 1, "p_flip"] == 0).all()
