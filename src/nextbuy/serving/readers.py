"""Readers of the serving bundle's files: calibration, thresholds, retrieval settings, the
served ranking and its counts, each refused with a message a user can act on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import ValidationError

from nextbuy import paths
from nextbuy.config import RetrievalConfig
from nextbuy.domain.decisions import Thresholds
from nextbuy.domain.served_ranking import RANKERS, CountTables, RankingChoice
from nextbuy.domain.uncertainty import BucketCalibration
from nextbuy.mlops import io

# The top-K retrieval settings deploy stores with the model (artifacts/), next to the others.
RETRIEVAL_FILE = "retrieval.json"
# The served top-K order and, when it is a count ranking, the counts it ranks by.
SERVED_RANKING_FILE, COUNTS_FILE = paths.SERVED_RANKING.name, paths.COUNT_TABLES.name
# How a model that lacks something deploy stores with every model is made servable.
REREGISTER = "re-register it: run the pipeline's deploy stage again (nextbuy deploy)"


def _json_object(path: str | Path, keys: tuple[str, ...], missing_hint: str = "") -> dict:
    """The JSON object in ``path``, refused when it lacks one of ``keys`` (``missing_hint``: what
    to do then, after the keys missing)."""
    d = io.read_json(path)
    if not isinstance(d, dict):
        raise io.DataError(path, f"expected a JSON object with {list(keys)}, got {type(d).__name__}")
    missing = [k for k in keys if k not in d]
    if missing:
        hint = f"; {missing_hint}" if missing_hint else ""
        raise io.DataError(path, f"missing key(s) {missing} (found {sorted(d)}){hint}", missing[0])
    return d


def read_calibration(path: str | Path) -> BucketCalibration:
    """The per-bucket calibration (``calibrate``'s calibration.json), checked: sorted finite
    bucket edges, finite increasing knots, probabilities in [0, 1]."""
    d = _json_object(path, ("edges", "knots_x", "knots_y"))
    try:
        calibration = BucketCalibration.from_dict(d)
    except (TypeError, ValueError) as err:
        raise io.DataError(path, f"malformed calibration ({err})", "knots_x") from None
    edges = calibration.edges
    if not np.isfinite(edges).all() or (np.diff(edges) < 0).any():
        raise io.DataError(path, f"edges must be finite and ascending, got {edges.tolist()}", "edges")
    for b, (x, y) in enumerate(zip(calibration.knots_x, calibration.knots_y, strict=True)):
        if not (np.isfinite(x).all() and (np.diff(x) >= 0).all()):
            raise io.DataError(path, f"bucket {b}: knots must be finite and ascending", "knots_x")
        if not (np.isfinite(y).all() and (y >= 0).all() and (y <= 1).all()):
            raise io.DataError(path, f"bucket {b}: calibrated probabilities must lie in [0, 1]", "knots_y")
    return calibration


def read_thresholds(path: str | Path, n_buckets: int) -> Thresholds:
    """The per-bucket thresholds (``thresholds``'s thresholds.json, key ``per_bucket``):
    one per calibration bucket, each a number or null (+inf: the bucket accepts nothing)."""
    d = _json_object(path, ("per_bucket",))
    per_bucket = d["per_bucket"]
    if not isinstance(per_bucket, dict) or not {"thresholds", "target_precision"} <= set(per_bucket):
        raise io.DataError(
            path, "per_bucket must be an object with 'thresholds' and 'target_precision'", "per_bucket"
        )
    try:
        thresholds = Thresholds.from_dict(per_bucket)
    except (TypeError, ValueError) as err:
        raise io.DataError(path, f"malformed per_bucket thresholds ({err})", "per_bucket") from None
    t = thresholds.thresholds
    if np.isnan(t).any() or np.isneginf(t).any():
        raise io.DataError(path, f"thresholds must be numbers or null, got {t.tolist()}", "per_bucket")
    if thresholds.n_buckets != n_buckets:
        raise io.DataError(
            path,
            f"{thresholds.n_buckets} threshold(s) for a calibration with {n_buckets} bucket(s): "
            "thresholds.json and calibration.json come from different runs",
            "per_bucket",
        )
    return thresholds


def read_retrieval(path: str | Path) -> RetrievalConfig:
    """The top-K retrieval settings stored with the model (deploy's retrieval.json): every
    key of params.yaml ``deploy.retrieval``, within its bounds; settings that lack a key were
    stored by older code (re-register the model)."""
    d = _json_object(path, tuple(RetrievalConfig.model_fields), REREGISTER)
    try:
        return RetrievalConfig.model_validate(d)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or None
        raise io.DataError(path, f"malformed retrieval settings ({key}: {first['msg']})", key) from None


def read_served_ranking(path: str | Path) -> RankingChoice:
    """The served top-K order (``calibrate``'s served_ranking.json), checked."""
    d = _json_object(path, ("served", "k", "rows", "hits", "gaps", "confidence", "reason"))
    if d["served"] not in RANKERS:
        raise io.DataError(path, f"served must be one of {list(RANKERS)}, got {d['served']!r}", "served")
    try:
        return RankingChoice.from_dict(d)
    except (TypeError, ValueError, KeyError) as err:
        raise io.DataError(path, f"malformed served ranking ({err})", "gaps") from None


def read_count_tables(path: str | Path, n_products: int) -> CountTables:
    """The co-purchase counts and popularity a count ranking is served from (``calibrate``'s
    counts.npz), checked against the model's ``n_products``."""
    tables = CountTables.from_arrays(
        io.read_npz(path, ("indptr", "indices", "counts", "popularity", "prior"))
    )
    if tables.n_products != n_products:
        raise io.DataError(
            path, f"counts of {tables.n_products} products for a model of {n_products}", "popularity"
        )
    problem = tables.check()
    if problem is not None:
        raise io.DataError(path, problem, "indptr")
    return tables
