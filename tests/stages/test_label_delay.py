"""label_delay stage: weights from the delay model bring recent positivity back to the truth."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy.mlops import io, schemas
from nextbuy.config import IngestConfig, LabelDelayConfig
from nextbuy.domain.delay import expected_eventual_label
from nextbuy.stages import ingest, label_delay


def test_recent_positivity_corrected_towards_truth(tiny_params):
    tiny_params["ingest"]["simulator"]["n_impressions"] = 30000
    data = ingest.ingest(IngestConfig.model_validate(tiny_params["ingest"]))
    weighted, model = label_delay.weigh(data.impressions, data.snapshot, LabelDelayConfig())
    io.validate(weighted, schemas.WEIGHTED, "weighted")
    truth = data.truth_impressions.set_index("impression_id").loc[weighted["impression_id"]]
    recent = (weighted["elapsed_days"] < 5).to_numpy()
    true_rate = truth["label_eventual"].to_numpy()[recent].mean()
    observed = weighted["label"].to_numpy()[recent].mean()
    corrected = expected_eventual_label(weighted["label"].to_numpy(), weighted["p_flip"].to_numpy())[recent].mean()
    assert observed < true_rate
    assert abs(corrected - true_rate) < 0.5 * abs(observed - true_rate)
    # Observed positives are never "flipped"; immature carted negatives count less as negatives.
    assert (weighted.loc[weighted["label"] == 1, "p_flip"] == 0).all()
    negatives = weighted[(weighted["label"] == 0) & (weighted["elapsed_days"] < 2)]
    assert negatives.loc[negatives["carted"] == 1, "weight_iw"].mean() < negatives.loc[negatives["carted"] == 0, "weight_iw"].mean()


def test_delay_model_ignores_holdout_labels(tiny_params):
    data = ingest.ingest(IngestConfig.model_validate(tiny_params["ingest"]))
    _, model = label_delay.weigh(data.impressions, data.snapshot, LabelDelayConfig())
    # Removing every calib/test conversion must not change the fitted delay model.
    blinded = data.impressions.copy()
    blinded.loc[blinded["split"] != "train", "converted_at"] = pd.NaT
    _, blind_model = label_delay.weigh(blinded, data.snapshot, LabelDelayConfig())
    np.testing.assert_allclose(model.conv_coef, blind_model.conv_coef)
    np.testing.assert_allclose(model.delay_coef, blind_model.delay_coef)
