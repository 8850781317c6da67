"""Every table that crosses a stage boundary, as a pandera schema.

Stages read and write only through ``nextbuy.mlops.io``, which validates against
these schemas, so a contract lives in exactly one place. Cross-table rules
(foreign keys, event order) that pandera's per-column checks cannot express
are functions here too, so the error names the file, column and rows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from nextbuy.constants import DELAY_PAIR_FEATURES, WEIGHTING_METHODS
from nextbuy.mlops import io
from nextbuy.tables_api import pa

SPLITS = ("train", "calib", "test")
TS = "datetime64[ns]"


def _id(unique: bool = False) -> pa.Column:
    return pa.Column("int64", pa.Check.ge(0), nullable=False, unique=unique)


def _ts(nullable: bool) -> pa.Column:
    return pa.Column(TS, nullable=nullable)


def _prob() -> pa.Column:
    return pa.Column("float64", pa.Check.in_range(0.0, 1.0), nullable=False)


PRODUCTS = pa.DataFrameSchema(
    {
        "product_id": _id(unique=True),
        # The id as the source wrote it (string), kept for joining results back.
        "product_key": pa.Column(str, nullable=False, unique=True),
        # -1 when the source has no category.
        "category": pa.Column("int64", pa.Check.ge(-1), nullable=False),
        # NaN when the source has no price.
        "price": pa.Column("float64", pa.Check.gt(0), nullable=True),
    },
    name="products",
    strict=True,
)

EDGES = pa.DataFrameSchema(
    {
        "src": _id(),
        "dst": _id(),
        "weight": pa.Column("float64", pa.Check.gt(0), nullable=False),
        "time": _ts(nullable=True),
    },
    name="edges",
    strict=True,
    unique=["src", "dst"],
    checks=[pa.Check(lambda df: df["src"] != df["dst"], name="no_self_loops", element_wise=False)],
)

_IMPRESSION_COLUMNS = {
    "impression_id": _id(unique=True),
    "source_id": _id(),
    "shown_id": _id(),
    "shown_at": _ts(nullable=False),
    "clicked_at": _ts(nullable=True),
    "carted_at": _ts(nullable=True),
    "converted_at": _ts(nullable=True),
}

# An impressions log as read from a real source (no split yet).
IMPRESSIONS_LOG = pa.DataFrameSchema(_IMPRESSION_COLUMNS, name="impressions_log", strict=False)

# Replayed exposures (a store with no impression log, nextbuy.domain.replay): the policy's
# slot, whether it explored, and the probability it showed what it showed.
REPLAY_POLICY = pa.DataFrameSchema(
    {
        "impression_id": _id(unique=True),
        "slot": pa.Column("int64", pa.Check.ge(0)),
        "explored": pa.Column(bool),
        "propensity": pa.Column("float64", pa.Check.in_range(0.0, 1.0, include_min=False)),
    },
    name="replay_policy",
    strict=True,
)

# The next purchases u -> v (rule 2 of domain.events) of the calibration split's sessions (u's
# key, the day of u's order): calibrate judges the served ranking on them.
NEXT_PURCHASES = pa.DataFrameSchema(
    {"source_id": _id(), "next_id": _id(), "ordered_at": _ts(nullable=False)},
    name="next_purchases",
    strict=True,
    checks=[pa.Check(lambda df: df["source_id"] != df["next_id"], name="not_itself", element_wise=False)],
)

IMPRESSIONS = pa.DataFrameSchema(
    {**_IMPRESSION_COLUMNS, "split": pa.Column(str, pa.Check.isin(SPLITS), nullable=False)},
    name="impressions",
    strict=True,
)


# A store's raw logs (``ingest.source: events``), as read: the columns each must have and may
# not leave empty. Ids are the store's own (any type); times are parsed after this check.
def _given(required: bool = True, checks: list[pa.Check] | None = None) -> pa.Column:
    return pa.Column(None, checks=checks, nullable=False, required=required)


RAW_ORDERS = pa.DataFrameSchema(
    {"customer": _given(), "product": _given(), "ordered_at": _given(), "quantity": _given(False)},
    name="orders",
)
RAW_IMPRESSIONS = pa.DataFrameSchema(
    {
        "impression_id": _given(False),
        "customer": _given(),
        "source_product": _given(),
        "shown_product": _given(),
        "shown_at": _given(),
    },
    name="impressions",
)
# kind is compared trimmed and lower-cased (" Click" is a click).
RAW_INTERACTIONS = pa.DataFrameSchema(
    {
        "customer": _given(),
        "product": _given(),
        "kind": _given(checks=[pa.Check.isin(["click", "cart"])]),
        "at": _given(),
    },
    name="interactions",
)
RAW_CATALOGUE = pa.DataFrameSchema(
    {
        "product": pa.Column(None, nullable=False, unique=True),
        "category": pa.Column(None, nullable=True, required=False),
        "price": pa.Column(None, nullable=True, required=False),
        "launched_at": pa.Column(None, nullable=True, required=False),
    },
    name="catalogue",
)

# Ground truth of the simulator: only evaluation code may read these.
TRUTH_IMPRESSIONS = pa.DataFrameSchema(
    {
        "impression_id": _id(unique=True),
        "p_convert": _prob(),
        "label_eventual": pa.Column("int8", pa.Check.isin([0, 1]), nullable=False),
        "delay_days": pa.Column("float64", pa.Check.ge(0), nullable=True),
    },
    name="truth_impressions",
    strict=True,
)

TRUTH_PRODUCTS = pa.DataFrameSchema(
    {
        "product_id": _id(unique=True),
        "popularity": pa.Column("float64", pa.Check.gt(0), nullable=False),
        # When the product was launched; NaT = it existed before the purchase history.
        "launched_at": _ts(nullable=True),
        r"src_\d+": pa.Column("float64", regex=True, nullable=False),
        r"tgt_\d+": pa.Column("float64", regex=True, nullable=False),
    },
    name="truth_products",
    strict=True,
)

WEIGHTED = pa.DataFrameSchema(
    {
        "impression_id": _id(unique=True),
        "source_id": _id(),
        "shown_id": _id(),
        "shown_at": _ts(nullable=False),
        "split": pa.Column(str, pa.Check.isin(SPLITS), nullable=False),
        # Label as observed at the snapshot (conversion seen by then).
        "label": pa.Column("int8", pa.Check.isin([0, 1]), nullable=False),
        "clicked": pa.Column("int8", pa.Check.isin([0, 1]), nullable=False),
        "carted": pa.Column("int8", pa.Check.isin([0, 1]), nullable=False),
        "elapsed_days": pa.Column("float64", pa.Check.ge(0), nullable=False),
        # Days to an observed conversion (NaN without one) and the delay model's pair features
        # (absent without a catalogue): what the train stage's EM step refits it on.
        "delay_days": pa.Column("float64", pa.Check.ge(0), nullable=True),
        # Days from shown to the last engagement (the delay clock's start) and its log-hours signal.
        "engaged_days": pa.Column("float64", pa.Check.ge(0), nullable=False),
        "engagement_lag": pa.Column("float64", pa.Check.ge(0), nullable=False),
        **{c: pa.Column("float64", nullable=False, required=False) for c in DELAY_PAIR_FEATURES},
        # P(eventual conversion | observed negative so far); 0 for observed positives.
        "p_flip": _prob(),
        # Per weighting method: the label the conversion loss trains toward (soft for the
        # Rao-Blackwellised importance methods) and the row's weight in that loss.
        **{
            column: spec
            for method in WEIGHTING_METHODS
            for column, spec in (
                (f"target_{method}", _prob()),
                (f"weight_{method}", pa.Column("float64", pa.Check.ge(0), nullable=False)),
            )
        },
    },
    name="weighted_impressions",
    strict=True,
)

SCORED = pa.DataFrameSchema(
    {
        "impression_id": _id(unique=True),
        "source_id": _id(),
        "shown_id": _id(),
        "split": pa.Column(str, pa.Check.isin(SPLITS), nullable=False),
        "label": pa.Column("int8", pa.Check.isin([0, 1]), nullable=False),
        "matured": pa.Column(bool, nullable=False),
        "p_flip": _prob(),
        "score": _prob(),
        "uncertainty": pa.Column("float64", pa.Check.ge(0), nullable=False),
        "bucket": pa.Column("int64", pa.Check.ge(0), nullable=False),
        "prob_calibrated": _prob(),
    },
    name="scored_holdout",
    strict=True,
)


# models/gnn/moments.npz: per-product embedding means and variances of both roles, and the head.
MOMENT_KEYS = ("s_mean", "s_var", "t_mean", "t_var", "head_w", "head_b")

_RATE = pa.Column("float64", pa.Check.in_range(0.0, 1.0), nullable=True)

MONITOR_WINDOWS = pa.DataFrameSchema(
    {
        "window": pa.Column("int64", pa.Check.ge(0)),
        "window_start": pa.Column(TS),
        "bucket": pa.Column("int64", pa.Check.ge(0)),
        "volume": pa.Column("int64", pa.Check.ge(0)),
        "predicted": _RATE,
        "observed": _RATE,
        "matured_volume": pa.Column("int64", pa.Check.ge(0)),
        "naive": _RATE,
        "estimated": _RATE,
        "min_elapsed_days": pa.Column("float64", pa.Check.ge(0)),
        "estimated_lo": _RATE,
        "estimated_hi": _RATE,
        "naive_lo": _RATE,
        "naive_hi": _RATE,
        "alert": pa.Column(bool),
        "naive_alert": pa.Column(bool),
    },
    name="monitor_windows",
    strict=True,
)


def check_event_order(df: pd.DataFrame) -> dict[str, pd.Index]:
    """Rows whose events happen before the impression they belong to, per column."""
    bad: dict[str, pd.Index] = {}
    for col in ("clicked_at", "carted_at", "converted_at"):
        rows = df.index[df[col].notna() & (df[col] < df["shown_at"])]
        if len(rows):
            bad[col] = rows
    return bad


def check_isolated_times(
    df: pd.DataFrame, columns: Sequence[str], max_gap_days: float
) -> dict[str, pd.Index]:
    """Rows with a time in ``columns`` cut off from the rest of the log by more than
    ``max_gap_days`` with no event between (a mistyped year, a 1970 from an empty field read as
    0), per column. The log's body is the run of times with no such gap that holds the most
    events; the times outside it are the offenders."""
    values = pd.concat([df[c].dropna() for c in columns if c in df], ignore_index=True)
    if values.empty:
        return {}
    times = np.sort(values.unique())
    runs = np.r_[0, np.cumsum(np.diff(times) > np.timedelta64(int(max_gap_days * 86400), "s"))]
    if runs[-1] == 0:
        return {}
    body = np.bincount(runs[np.searchsorted(times, values.to_numpy())]).argmax()
    low, high = times[runs == body][[0, -1]]
    bad = {c: df.index[((df[c] < low) | (df[c] > high)).to_numpy()] for c in columns if c in df}
    return {c: rows for c, rows in bad.items() if len(rows)}


def check_funnel_order(df: pd.DataFrame) -> dict[str, pd.Index]:
    """Rows clicked or carted after they converted (a conversion ends the funnel), per column."""
    bad: dict[str, pd.Index] = {}
    for col in ("clicked_at", "carted_at"):
        rows = df.index[df[col].notna() & df["converted_at"].notna() & (df[col] > df["converted_at"])]
        if len(rows):
            bad[col] = rows
    return bad


def check_known_products(
    df: pd.DataFrame, columns: tuple[str, ...], product_ids: pd.Series
) -> dict[str, pd.Index]:
    """Rows referring to a product id that the products table does not have."""
    known = pd.Index(product_ids)
    bad: dict[str, pd.Index] = {}
    for col in columns:
        rows = df.index[~df[col].isin(known)]
        if len(rows):
            bad[col] = rows
    return bad


def read_moments(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The embedding moments (``schemas.MOMENT_KEYS``), checked for shape, finiteness and
    non-negative variances; ``io.DataError`` names the file and the array."""

    m = io.read_npz(path, MOMENT_KEYS)
    n, d = m["s_mean"].shape if m["s_mean"].ndim == 2 else (0, 0)
    if n < 1 or d < 1:
        raise io.DataError(path, f"s_mean must be (products, dim), got shape {m['s_mean'].shape}", "s_mean")
    expected: dict[str, tuple[int, ...]] = {key: (n, d) for key in ("s_mean", "s_var", "t_mean", "t_var")}
    expected |= {"head_w": (d,), "head_b": (1,)}
    for key, shape in expected.items():
        a = m[key]
        if a.shape != shape:
            raise io.DataError(path, f"{key} has shape {a.shape}, expected {shape}", key)
        if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
            raise io.DataError(path, f"{key} has dtype {a.dtype}, expected real numbers", key)
        finite = np.isfinite(a)
        if not finite.all():
            raise io.DataError(
                path, f"{key} has {int((~finite).sum())} non-finite value(s) (NaN/inf): a broken export", key
            )
        if key.endswith("_var") and (a < 0).any():
            raise io.DataError(path, f"{key} has {int((a < 0).sum())} negative variance(s)", key)
    m.pop(PRODUCT_KEY_ARRAY, None)  # the store's keys: read_product_keys
    return m


# The moments file also holds each product's store key (text, product_id order), so the served
# model answers in the store's keys.
PRODUCT_KEY_ARRAY = "product_key"


def read_product_keys(path: str | os.PathLike, n_products: int) -> np.ndarray | None:
    """The store's product keys held in the moments file (None: it holds none), checked: one
    per product, unique."""

    keys = io.read_npz(path, (), (PRODUCT_KEY_ARRAY,)).get(PRODUCT_KEY_ARRAY)
    if keys is None:
        return None
    if keys.dtype.kind != "U" or keys.shape != (n_products,):
        raise io.DataError(
            path,
            f"{PRODUCT_KEY_ARRAY} must be {n_products} texts, got {keys.dtype} {keys.shape}",
            PRODUCT_KEY_ARRAY,
        )
    if len(np.unique(keys)) != len(keys):
        raise io.DataError(path, f"{PRODUCT_KEY_ARRAY} holds a key twice", PRODUCT_KEY_ARRAY)
    return keys
