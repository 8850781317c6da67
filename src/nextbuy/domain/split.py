"""The session split, pure: which impressions train, calibrate and test, and which rows of
a later snapshot an earlier model learned from.

The split key is stable across snapshots: a salted hash of (source product key, calendar
day of ``shown_at``, ``split.seed``). A session keeps its split as data grows, so with the
same split settings a row in a later snapshot's test split was never in an earlier model's
training data; the release gate checks it (:func:`learned_rows`) rather than assuming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

SPLITS = ("train", "calib", "test")


def assign_split(
    source_key: ArrayLike, shown_at: ArrayLike, test_share: float, calib_share: float, seed: int
) -> np.ndarray:
    """Split impressions by *session*: a source product's impressions of one calendar day.
    A salted hash of (source key, day) puts each session in test (``test_share``), calib
    (``calib_share``) or train.

    Why not by time: the model must learn from the freshest days, whose labels are still
    immature (label_delay weights them), and new products exist only there. Sessions
    interleave the splits in time and over every source product, so calib and test look
    like the traffic the model is trained on, without giving up any day; their recent
    labels are delay-corrected where they are used (calibrate and deploy's gate use the
    delay model's expected eventual labels). A session's impressions stay together, and
    the key's hash, not row order, decides: a session keeps its split as data grows.
    """
    day = pd.Series(np.asarray(shown_at, dtype="datetime64[ns]")).dt.strftime("%Y-%m-%d")
    salted = pd.Series(np.asarray(source_key, dtype=object)).astype(str) + "|" + day + f"|{seed}"
    uniform = pd.util.hash_pandas_object(salted, index=False).to_numpy() / float(2**64)
    return np.select(
        [uniform < test_share, uniform < test_share + calib_share], ["test", "calib"], default="train"
    )


def training_record(impressions: pd.DataFrame, snapshot: pd.Timestamp, split: Mapping[str, Any]) -> dict:
    """What a model's training data was, in a form a later gate can test rows against: the
    snapshot, the span of shown_at it held, and the split settings (train and calib rows,
    which the model and its calibration learned from, are every non-test row of the span)."""
    shown = pd.to_datetime(impressions["shown_at"])
    if not len(shown):
        return span_record(None, None, snapshot, split)
    return span_record(shown.min(), shown.max(), snapshot, split)


def span_record(
    first: pd.Timestamp | None, last: pd.Timestamp | None, snapshot: pd.Timestamp, split: Mapping[str, Any]
) -> dict:
    """:func:`training_record` of rows whose shown_at spans ``first`` to ``last`` (None: no rows)."""
    return {
        "snapshot": str(pd.Timestamp(snapshot)),
        "first_shown_at": None if first is None else str(pd.Timestamp(first)),
        "last_shown_at": None if last is None else str(pd.Timestamp(last)),
        "split": {k: split[k] for k in ("test_share", "calib_share", "seed")},
    }


def learned_rows(source_key: ArrayLike, shown_at: ArrayLike, record: Mapping[str, Any]) -> np.ndarray:
    """Boolean per row: the model whose :func:`training_record` is ``record`` learned from it
    (the row falls in its span of shown_at and its split put the row's session in train or
    calib)."""
    shown = pd.to_datetime(pd.Series(np.asarray(shown_at, dtype="datetime64[ns]")))
    if record.get("first_shown_at") is None:
        return np.zeros(len(shown), dtype=bool)
    first, last = pd.Timestamp(record["first_shown_at"]), pd.Timestamp(record["last_shown_at"])
    inside = (shown >= first) & (shown <= last)
    s = record["split"]
    then = assign_split(source_key, shown_at, s["test_share"], s["calib_share"], s["seed"])
    return inside.to_numpy() & (then != "test")
