"""The pure scorer of the serving model: :class:`ServingBundle` (pairs and top-K over the
embedding moments, calibration, per-bucket thresholds and retrieval settings), as plain numpy,
and the reading of it from the files deploy stores with a registered model."""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nextbuy.config import RetrievalConfig
from nextbuy.domain import retrieval
from nextbuy.domain.decisions import Thresholds
from nextbuy.domain.graph.scoring import all_targets_logit_moments, score_and_uncertainty, serving_score
from nextbuy.domain.retrieval import CandidateIndex
from nextbuy.domain.served_ranking import CountTables, Ranker
from nextbuy.domain.uncertainty import BucketCalibration, assign_buckets
from nextbuy.mlops import io
from nextbuy.mlops.schemas import PRODUCT_KEY_ARRAY, read_moments, read_product_keys
from nextbuy.serving.integrity import download_checked, downloaded_version, verify_model_files, version_tags
from nextbuy.serving.readers import (
    COUNTS_FILE,
    REREGISTER,
    RETRIEVAL_FILE,
    SERVED_RANKING_FILE,
    read_calibration,
    read_count_tables,
    read_retrieval,
    read_served_ranking,
    read_thresholds,
)

# The files deploy stores with every model, by their MLflow artifact name (in the model's
# artifacts/ folder); ``counts`` (COUNTS_FILE) comes with them when top-K is a count ranking.
STORED_FILES = {
    "moments": "moments.npz",
    "calibration": "calibration.json",
    "thresholds": "thresholds.json",
    "retrieval": RETRIEVAL_FILE,
    "served_ranking": SERVED_RANKING_FILE,
}

PAIR_COLUMNS = ("score", "uncertainty", "bucket", "prob_calibrated", "decision", "cold_start")
TOPK_COLUMNS = ("source_id", "rank", "candidate_id", *PAIR_COLUMNS)
# Cells (sources x candidates) scored at once in top-K: bounds memory (~40 B a cell).
TOPK_CHUNK_CELLS = 1 << 22


def with_prior(mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Append one extra row: the role's population prior (law of total variance)."""
    prior_mean = mean.mean(axis=0, keepdims=True)
    prior_var = var.mean(axis=0, keepdims=True) + mean.var(axis=0, keepdims=True)
    return np.vstack([mean, prior_mean]).astype(np.float32), np.vstack([var, prior_var]).astype(np.float32)


@dataclass(frozen=True)
class ServingBundle:
    moments: dict[str, np.ndarray]  # s/t mean and var carry a last "prior" row for unknown ids
    calibration: BucketCalibration
    thresholds: Thresholds
    # Top-K candidate retrieval; None: top-K scores every source against the whole catalogue.
    retrieval: RetrievalConfig | None = None
    # The store's own key of each product, in product_id order (None: the model holds none,
    # and requests speak product ids only).
    keys: np.ndarray | None = None
    # The order of top-K: the model's own, or a count ranking chosen out of fold in calibrate
    # (``nextbuy.domain.served_ranking``), ranked by ``counts``.
    ranked_by: Ranker = "model"
    counts: CountTables | None = None

    @property
    def n_products(self) -> int:
        return self.moments["s_mean"].shape[0] - 1

    @functools.cached_property
    def key_index(self) -> pd.Index:
        """The store's keys as an index: a key's position is its product id."""
        if self.keys is None:
            raise ValueError("this model holds no store keys: send product ids")
        return pd.Index(self.keys.astype(str))

    def ids_of(self, keys: np.ndarray) -> np.ndarray:
        """Product ids of the store's ``keys`` (text); a key the model does not know gets id
        ``n_products``: a product it never saw, answered as cold start."""
        ids = self.key_index.get_indexer(np.asarray(keys, dtype=str))
        return np.where(ids >= 0, ids, self.n_products).astype(np.int64)

    def key_of(self, ids: np.ndarray) -> np.ndarray:
        """The store's key of each product id (ids it does not know: None)."""
        assert self.keys is not None
        ids = np.asarray(ids, dtype=np.int64)
        known = (ids >= 0) & (ids < self.n_products)
        out = np.full(len(ids), None, dtype=object)
        out[known] = self.keys[ids[known]]
        return out

    @classmethod
    def from_arrays(
        cls,
        moments: dict[str, np.ndarray],
        calibration: BucketCalibration,
        thresholds: Thresholds,
        retrieval: RetrievalConfig | None = None,
        keys: np.ndarray | None = None,
        ranked_by: Ranker = "model",
        counts: CountTables | None = None,
    ) -> ServingBundle:
        if ranked_by != "model" and counts is None:
            raise ValueError(f"a top-K ranked by {ranked_by} needs the count tables")
        m = dict(moments)
        m["s_mean"], m["s_var"] = with_prior(m["s_mean"], m["s_var"])
        m["t_mean"], m["t_var"] = with_prior(m["t_mean"], m["t_var"])
        return cls(m, calibration, thresholds, retrieval, keys, ranked_by, counts)

    @classmethod
    def load(
        cls,
        moments_path: str | Path,
        calibration_path: str | Path,
        thresholds_path: str | Path,
        retrieval_path: str | Path | None = None,
        ranking_path: str | Path | None = None,
        counts_path: str | Path | None = None,
    ) -> ServingBundle:
        """Read and check the bundle files (``retrieval_path``: the top-K retrieval settings,
        None for none; ``ranking_path``: the served ranking, None for the model's order;
        ``counts_path``: the counts a count ranking ranks by); anything unusable (missing,
        truncated, corrupt, non-finite, inconsistent) raises ``io.DataError`` naming the file
        and key."""
        moments = read_moments(moments_path)
        calibration = read_calibration(calibration_path)
        thresholds = read_thresholds(thresholds_path, calibration.n_buckets)
        settings = None if retrieval_path is None else read_retrieval(retrieval_path)
        keys = read_product_keys(moments_path, len(moments["s_mean"]))
        ranked_by: Ranker = "model" if ranking_path is None else read_served_ranking(ranking_path).served
        counts = None
        if ranking_path is not None and ranked_by != "model":
            if counts_path is None:
                raise io.DataError(
                    ranking_path, f"top-K is ranked by {ranked_by}, but no {COUNTS_FILE} came with it"
                )
            counts = read_count_tables(counts_path, len(moments["s_mean"]))
        return cls.from_arrays(moments, calibration, thresholds, settings, keys, ranked_by, counts)

    def with_retrieval(self, settings: RetrievalConfig | None) -> ServingBundle:
        """The same bundle with these top-K retrieval settings (its index built afresh)."""
        return dataclasses.replace(self, retrieval=settings)

    @classmethod
    def from_stored(cls, files: Mapping[str, str | Path], where: str | Path) -> ServingBundle:
        """Load a model's bundle from the files deploy stored with it (``files``: MLflow
        artifact name -> path, as ``STORED_FILES`` names them, ``counts`` too for a count
        ranking; ``where``: the model, named when a file is missing). A model that lacks one
        of ``STORED_FILES`` or the store's product keys in its moments was registered by older
        code: refused (``io.DataError``) naming what is missing and how to re-register it."""
        missing = [
            file for name, file in STORED_FILES.items() if name not in files or not Path(files[name]).exists()
        ]
        if missing:
            raise io.DataError(where, f"no {', '.join(missing)} among the model's files; {REREGISTER}")
        counts = files.get("counts")
        bundle = cls.load(
            files["moments"],
            files["calibration"],
            files["thresholds"],
            files["retrieval"],
            files["served_ranking"],
            counts if counts is not None and Path(counts).exists() else None,
        )
        if bundle.keys is None:
            raise io.DataError(
                files["moments"],
                f"no store product keys (array '{PRODUCT_KEY_ARRAY}'); {REREGISTER}",
                PRODUCT_KEY_ARRAY,
            )
        return bundle

    @classmethod
    def from_model_dir(cls, path: str | Path) -> ServingBundle:
        """Load from a downloaded MLflow model directory (artifacts/ inside). One downloaded
        from the registry (MLflow leaves ``registered_model_meta`` naming its version) is
        first checked against the file digests deploy recorded on that version
        (:func:`verify_model_files`)."""
        registered = downloaded_version(path)
        if registered is not None:
            uri = f"models:/{registered[0]}/{registered[1]}"
            verify_model_files(uri, path, version_tags(uri, *registered))
        artifacts = Path(path) / "artifacts"
        if not artifacts.is_dir():
            raise io.DataError(path, "not a serving model: no artifacts/ folder (bundle files) in it")
        return cls._read_dir(path)

    @classmethod
    def _read_dir(cls, path: str | Path) -> ServingBundle:
        artifacts = Path(path) / "artifacts"
        names = {**STORED_FILES, "counts": COUNTS_FILE}
        return cls.from_stored({name: artifacts / file for name, file in names.items()}, artifacts)

    @classmethod
    def from_model_uri(cls, uri: str) -> ServingBundle:
        """Download ``uri`` (e.g. ``models:/name@champion``), check its files against the
        digests deploy recorded on the registry version (:func:`verify_model_files`: a
        changed file is an ``io.DataError`` naming ``uri`` and the file, raised before
        anything in the download is read), and load it. A model whose files are gone (the
        artifact store, e.g. ``mlartifacts/``, deleted or moved while the registry still
        lists the version) raises ``io.DataError`` naming where the files should be:
        MLflow itself downloads nothing and says nothing about it."""
        with tempfile.TemporaryDirectory() as tmp:
            path, _, _ = download_checked(uri, tmp)
            try:
                return cls._read_dir(path)
            except io.DataError as err:  # name the model, not the temporary download folder
                where = Path(err.path)
                name = where.relative_to(path) if where.is_relative_to(path) else where
                detail = err.message.split(": ", 1)[-1]
                raise io.DataError(f"{uri} ({name})", detail, err.column) from None

    def _index(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        known = (ids >= 0) & (ids < self.n_products)
        return np.where(known, ids, self.n_products), ~known

    def _decide(
        self, score: np.ndarray, uncertainty: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        bucket = assign_buckets(uncertainty, self.calibration.edges)
        prob = self.calibration.predict_in_bucket(score, bucket)
        return bucket, prob, self.thresholds.decide(score, bucket)

    def score_columns(self, source_id: np.ndarray, candidate_id: np.ndarray) -> dict[str, np.ndarray]:
        """The answer for (source_id, candidate_id) pairs, one array per ``PAIR_COLUMNS`` name."""
        src, src_cold = self._index(np.asarray(source_id, dtype=np.int64))
        dst, dst_cold = self._index(np.asarray(candidate_id, dtype=np.int64))
        score, uncertainty = score_and_uncertainty(self.moments, src, dst)
        bucket, prob, decision = self._decide(score, uncertainty)
        return {
            "score": score,
            "uncertainty": uncertainty,
            "bucket": bucket.astype(np.int64),
            "prob_calibrated": prob,
            "decision": decision,
            "cold_start": src_cold | dst_cold,
        }

    def score(self, source_id: np.ndarray, candidate_id: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(self.score_columns(source_id, candidate_id))

    def _all_candidates(self, src: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score and uncertainty of sources x every known product, as matrix products."""
        return serving_score(*all_targets_logit_moments(self.moments, src, self.n_products))

    @functools.cached_property
    def candidate_index(self) -> CandidateIndex:
        """The top-K retrieval index over the catalogue: built on first use, once per bundle."""
        if self.retrieval is None:
            raise ValueError("this bundle has no retrieval settings: use top_k(..., exact=True)")
        m, n = self.moments, self.n_products
        return retrieval.build(m["t_mean"][:n], m["t_var"][:n], m["head_w"], m["head_b"], self.retrieval)

    def top_k(
        self, source_id: np.ndarray, k: int, exclude_self: bool = True, exact: bool = False
    ) -> pd.DataFrame:
        """Top-k candidates per source among all known products: accepted first,
        then by calibrated probability (score breaks ties between isotonic steps). A bundle
        whose served ranking is a count ranking (``ranked_by``) ranks by its counts instead.

        With retrieval settings (and not ``exact``): candidates retrieved from the index
        and ranked exactly, sources the re-rank cannot prove complete completed by an exact
        scan (``nextbuy.domain.retrieval``): exact with ``flat``, approximate with ``ivf`` /
        ``hnsw``. Otherwise every source is scored against the whole catalogue.
        """
        sources = np.asarray(source_id, dtype=np.int64)
        n = self.n_products
        k = int(min(k, n - 1 if exclude_self else n))
        if k <= 0 or sources.size == 0:
            return self.top_k(np.zeros(1, dtype=np.int64), max(k, 1), exclude_self=False, exact=True).iloc[:0]
        idx, cold = self._index(sources)
        if self.counts is not None and self.ranked_by != "model":
            picked = self._counted_top_k(idx, k, exclude_self)
        elif exact or self.retrieval is None:
            picked = self._exact_top_k(idx, k, exclude_self)
        else:
            picked = self._retrieved_top_k(idx, k, exclude_self)
        return _topk_frame(sources, cold, k, picked)

    def _counted_top_k(self, idx: np.ndarray, k: int, exclude_self: bool) -> dict[str, np.ndarray]:
        """Top-K in the count ranking's order (a source the counts never saw: popularity); each
        candidate's pair columns from the model, as for any pair."""
        assert self.counts is not None
        ids = self.counts.top_k(self.ranked_by, idx, k, exclude_self)
        columns = self.score_columns(np.repeat(idx, k), ids.ravel())
        picked = {name: columns[name].reshape(len(idx), k) for name in retrieval.RESULT_COLUMNS[1:]}
        return {"candidate_id": ids, **picked}

    def _retrieved_top_k(self, idx: np.ndarray, k: int, exclude_self: bool) -> dict[str, np.ndarray]:
        m = self.moments
        exclude = np.where(exclude_self & (idx < self.n_products), idx, -1)
        return retrieval.top_k(
            self.candidate_index,
            m["s_mean"][idx],
            m["s_var"][idx],
            m["head_w"],
            exclude,
            k,
            self.calibration,
            self.thresholds,
        )

    def _exact_top_k(self, idx: np.ndarray, k: int, exclude_self: bool) -> dict[str, np.ndarray]:
        """Exact, and cheap: within one bucket the ranking key rises strictly with score
        (per-bucket threshold and isotonic calibration are monotone), so the overall top-k
        lies among each bucket's top-k by score; only those n_buckets * k candidates per
        source are calibrated and decided."""
        rows_per_chunk = max(1, TOPK_CHUNK_CELLS // self.n_products)
        parts = [
            self._exact_chunk(idx[a : a + rows_per_chunk], k, exclude_self)
            for a in range(0, idx.size, rows_per_chunk)
        ]
        return {name: np.concatenate([p[name] for p in parts]) for name in retrieval.RESULT_COLUMNS}

    def _exact_chunk(self, src: np.ndarray, k: int, exclude_self: bool) -> dict[str, np.ndarray]:
        n = self.n_products
        n_buckets = len(self.calibration.edges) + 1
        rows = np.arange(src.size)[:, None]
        score, uncertainty = self._all_candidates(src)
        if exclude_self:
            known = src < n
            score[np.flatnonzero(known), src[known]] = -np.inf
        bucket = assign_buckets(uncertainty, self.calibration.edges)
        per_bucket = [
            np.argpartition(-np.where(bucket == b, score, -np.inf), k - 1, axis=1)[:, :k]
            for b in range(n_buckets)
        ]
        cand = np.concatenate(per_bucket, axis=1)
        c_score, c_unc, c_bucket = score[rows, cand], uncertainty[rows, cand], bucket[rows, cand]
        valid = np.isfinite(c_score) & (c_bucket == np.repeat(np.arange(n_buckets), k)[None, :])
        picked, _ = retrieval.rank(
            cand, c_score, c_unc, c_bucket, valid, k, self.calibration, self.thresholds
        )
        return picked


def _topk_frame(sources: np.ndarray, cold: np.ndarray, k: int, picked: dict[str, np.ndarray]) -> pd.DataFrame:
    """Rows of TOPK_COLUMNS: k ranked candidates per source."""
    return pd.DataFrame(
        {
            "source_id": np.repeat(sources, k),
            "rank": np.tile(np.arange(1, k + 1), sources.size),
            "candidate_id": picked["candidate_id"].ravel().astype(np.int64),
            "score": picked["score"].ravel().astype(np.float64),
            "uncertainty": picked["uncertainty"].ravel().astype(np.float64),
            "bucket": picked["bucket"].ravel().astype(np.int64),
            "prob_calibrated": picked["prob_calibrated"].ravel(),
            "decision": picked["decision"].ravel(),
            "cold_start": np.repeat(cold, k),
        }
    )
