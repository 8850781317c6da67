"""Delay model: fit recovery on data drawn from its own assumptions (with and without pair
features), and the behaviour of p_flip / importance weights that training relies on."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from nextbuy.domain.delay import (
    ENGAGEMENT,
    DelayFamily,
    DelayModel,
    effective_sample_size,
    expected_eventual_label,
    exposure_share,
    fit_delay_model,
    flip_probability,
    flip_table,
    importance_weights,
    normalised,
    pair_features,
)


def frame(elapsed=0.0, label=0, clicked=0, carted=0, delay=np.nan, engaged=0.0, **features) -> pd.DataFrame:
    """A signals frame (what the delay model reads) from scalars or arrays; ``engaged``: days
    from shown to the last engagement (where the delay clock starts)."""
    columns = {
        "elapsed_days": elapsed,
        "label": label,
        "delay_days": delay,
        "clicked": clicked,
        "carted": carted,
        "engaged_days": engaged,
        "engagement_lag": np.log1p(24.0 * np.asarray(engaged, dtype=float)),
    }
    arrays = np.broadcast_arrays(
        *(np.asarray(v, dtype=float) for v in (*columns.values(), *features.values()))
    )
    return pd.DataFrame(dict(zip([*columns, *features], (np.atleast_1d(a) for a in arrays), strict=True)))


FLAGS = ("clicked", "carted")


def engagement_model(family: str, conv, delay_coef) -> DelayModel:
    """A hand-set model over [clicked, carted] with no standardisation."""
    return DelayModel(family, FLAGS, center=[0, 0], scale=[1, 1], conv_coef=conv, delay_coef=delay_coef)


CONV = np.array([-2.5, 1.5, 2.0])  # logit on [1, clicked, carted]
MEDIAN = {0: 3.0, 1: 1.0}  # days; carted users buy sooner
GROUPS = [(0, 0), (1, 0), (1, 1)]


def simulate(n: int, family: str, seed: int = 0, horizon: float = 30.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    clicked = (rng.random(n) < 0.5).astype(np.int8)
    carted = (clicked * (rng.random(n) < 0.4)).astype(np.int8)
    p = expit(CONV[0] + CONV[1] * clicked + CONV[2] * carted)
    converts = rng.random(n) < p
    median = np.where(carted == 1, MEDIAN[1], MEDIAN[0])
    if family == "lognormal":
        delay = median * np.exp(rng.normal(0.0, 1.0, n))
    else:
        k = np.where(carted == 1, 1.2, 0.8)
        delay = median / np.log(2.0) ** (1.0 / k) * rng.weibull(k)
    elapsed = rng.uniform(0.0, horizon, n)  # uniform shown times before the snapshot
    label = (converts & (delay <= elapsed)).astype(np.int8)  # censored at the snapshot
    return {
        "elapsed": elapsed,
        "label": label,
        "delay": np.where(label == 1, delay, np.nan),
        "clicked": clicked,
        "carted": carted,
        "p": p,
        "eventual": converts.astype(np.int8),
    }


def signals(data: dict[str, np.ndarray]) -> pd.DataFrame:
    return frame(data["elapsed"], data["label"], data["clicked"], data["carted"], data["delay"])


def fit(data: dict[str, np.ndarray], family: str) -> DelayModel:
    return fit_delay_model(signals(data), ENGAGEMENT, family=family)


@pytest.fixture(scope="module", params=["lognormal", "weibull"])
def fitted(request):
    data = simulate(30_000, request.param, seed=1)
    return request.param, data, fit(data, request.param)


def test_fit_recovers_conversion_probability(fitted):
    family, _, model = fitted
    assert model.family == family
    for clicked, carted in GROUPS:
        got = model.p_convert(frame(clicked=clicked, carted=carted))[0]
        want = expit(CONV[0] + CONV[1] * clicked + CONV[2] * carted)
        assert abs(got - want) < 0.02, (clicked, carted, got, want)


def test_fit_recovers_median_delay(fitted):
    _, _, model = fitted
    for carted, want in MEDIAN.items():
        row = frame(clicked=carted, carted=carted)
        got = model.median_delay(row)[0]
        assert abs(got / want - 1.0) < 0.15, (carted, got, want)
        # The survival function agrees with the median it implies.
        assert np.exp(model.log_survival(np.array([got]), row))[0] == pytest.approx(0.5, abs=1e-9)


def test_expected_label_corrects_recent_positivity(fitted):
    _, data, model = fitted
    p_flip = flip_probability(model, signals(data))
    soft = expected_eventual_label(data["label"], p_flip)
    recent = data["elapsed"] < 3.0
    true_rate = data["eventual"][recent].mean()
    naive = data["label"][recent].mean()
    corrected = soft[recent].sum() / recent.sum()
    assert naive < 0.75 * true_rate  # censoring visibly hides conversions
    assert abs(corrected - true_rate) < 0.1 * true_rate


def test_importance_weighted_means_match_true_distribution(fitted):
    _, data, model = fitted
    w = importance_weights(model, signals(data), max_weight=1e4)
    n = w.size
    # E_Q[w] = 1 and E_Q[w g(x)] = E_P[g(x)]: the weights do not shift x.
    assert w.sum() / n == pytest.approx(1.0, abs=0.02)
    assert (w * data["carted"]).sum() / n == pytest.approx(data["carted"].mean(), abs=0.01)
    # E_Q[w y_obs] = E_P[y]: weighted observed conversion rate ~ eventual rate.
    true_rate = data["eventual"].mean()
    assert (w * data["label"]).sum() / n == pytest.approx(true_rate, abs=0.01)
    assert data["label"].mean() < true_rate - 0.01


def test_weights_one_ish_when_old_below_one_when_recent_carted(fitted):
    _, data, model = fitted
    w = importance_weights(model, signals(data), max_weight=10.0)
    old = data["elapsed"] > 25.0
    assert np.all(w[old] > 0.9)
    assert np.all(w[old] < 1.1)
    recent_carted_neg = (data["elapsed"] < 1.0) & (data["carted"] == 1) & (data["label"] == 0)
    assert recent_carted_neg.sum() > 10
    assert np.all(w[recent_carted_neg] < 0.8)
    assert np.all((w >= 0) & (w <= 10.0))


def test_recent_carted_negative_is_likely_to_flip():
    model = engagement_model("lognormal", CONV, [[np.log(3.0), 0.0, np.log(1 / 3)], [0.0, 0.0, 0.0]])
    rows = frame([0.5, 0.5, 0.5, 40.0], 0, clicked=[1, 1, 0, 1], carted=[1, 0, 0, 1])
    p_flip = flip_probability(model, rows)
    w = importance_weights(model, rows, max_weight=10.0)
    recent_carted, recent_clicked, recent_plain, old_carted = p_flip
    assert recent_carted > 0.5
    assert recent_carted > recent_clicked > recent_plain
    assert recent_carted > old_carted
    assert old_carted < 0.01
    np.testing.assert_allclose(w, 1.0 - p_flip)
    assert w[0] < 0.5
    assert w[3] > 0.99


def test_positive_rows_have_no_flip_and_upweighted():
    model = engagement_model("weibull", CONV, [[1.0, 0.0, -1.0], [0.0, 0.0, 0.2]])
    rows = frame([0.0, 0.3, 2.0, 60.0], label=1, clicked=1, carted=0)
    assert np.all(flip_probability(model, rows) == 0.0)
    w = importance_weights(model, rows, max_weight=5.0)
    assert w[0] == 5.0  # 1 / (1 - S(0)) = inf, clipped
    assert np.all(np.diff(w) <= 0)
    assert w[-1] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(expected_eventual_label([1, 0, 0], [0.0, 0.25, 0.9]), [1.0, 0.25, 0.9])


@pytest.mark.parametrize("family", ["lognormal", "weibull"])
def test_round_trip(family):
    data = simulate(3_000, family, seed=3)
    model = fit(data, family)
    back = DelayModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert back.family == family
    np.testing.assert_array_equal(back.conv_coef, model.conv_coef)
    np.testing.assert_array_equal(back.delay_coef, model.delay_coef)
    np.testing.assert_array_equal(
        flip_probability(back, signals(data)), flip_probability(model, signals(data))
    )


def test_robust_to_empty_or_separated_signal_groups():
    rng = np.random.default_rng(5)
    n = 2_000
    e = rng.uniform(0, 20, n)
    z = np.zeros(n, dtype=np.int8)
    label = (rng.random(n) < 0.1).astype(np.int8)
    delay = np.where(label == 1, np.minimum(rng.exponential(1.0, n), e), np.nan)
    # Nobody clicked or carted: those coefficients are unidentified, must stay finite.
    model = fit_delay_model(frame(e, label, z, z, delay), ENGAGEMENT)
    assert np.all(np.isfinite(model.conv_coef))
    assert np.all(np.isfinite(model.delay_coef))
    assert model.p_convert(frame())[0] == pytest.approx(0.1, abs=0.03)
    # Carted rows that never convert (separation): finite, and p for carted is small.
    carted = (rng.random(n) < 0.2).astype(np.int8)
    label2 = np.where(carted == 1, 0, label).astype(np.int8)
    delay2 = np.where(label2 == 1, delay, np.nan)
    for family in ("lognormal", "weibull"):
        rows = frame(e, label2, carted, carted, delay2)
        m2 = fit_delay_model(rows, ENGAGEMENT, family=family)
        assert np.all(np.isfinite(m2.conv_coef))
        assert np.all(np.isfinite(m2.delay_coef))
        p_flip = flip_probability(m2, rows)
        assert np.all(np.isfinite(p_flip))
        assert np.all((p_flip >= 0) & (p_flip <= 1))
    # No conversions at all.
    m3 = fit_delay_model(frame(e, z, z, z), ENGAGEMENT)
    assert m3.p_convert(frame())[0] < 0.01


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="finite delay_days"):
        fit_delay_model(frame(1.0, label=1), ENGAGEMENT)  # a conversion with no delay
    with pytest.raises(ValueError, match="unknown delay family"):
        fit_delay_model(frame(1.0), ENGAGEMENT, family="gamma")
    with pytest.raises(ValueError, match="elapsed_days"):
        fit_delay_model(frame(-1.0), ENGAGEMENT)
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit_delay_model(frame(1.0, log_price=np.nan), (*ENGAGEMENT, "log_price"))
    model = engagement_model("lognormal", CONV, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="lack column"):
        flip_probability(model, frame(1.0).drop(columns="carted"))


def test_observed_signals_read_what_has_happened_by_then():
    from nextbuy.domain.delay import observed_signals

    at = pd.Timestamp("2026-03-10")
    day = pd.Timedelta(days=1)
    log = pd.DataFrame(
        {
            "shown_at": [at - 3 * day, at - 1 * day, at + 1 * day],
            "clicked_at": [at - 3 * day, pd.NaT, pd.NaT],
            "carted_at": [at - 2.5 * day, pd.NaT, pd.NaT],
            "converted_at": [at - 2 * day, pd.NaT, pd.NaT],
        },
        index=[10, 11, 12],
    )
    seen = observed_signals(log, at)
    assert list(seen.index) == [10, 11, 12]
    assert seen["elapsed_days"].tolist() == [3.0, 1.0, 0.0]  # shown after `at`: not yet elapsed
    assert seen["label"].tolist() == [1, 0, 0]
    assert seen["delay_days"].iloc[0] == 1.0
    assert seen["delay_days"].iloc[1:].isna().all()
    assert seen["clicked"].tolist() == [1, 0, 0]
    assert seen["carted"].tolist() == [1, 0, 0]
    # The delay clock starts at the cart, half a day after it was shown.
    assert seen["engaged_days"].tolist() == [0.5, 0.0, 0.0]
    assert seen["engagement_lag"].iloc[0] == pytest.approx(np.log1p(12.0))


def test_engagement_times_count_only_up_to_the_conversion_and_the_reading():
    from nextbuy.domain.delay import observed_signals, waited_days

    at = pd.Timestamp("2026-03-10")
    hour = pd.Timedelta(hours=1)
    shown = at - 48 * hour
    log = pd.DataFrame(
        {
            "shown_at": [shown] * 3,
            # A click after the purchase did not lead to it (ingest refuses such rows; the
            # clock ignores one if given it); a cart recorded after ``at`` is not known yet.
            "clicked_at": [shown + 1 * hour, shown + 30 * hour, shown + 2 * hour],
            "carted_at": [pd.NaT, pd.NaT, at + hour],
            "converted_at": [pd.NaT, shown + 20 * hour, pd.NaT],
        }
    )
    seen = observed_signals(log, at)
    np.testing.assert_allclose(seen["engaged_days"], np.array([1, 0, 2]) / 24)
    np.testing.assert_allclose(waited_days(seen), np.array([47, 48, 46]) / 24)


def simulate_engaged(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Carts that come hours to days after the impression, a delay measured from the cart, and
    a conversion probability that falls with the time it took to cart."""
    rng = np.random.default_rng(seed)
    carted = (rng.random(n) < 0.5).astype(np.int8)
    engaged = np.where(carted == 1, rng.exponential(3.0, n), 0.0)
    p = expit(-2.0 + 2.0 * carted - 0.8 * np.log1p(24.0 * engaged) * carted / 4.0)
    converts = rng.random(n) < p
    delay_from_cart = np.exp(np.log(1.0) + 0.7 * rng.normal(size=n))
    elapsed = engaged + rng.uniform(0.0, 20.0, n)  # every cart is seen by the snapshot
    label = (converts & (engaged + delay_from_cart <= elapsed)).astype(np.int8)
    delay = np.where(label == 1, engaged + delay_from_cart, np.nan)
    return frame(elapsed, label, carted, carted, delay, engaged=engaged), converts.astype(np.int8)


def test_the_clock_from_the_last_engagement_predicts_the_flips_the_impression_clock_misses():
    rows, eventual = simulate_engaged(30_000, seed=4)
    negative = rows["label"].to_numpy() == 0
    to_flip = eventual[negative].sum()
    timed = fit_delay_model(rows, ENGAGEMENT)
    untimed_rows = rows.drop(columns=["engaged_days", "engagement_lag"])
    untimed = fit_delay_model(untimed_rows, FLAGS)
    # The flip mass matches what will flip (seeds 4-8: within 7%); the impression clock sees carts
    # days old as long-waited and still counts their conversions as due (+60 to +85%).
    assert flip_probability(timed, rows)[negative].sum() == pytest.approx(to_flip, rel=0.1)
    assert flip_probability(untimed, untimed_rows)[negative].sum() > 1.4 * to_flip
    timed_nll = _flip_nll(flip_probability(timed, rows)[negative], eventual[negative])
    untimed_nll = _flip_nll(flip_probability(untimed, untimed_rows)[negative], eventual[negative])
    assert timed_nll < 0.9 * untimed_nll


def _flip_nll(p_flip: np.ndarray, flipped: np.ndarray) -> float:
    p_flip = np.clip(p_flip, 1e-12, 1 - 1e-12)
    return float(-np.mean(flipped * np.log(p_flip) + (1 - flipped) * np.log1p(-p_flip)))


def simulate_with_price(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Conversion grows with a pair score, the delay with log price (as in the store simulator)."""
    rng = np.random.default_rng(seed)
    log_price, score = rng.normal(3.0, 1.0, n), rng.normal(0.0, 1.0, n)
    p = expit(-2.0 + 1.2 * score)
    converts = rng.random(n) < p
    delay = np.exp(np.log(2.0) + 0.6 * (log_price - 3.0) + 0.8 * rng.normal(size=n))
    elapsed = rng.uniform(0.0, 20.0, n)
    label = (converts & (delay <= elapsed)).astype(np.int8)
    rows = frame(elapsed, label, delay=np.where(label == 1, delay, np.nan), log_price=log_price, score=score)
    return rows, p, converts.astype(np.int8)


def test_features_recovered_and_they_beat_the_engagement_only_model():
    rows, p, eventual = simulate_with_price(30_000, seed=2)
    full = fit_delay_model(rows, (*ENGAGEMENT, "log_price", "score"))
    plain = fit_delay_model(rows, ENGAGEMENT)
    # The fitted p follows the true one; the median delay follows price.
    assert np.corrcoef(full.p_convert(rows), p)[0, 1] > 0.98
    cheap, dear = frame(log_price=2.0, score=0.0), frame(log_price=4.0, score=0.0)
    # Tightly: a ridge on the delay's price slope would shrink it (2.9 where 3.3 is true), and the
    # fit would then blame expensive products' late conversions on a lower p.
    assert full.median_delay(dear)[0] / full.median_delay(cheap)[0] == pytest.approx(np.exp(1.2), rel=0.05)
    negative = rows["label"].to_numpy() == 0
    # The flip mass on the negatives is the number that will still convert.
    assert flip_probability(full, rows)[negative].sum() == pytest.approx(eventual[negative].sum(), rel=0.03)
    # Feature-aware flip probabilities predict which negatives flip better than engagement alone.

    def nll(model):
        q = np.clip(flip_probability(model, rows)[negative], 1e-9, 1 - 1e-9)
        y = eventual[negative]
        return -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))

    assert nll(full) < nll(plain) - 0.005


def test_weight_helpers():
    assert effective_sample_size(np.ones(10)) == pytest.approx(10.0)
    assert effective_sample_size(np.r_[np.ones(9), 0.0]) == pytest.approx(9.0)
    assert effective_sample_size(np.r_[np.ones(9), 9.0]) < 5
    assert effective_sample_size(np.zeros(3)) == 0.0
    np.testing.assert_allclose(normalised(np.array([1.0, 3.0])), [0.5, 1.5])


def test_pair_features_read_the_catalogue_and_the_graph():
    products = pd.DataFrame(
        {"product_id": [0, 1, 2, 3], "category": [0, 0, 1, -1], "price": [10.0, np.nan, 100.0, 10.0]}
    )
    edges = pd.DataFrame(
        {"src": [0, 0, 1, 2, 0], "dst": [2, 2, 2, 0, 1], "weight": [1.0, 2.0, 1.0, 1.0, 1.0]}
    )
    got = pair_features(np.array([0, 3, 1]), np.array([2, 1, 0]), products, edges)
    assert got["pair_copurchases"].tolist() == pytest.approx([np.log(4.0), 0.0, 0.0])  # repeated rows add up
    assert got["shown_popularity"].tolist() == pytest.approx([np.log(5.0), np.log(2.0), np.log(2.0)])
    assert got["source_activity"].tolist() == pytest.approx([np.log(5.0), 0.0, np.log(2.0)])
    assert got["log_price"].tolist() == pytest.approx(
        [np.log(100.0), np.log(10.0), np.log(10.0)]
    )  # NaN -> median
    # Category 0 leads to category 1 far more than category 1's share: positive lift.
    assert got["category_lift"].iloc[0] > 0
    assert np.isfinite(got["category_lift"]).all()
    # Product 2 on sale for a quarter of the record: its 4 co-purchases are a rate of 16.
    launched = pair_features(
        np.array([0]), np.array([2]), products, edges, exposure=np.array([1, 1, 0.25, 1])
    )
    assert launched["shown_popularity"].tolist() == pytest.approx([np.log(17.0)])


def test_exposure_share_dates_each_product_by_its_first_impression():
    at = pd.Timestamp("2026-01-21")
    impressions = pd.DataFrame(
        {
            "source_id": [0, 0, 1, 0],
            "shown_id": [1, 1, 2, 2],
            "shown_at": pd.to_datetime(
                ["2026-01-01 00:00", "2026-01-05 00:00", "2026-01-16 00:00", "2026-01-20 23:00"]
            ),
        }
    )
    share = exposure_share(impressions, n_products=5, at=at)
    # Products 0 and 1 from the log's start; 2 from day 15 (as the source) of 20; 3 and 4
    # never shown count as on sale throughout.
    assert share.tolist() == pytest.approx([1.0, 1.0, 0.25, 1.0, 1.0])
    # A product first shown an hour before the snapshot still counts a day.
    late = exposure_share(impressions.iloc[[0, 3]].assign(source_id=[0, 4]), n_products=5, at=at)
    assert late[4] == pytest.approx(1 / 20)
    assert late[2] == pytest.approx(1 / 20)
    assert exposure_share(impressions.iloc[:0], n_products=3, at=at).tolist() == [1.0, 1.0, 1.0]


def test_flip_table_by_engagement_and_elapsed_time():
    rows = frame(
        [0.5, 0.5, 3.0, 3.0, 10.0, 0.5],
        label=[0, 0, 0, 0, 0, 1],
        clicked=[1, 0, 1, 1, 0, 1],
        carted=[1, 0, 0, 0, 0, 0],
    )
    table = flip_table(rows, np.array([0.6, 0.1, 0.2, 0.4, 0.01, 0.0]), eventual=np.array([1, 0, 0, 1, 0, 1]))
    assert table["count"].sum() == 5  # observed positives have nothing left to flip
    clicked = table[(table["engagement"] == "clicked")]
    assert clicked["estimated_flip"].tolist() == pytest.approx([0.3])
    assert clicked["true_flip"].tolist() == [0.5]
    assert set(table["engagement"]) == {"none", "clicked", "carted"}


def test_a_score_that_knows_the_item_sharpens_the_flip_probabilities():
    """The EM step: when whether a cart converts depends on the item, which the engagement flags
    cannot see, a conversion model's logit as the delay model's ``SCORE`` feature makes the soft
    targets of the not-yet-converted rows closer to what they eventually do."""
    from nextbuy.domain.delay import rescored_targets, rescores

    rng = np.random.default_rng(3)
    n = 40_000
    quality = rng.normal(0.0, 1.5, n)  # the item's own pull: seen by the score only
    clicked = (rng.random(n) < 0.4).astype(np.int8)
    carted = (clicked * (rng.random(n) < 0.5)).astype(np.int8)
    p = expit(-3.0 + 1.0 * clicked + 1.5 * carted + quality)
    converts = rng.random(n) < p
    delay = 3.0 * np.exp(rng.normal(0.0, 1.0, n))
    elapsed = rng.uniform(0.0, 20.0, n)
    label = (converts & (delay <= elapsed)).astype(np.int8)
    rows = frame(elapsed, label, clicked, carted, np.where(label == 1, delay, np.nan))
    score = quality + rng.normal(0.0, 0.5, n)  # an imperfect model of the item
    everything = np.ones(n, bool)

    def flip_nll(target: np.ndarray) -> float:
        negative = label == 0
        y, q = converts[negative], np.clip(target[negative], 1e-9, 1 - 1e-9)
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))

    without = expected_eventual_label(label, flip_probability(fit_delay_model(rows, ENGAGEMENT), rows))
    with_score, model = rescored_targets(rows, score, everything, "importance", DelayFamily("lognormal"))
    assert "model_logit" in model.columns
    assert model.conv_coef[-1] > 0
    assert flip_nll(with_score) < flip_nll(without) - 0.005
    np.testing.assert_array_equal(with_score[label == 1], 1.0)  # seen conversions stay converted
    # the no-features ablation never gets the score: it is a pair feature
    assert rescores("importance")
    assert rescores("importance_no_engagement")
    assert not rescores("importance_no_features")
    assert not rescores("naive")


def test_a_window_past_which_no_conversion_is_seen_truncates_the_delay():
    """Labels attributed within a 30-day window: delays are the family's truncated there. The fit
    that knows the window recovers the conversion rate; one that does not takes the never-seen
    tail for conversions still to come, and an impression past its window cannot flip."""
    rng = np.random.default_rng(3)
    n, rate, window = 40_000, 0.2, 30.0
    converts = rng.random(n) < rate
    delay = np.exp(rng.normal(np.log(10.0), 1.2, n))  # median 10 days, a long tail past 30
    seen_ever = converts & (delay <= window)  # the attribution window: a later order is no conversion
    elapsed = rng.uniform(0.0, 90.0, n)
    label = seen_ever & (delay <= elapsed)
    rows = frame(elapsed=elapsed, label=label.astype(int), delay=np.where(label, delay, np.nan))
    aware = fit_delay_model(rows, (), horizon_days=window)
    blind = fit_delay_model(rows, ())
    true_rate = seen_ever.mean()  # what a window of 30 days can ever label
    assert abs(aware.p_convert(rows)[0] - true_rate) < 0.002
    assert blind.p_convert(rows)[0] > true_rate + 0.003
    old = frame(elapsed=np.array([45.0, 5.0]), label=np.array([0, 0]))
    p_flip = flip_probability(aware, old)
    assert p_flip[0] == 0.0  # past its window: it will never be labelled converted
    assert flip_probability(blind, old)[0] > 0.005  # the blind fit still waits for it
    assert p_flip[1] > 0.05
    assert DelayModel.from_dict(aware.to_dict()).horizon_days == window
