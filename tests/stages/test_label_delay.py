"""label_delay stage: weights from the delay model bring recent positivity back to the truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nextbuy.config import IngestConfig
from nextbuy.constants import WEIGHTING_METHODS
from nextbuy.domain.delay import expected_eventual_label
from nextbuy.mlops import io, schemas
from nextbuy.stages import ingest, label_delay
from tests.helpers import config

CFG = config("label_delay")


def test_recent_positivity_corrected_towards_truth(tiny_params):
    tiny_params["ingest"]["simulator"]["n_impressions"] = 30000
    data = ingest.ingest(IngestConfig.model_validate(tiny_params["ingest"]))
    weighted, _ = label_delay.weigh(data.impressions, data.snapshot, CFG, data.products, data.edges)
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
    # Observed positives are never "flipped"; immature carted negatives carry positive mass
    # (importance) and count less as negatives (importance_ipw).
    assert (weighted.loc[weighted["label"] == 1, "p_flip"] == 0).all()
    negatives = weighted[(weighted["label"] == 0) & (weighted["elapsed_days"] < 2)]
    carted = negatives["carted"] == 1
    assert negatives.loc[carted, "target_importance"].mean() > 0.2
    assert negatives.loc[~carted, "target_importance"].mean() < 0.05
    assert (
        negatives.loc[carted, "weight_importance_ipw"].mean()
        < negatives.loc[~carted, "weight_importance_ipw"].mean()
    )
    np.testing.assert_array_equal(weighted["weight_importance"], 1.0)


def test_delay_model_ignores_holdout_labels(tiny_params):
    data = ingest.ingest(IngestConfig.model_validate(tiny_params["ingest"]))
    _, models = label_delay.weigh(data.impressions, data.snapshot, CFG, data.products, data.edges)
    # Removing every calib/test conversion must not change the fitted delay models.
    blinded = data.impressions.copy()
    blinded.loc[blinded["split"] != "train", "converted_at"] = pd.NaT
    _, blind_models = label_delay.weigh(blinded, data.snapshot, CFG, data.products, data.edges)
    for method, model in models.items():
        np.testing.assert_allclose(model.conv_coef, blind_models[method].conv_coef)
        np.testing.assert_allclose(model.delay_coef, blind_models[method].delay_coef)


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
    weighted, _ = label_delay.weigh(impressions, snapshot, config("label_delay", wait_days=1))
    assert weighted["impression_id"].tolist() == [1, 2, 3, 4, 5, 6]
    assert weighted["label"].tolist() == [1, 0, 0, 0, 1, 0]
    assert weighted["clicked"].tolist() == [1, 0, 1, 1, 1, 0]
    assert weighted["carted"].tolist() == [1, 0, 0, 1, 0, 0]
    # Days since shown at the snapshot; a row stamped after it counts as just shown.
    np.testing.assert_allclose(weighted["elapsed_days"], [5, 3, 2, 1, 4, 0])
    assert (weighted.loc[weighted["label"] == 1, "p_flip"] == 0).all()


def test_weighted_training_positive_rate_matches_the_eventual_rate(tiny_params):
    """What training sees through the importance weights is the eventual positive rate (within
    its 95% interval), though the freshest days' conversions are still missing."""
    tiny_params["ingest"]["simulator"]["n_impressions"] = 40000
    data = ingest.ingest(IngestConfig.model_validate(tiny_params["ingest"]))
    weighted, _ = label_delay.weigh(data.impressions, data.snapshot, CFG, data.products, data.edges)
    train = weighted[weighted["split"] == "train"]
    eventual = data.truth_impressions.set_index("impression_id").loc[train["impression_id"], "label_eventual"]
    truth = eventual.to_numpy().mean()
    observed = train["label"].to_numpy().mean()
    rates = {}
    for method in ("importance", "importance_ipw"):
        target, w = train[f"target_{method}"].to_numpy(), train[f"weight_{method}"].to_numpy()
        estimate = (w * target).sum() / w.sum()
        half = 1.96 * (w * (target - estimate)).std() * np.sqrt(len(w)) / w.sum()  # delta-method CI
        rates[method] = (estimate, half)
    estimate, half = rates["importance"]
    assert abs(estimate - truth) < half, (estimate, truth, half)
    # The plain 1/F weights (an ablation) move toward the truth, but the freshest conversions'
    # weights are clipped at max_weight, so they need not reach it.
    assert observed < rates["importance_ipw"][0] <= truth + rates["importance_ipw"][1]
    assert observed < truth - half  # the naive rate is visibly biased: the check can fail
    # `wait` keeps only matured impressions; every weight is finite and >= 0.
    wait = train["weight_wait"].to_numpy()
    assert set(np.unique(wait)) <= {0.0, 1.0}
    assert (wait[train["elapsed_days"].to_numpy() < CFG.wait_days] == 0).all()
    for method in WEIGHTING_METHODS:
        assert np.isfinite(train[f"weight_{method}"]).all()
        assert (train[f"weight_{method}"] >= 0).all()


def _log(days_ago: list[float], converted_after: list[float | None], snapshot: pd.Timestamp) -> pd.DataFrame:
    shown = [snapshot - pd.Timedelta(days=d) for d in days_ago]
    converted = [
        s + pd.Timedelta(days=c) if c is not None else pd.NaT
        for s, c in zip(shown, converted_after, strict=True)
    ]
    n = len(shown)
    return pd.DataFrame(
        {
            "impression_id": range(n),
            "source_id": [0] * n,
            "shown_id": [1] * n,
            "shown_at": shown,
            "clicked_at": [c if c is not pd.NaT else pd.NaT for c in converted],
            "carted_at": converted,
            "converted_at": converted,
            "split": ["train"] * n,
        }
    )


@pytest.mark.parametrize(
    ("days_ago", "converted_after", "column", "message"),
    [
        ([10, 9, 8, 2], [None, None, None, None], "converted_at", "has a conversion"),
        ([3, 2, 1, 0.5], [0.1, None, None, None], "shown_at", "nothing has matured"),
        ([20, 15, 10, 0.04, 0.03], [None, None, None, 0.01, 0.01], "converted_at", "no matured conversion"),
    ],
    ids=["no-conversions", "nothing-matured", "conversions-all-in-the-last-hour"],
)
def test_nothing_to_learn_the_delay_from_is_refused(days_ago, converted_after, column, message):
    snapshot = pd.Timestamp("2026-03-01")
    with pytest.raises(io.DataError, match=message) as err:
        label_delay.weigh(_log(days_ago, converted_after, snapshot), snapshot, CFG)
    assert err.value.column == column
    assert "impressions" in err.value.path


def test_conversions_all_too_recent_to_correct_are_refused(monkeypatch):
    """When every training conversion's weight hits max_weight the weights carry no
    information on the rate: refused, not trained on."""
    from nextbuy.domain import delay

    snapshot = pd.Timestamp("2026-03-01")
    log = _log([20, 15, 10, 0.5, 0.4], [1.0, None, None, 0.1, 0.1], snapshot)

    def month_long_delays(signals, columns, family, horizon_days=None):  # conversions take years
        return delay.DelayModel(family, (), [], [], conv_coef=[-2.0], delay_coef=[[np.log(600.0)], [0.0]])

    monkeypatch.setattr("nextbuy.domain.delay.rows.fit_delay_model", month_long_delays)
    with pytest.raises(io.DataError, match="clipped") as err:
        label_delay.weigh(log, snapshot, CFG)
    assert err.value.column == "converted_at"
