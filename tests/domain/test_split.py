"""The session split: stable across snapshots, and which later rows an earlier model learned from."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy.domain import split

SETTINGS = {"test_share": 0.2, "calib_share": 0.1, "seed": 3}


def impressions(first_day: str, days: int, n_sources: int = 200) -> pd.DataFrame:
    shown = pd.date_range(first_day, periods=days, freq="D").repeat(n_sources) + pd.Timedelta(hours=9)
    keys = np.tile([f"k{i}" for i in range(n_sources)], days)
    return pd.DataFrame({"key": keys, "shown_at": shown})


def test_a_session_keeps_its_split_in_every_snapshot():
    today = impressions("2026-02-01", 10)
    tomorrow = impressions("2026-02-02", 10)  # one day later: nine days shared
    a = today.assign(split=split.assign_split(today["key"], today["shown_at"], **SETTINGS))
    b = tomorrow.assign(split=split.assign_split(tomorrow["key"], tomorrow["shown_at"], **SETTINGS))
    shared = a.merge(b, on=["key", "shown_at"], suffixes=("_a", "_b"))
    assert len(shared) == 9 * 200
    assert (shared["split_a"] == shared["split_b"]).all()
    shares = a["split"].value_counts(normalize=True)
    assert abs(shares["test"] - 0.2) < 0.05
    assert abs(shares["calib"] - 0.1) < 0.05


def test_learned_rows_are_the_non_test_rows_of_the_recorded_span_and_split():
    earlier = impressions("2026-02-01", 10)
    earlier["split"] = split.assign_split(earlier["key"], earlier["shown_at"], **SETTINGS)
    record = split.training_record(earlier[earlier["split"] != "test"], pd.Timestamp("2026-02-11"), SETTINGS)
    assert record["snapshot"] == "2026-02-11 00:00:00"
    assert record["split"] == SETTINGS
    later = impressions("2026-02-02", 10)
    later["split"] = split.assign_split(later["key"], later["shown_at"], **SETTINGS)
    test = later[later["split"] == "test"]
    # Same settings: no test row of the later snapshot was learned from.
    assert not split.learned_rows(test["key"], test["shown_at"], record).any()
    # Other settings: exactly the rows the earlier split put in train or calib, within its span.
    other = {**record, "split": {**SETTINGS, "seed": 4}}
    learned = split.learned_rows(test["key"], test["shown_at"], other)
    then = split.assign_split(test["key"], test["shown_at"], **other["split"])
    inside = (test["shown_at"] <= earlier["shown_at"].max()).to_numpy()
    np.testing.assert_array_equal(learned, inside & (then != "test"))
    assert learned.sum() > 0
    assert not learned[~inside].any()
