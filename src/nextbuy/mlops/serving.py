"""The serving model: embedding moments + calibration + per-bucket thresholds,
as plain numpy so scoring costs little more than the dot products.

``ServingBundle`` is the pure scorer (pairs and top-K); ``NextbuyModel`` wraps
it as an MLflow pyfunc.

Cold start: an unknown product id (never seen in training, or negative) is not
an error. It is scored with the population prior of its role — the mean
embedding, with the spread of all products added to its variance — which gives
a popularity-level score with a high uncertainty (so it lands in the most
uncertain bucket and its strictest threshold), and ``cold_start`` is True.

Top-K: the bundle's retrieval settings (deploy's ``retrieval.json``, from params.yaml
``deploy.retrieval``) pick a faiss index over the catalogue, built on the first top-K;
each source's candidates are retrieved from it and ranked exactly, and a source whose
top-K the re-rank cannot prove complete is completed by an exact scan of the catalogue
where ``completion`` says so (``nextbuy.domain.retrieval``): with the exact ``flat``
search and the scan top-K is exact, ``ivf`` / ``hnsw`` are approximate. Settings stored
before ``completion`` existed read as ``scan``, what that code did. A bundle without
retrieval settings (a version
registered before them) and ``top_k(..., exact=True)`` score every source against the
whole catalogue.

Trust boundary: deploy records the SHA-256 of every file of the logged model (the
pickled ``python_model.pkl``, ``MLmodel``, the bundled code and the bundle files) on
the registry version (``artifact_sha256``, ``artifact_manifest``). Our loaders
(:meth:`ServingBundle.from_model_uri`, :meth:`ServingBundle.from_model_dir` on a
registry download, hence monitor, deploy's champion and ``nextbuy batch-topk``)
check the downloaded files against it before reading anything in them and refuse a
model whose files changed (:func:`verify_model_files`). ``mlflow models serve``
unpickles the model before any of our code runs: ``NextbuyModel.load_context``
repeats the check there, which catches changed bundle files and corruption, but not
a replaced pickle (whose code runs first). Versions registered before the digests
existed load with a warning.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import reprlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from nextbuy.config import RetrievalConfig
from nextbuy.domain import retrieval
from nextbuy.domain.decisions import Thresholds
from nextbuy.domain.graph.scoring import score_and_uncertainty
from nextbuy.domain.uncertainty import BucketCalibration, assign_buckets
from nextbuy.mlops.schemas import read_moments

log = logging.getLogger(__name__)

INPUT_COLUMNS = ("source_id", "candidate_id")
PAIR_COLUMNS = ("score", "uncertainty", "bucket", "prob_calibrated", "decision", "cold_start")
TOPK_COLUMNS = ("source_id", "rank", "candidate_id", *PAIR_COLUMNS)
MAX_REQUEST_ROWS = 100_000  # REST guard: larger batches belong to `nextbuy batch-topk`
# REST guard on top-K: recommendations per source (a larger K is a bulk job: batch-topk), and
# rows in one top-K answer (distinct sources x K, K capped by the catalogue).
MAX_TOP_K = 1000
MAX_TOPK_ROWS = MAX_REQUEST_ROWS
# Cells (sources x candidates) scored at once in top-K: bounds memory (~40 B a cell).
TOPK_CHUNK_CELLS = 1 << 22
# Registry version tags written by deploy: the SHA-256 of every file of the logged model as a
# sha256sum-style manifest ("<sha256>  <path>" lines, sorted by path), and the SHA-256 of that
# manifest text (the digest loads are checked against).
ARTIFACT_SHA256, ARTIFACT_MANIFEST = "artifact_sha256", "artifact_manifest"
# The top-K retrieval settings deploy stores with the model (artifacts/), next to the others.
RETRIEVAL_FILE = "retrieval.json"
# Retrieval keys added after models were registered with retrieval.json: the value that
# reproduces what the code of those models did.
RETRIEVAL_STORED_BEFORE = {"completion": "scan"}
# Written by MLflow's downloader next to a registered model it downloads (name, version):
# not one of the model's files.
DOWNLOAD_META = "registered_model_meta"


def _with_prior(mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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

    @property
    def n_products(self) -> int:
        return self.moments["s_mean"].shape[0] - 1

    @classmethod
    def from_arrays(
        cls,
        moments: dict[str, np.ndarray],
        calibration: BucketCalibration,
        thresholds: Thresholds,
        retrieval: RetrievalConfig | None = None,
    ) -> ServingBundle:
        m = dict(moments)
        m["s_mean"], m["s_var"] = _with_prior(m["s_mean"], m["s_var"])
        m["t_mean"], m["t_var"] = _with_prior(m["t_mean"], m["t_var"])
        return cls(m, calibration, thresholds, retrieval)

    @classmethod
    def load(
        cls,
        moments_path: str | Path,
        calibration_path: str | Path,
        thresholds_path: str | Path,
        retrieval_path: str | Path | None = None,
    ) -> ServingBundle:
        """Read and check the bundle files (``retrieval_path``: the top-K retrieval settings,
        None for none); anything unusable (missing, truncated, corrupt, non-finite,
        inconsistent) raises ``io.DataError`` naming the file and key."""
        moments = read_moments(moments_path)
        calibration = read_calibration(calibration_path)
        thresholds = read_thresholds(thresholds_path, calibration.n_buckets)
        settings = None if retrieval_path is None else read_retrieval(retrieval_path)
        return cls.from_arrays(moments, calibration, thresholds, settings)

    def with_retrieval(self, settings: RetrievalConfig | None) -> ServingBundle:
        """The same bundle with these top-K retrieval settings (its index built afresh)."""
        return dataclasses.replace(self, retrieval=settings)

    @classmethod
    def from_model_dir(cls, path: str | Path) -> ServingBundle:
        """Load from a downloaded MLflow model directory (artifacts/ inside). One downloaded
        from the registry (MLflow leaves ``registered_model_meta`` naming its version) is
        first checked against the file digests deploy recorded on that version
        (:func:`verify_model_files`)."""
        from nextbuy.mlops import io

        registered = _downloaded_version(path)
        if registered is not None:
            uri = f"models:/{registered[0]}/{registered[1]}"
            verify_model_files(uri, path, _version_tags(uri, *registered))
        artifacts = Path(path) / "artifacts"
        if not artifacts.is_dir():
            raise io.DataError(path, "not a serving model: no artifacts/ folder (bundle files) in it")
        return cls._read_dir(path)

    @classmethod
    def _read_dir(cls, path: str | Path) -> ServingBundle:
        artifacts = Path(path) / "artifacts"
        settings = artifacts / RETRIEVAL_FILE
        if not settings.exists():
            log.info(
                "%s: no %s (registered before it was bundled): top-K scores the whole catalogue",
                path,
                RETRIEVAL_FILE,
            )
        return cls.load(
            artifacts / "moments.npz",
            artifacts / "calibration.json",
            artifacts / "thresholds.json",
            settings if settings.exists() else None,
        )

    @classmethod
    def from_model_uri(cls, uri: str) -> ServingBundle:
        """Download ``uri`` (e.g. ``models:/name@champion``), check its files against the
        digests deploy recorded on the registry version (:func:`verify_model_files`: a
        changed file is an ``io.DataError`` naming ``uri`` and the file, raised before
        anything in the download is read), and load it. A model whose files are gone (the
        artifact store, e.g. ``mlartifacts/``, deleted or moved while the registry still
        lists the version) raises ``io.DataError`` naming where the files should be:
        MLflow itself downloads nothing and says nothing about it."""
        import tempfile

        from nextbuy.mlops import io

        with tempfile.TemporaryDirectory() as tmp:
            path, _, _ = _download_checked(uri, tmp)
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

    def _decide(self, score: np.ndarray, uncertainty: np.ndarray):
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
        m = self.moments
        n = self.n_products
        w = m["head_w"].astype(np.float32)
        w2 = w * w
        s_mu, s_var = m["s_mean"][src], m["s_var"][src]
        t_mu, t_var = m["t_mean"][:n], m["t_var"][:n]
        mean = (s_mu * w) @ t_mu.T + np.float32(m["head_b"].reshape(-1)[0])
        # var = sum_i w_i^2 (s̄_i^2 σ²t_i + σ²s_i (t̄_i^2 + σ²t_i)), same as pair_logit_moments.
        var = (s_mu * s_mu * w2) @ t_var.T + (s_var * w2) @ (t_mu * t_mu + t_var).T
        return retrieval.serving_score(mean, var)

    @functools.cached_property
    def candidate_index(self) -> retrieval.CandidateIndex:
        """The top-K retrieval index over the catalogue: built on first use, once per bundle."""
        if self.retrieval is None:
            raise ValueError("this bundle has no retrieval settings: use top_k(..., exact=True)")
        m, n = self.moments, self.n_products
        return retrieval.build(m["t_mean"][:n], m["t_var"][:n], m["head_w"], m["head_b"], self.retrieval)

    def top_k(
        self, source_id: np.ndarray, k: int, exclude_self: bool = True, exact: bool = False
    ) -> pd.DataFrame:
        """Top-k candidates per source among all known products: accepted first,
        then by calibrated probability (score breaks ties between isotonic steps).

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
        if exact or self.retrieval is None:
            picked = self._exact_top_k(idx, k, exclude_self)
        else:
            picked = self._retrieved_top_k(idx, k, exclude_self)
        return _topk_frame(sources, cold, k, picked)

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


def _artifact_location(uri: str) -> str:
    """Where the registry says the files of ``uri`` live (the uri itself if unknown)."""
    if not uri.startswith("models:/"):
        return uri
    try:
        from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

        return ModelsArtifactRepository.get_underlying_uri(uri)
    except Exception:  # noqa: BLE001 - only for the message
        return uri


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_file_digests(model_dir: str | Path, ignore_bytecode: bool = False) -> dict[str, str]:
    """SHA-256 of every file under a model directory, by POSIX path relative to it, sorted.
    Reads bytes only: nothing is unpickled, imported or parsed. The file MLflow's
    downloader adds (``registered_model_meta``) is not one of the model's files.
    ``ignore_bytecode``: leave out ``__pycache__`` folders, which importing the bundled code
    writes (MLflow never logs them); only for a check after that import."""
    root = Path(model_dir)
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
    files.pop(DOWNLOAD_META, None)
    if ignore_bytecode:
        files = {rel: p for rel, p in files.items() if "__pycache__" not in rel.split("/")}
    return {rel: file_sha256(files[rel]) for rel in sorted(files)}


def manifest_text(digests: Mapping[str, str]) -> str:
    """``sha256sum`` format, sorted by path: ``sha256sum -c`` checks a download with it."""
    return "".join(f"{sha}  {rel}\n" for rel, sha in sorted(digests.items()))


def manifest_digest(digests: Mapping[str, str]) -> str:
    """One SHA-256 over every (path, SHA-256) of a model: the ``artifact_sha256`` tag."""
    return hashlib.sha256(manifest_text(digests).encode()).hexdigest()


def parse_manifest(text: str) -> dict[str, str]:
    rows = (line.split("  ", 1) for line in text.splitlines() if "  " in line)
    return {rel: sha for sha, rel in rows}


def artifact_tags(model_dir: str | Path) -> dict[str, str]:
    """The registry tags recording a model directory's files (deploy sets them on the version)."""
    digests = model_file_digests(model_dir)
    return {ARTIFACT_SHA256: manifest_digest(digests), ARTIFACT_MANIFEST: manifest_text(digests)}


def _first_mismatch(actual: Mapping[str, str], recorded: Mapping[str, str]) -> tuple[str, str] | None:
    """(path, what is wrong with it) for the first path, in sorted order, that differs."""
    for rel in sorted(set(actual) | set(recorded)):
        if rel not in actual:
            return rel, "missing (deploy recorded this file)"
        if rel not in recorded:
            return rel, "not one of the files deploy recorded (added since)"
        if actual[rel] != recorded[rel]:
            return rel, f"changed (sha256 {actual[rel][:16]}…, deploy recorded {recorded[rel][:16]}…)"
    return None


def verify_model_files(
    uri: str,
    model_dir: str | Path,
    tags: Mapping[str, str] | None,
    version: str | None = None,
    ignore_bytecode: bool = False,
) -> str | None:
    """Check a downloaded model's files against the digests deploy recorded on its registry
    version (``tags``; None when ``uri`` is no registry version). Call it before anything in
    ``model_dir`` is read, imported or unpickled.

    Returns the verified ``artifact_sha256``. A version registered before deploy recorded
    digests (no tag), or a model that is no registry version, is logged as a warning and
    returns None: it loads unverified. Files that differ raise ``io.DataError`` naming
    ``uri`` and the first differing file (missing, added or changed); ``version``, the
    registry version ``uri`` resolved to, is named in messages when given.
    ``ignore_bytecode``: see :func:`model_file_digests` (never before the code is imported:
    a planted ``__pycache__`` file would then run)."""
    from nextbuy.mlops import io

    which = f"{uri} (v{version})" if version is not None else uri
    expected = (tags or {}).get(ARTIFACT_SHA256)
    if not expected:
        why = (
            "not a registered model version"
            if tags is None
            else f"registered before deploy recorded file digests (no '{ARTIFACT_SHA256}' tag)"
        )
        log.warning("%s: %s; its files are NOT verified before loading", which, why)
        return None
    actual = model_file_digests(model_dir, ignore_bytecode)
    if manifest_digest(actual) == expected:
        return expected
    how = (
        "refusing to load it: the model's files changed in the artifact store after deploy "
        "registered it (tampering or corruption). Restore the files, or release another version "
        "(nextbuy rollback / promote, or re-run deploy)"
    )
    recorded_text = tags.get(ARTIFACT_MANIFEST)
    if recorded_text and hashlib.sha256(recorded_text.encode()).hexdigest() == expected:
        mismatch = _first_mismatch(actual, parse_manifest(recorded_text))
        if mismatch is not None:
            rel, what = mismatch
            at = f" in v{version}" if version is not None else ""
            raise io.DataError(f"{uri} ({rel})", f"{what}{at}; {how}")
    detail = (
        f"its '{ARTIFACT_MANIFEST}' tag does not match '{ARTIFACT_SHA256}' either (registry tags altered?)"
        if recorded_text
        else f"no '{ARTIFACT_MANIFEST}' tag to name which"
    )
    raise io.DataError(
        which,
        f"the files' digest {manifest_digest(actual)[:16]}… differs from the recorded "
        f"{ARTIFACT_SHA256} {expected[:16]}… ({detail}); {how}",
    )


def _registered_version(uri: str) -> tuple[str, str] | None:
    """(name, version) a ``models:/`` registry URI resolves to now; None for other URIs
    (``runs:/``, paths, ``models:/<model id>``). Raises MlflowException when it resolves to nothing."""
    if not uri.startswith("models:/"):
        return None
    from mlflow.store.artifact.utils.models import _parse_model_uri, get_model_name_and_version
    from mlflow.tracking import MlflowClient

    if _parse_model_uri(uri).model_id is not None:
        return None
    name, version = get_model_name_and_version(MlflowClient(), uri)
    return name, str(version)


def _version_tags(uri: str, name: str, version: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    from nextbuy.mlops import io

    try:
        return dict(MlflowClient().get_model_version(name, version).tags)
    except MlflowException as err:
        raise io.DataError(
            uri, f"cannot read v{version} of '{name}' in the registry ({err.message})"
        ) from None


def _downloaded_version(model_dir: str | Path) -> tuple[str, str] | None:
    """(name, version) MLflow's downloader recorded next to a registered model it downloaded."""
    import yaml

    meta = Path(model_dir) / DOWNLOAD_META
    try:
        d = yaml.safe_load(meta.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(d, dict) or not d.get("model_name") or d.get("model_version") is None:
        return None
    return str(d["model_name"]), str(d["model_version"])


def _download_checked(uri: str, dst: str | Path) -> tuple[Path, str | None, str | None]:
    """Download ``uri`` into ``dst`` and verify its files (:func:`verify_model_files`);
    returns the download, the registry version it is (None: not one) and the verified
    digest (None: nothing recorded, warned).
    An alias is resolved once and that version downloaded, so what is checked is what was
    downloaded. ``io.DataError`` when nothing can be downloaded or the files are gone."""
    import mlflow

    from nextbuy.mlops import io

    try:
        registered = _registered_version(uri)
        pinned = uri if registered is None else f"models:/{registered[0]}/{registered[1]}"
        tags = None if registered is None else _version_tags(uri, *registered)
        path = Path(mlflow.artifacts.download_artifacts(pinned, dst_path=str(dst)))
    except (MlflowException, OSError) as err:
        raise io.DataError(uri, f"cannot download the model from {_artifact_location(uri)} ({err})") from None
    if not (path / "artifacts").is_dir():
        raise io.DataError(
            uri,
            f"the model's files are missing at {_artifact_location(uri)} (was the artifact "
            "store, e.g. mlartifacts/, deleted or moved?); re-run deploy to register a model "
            "whose files exist, or restore the artifact store",
        )
    version = None if registered is None else registered[1]
    return path, version, verify_model_files(uri, path, tags, None if pinned == uri else version)


def verify_model_uri(uri: str) -> tuple[str, str | None]:
    """Download the registry model ``uri`` to a temporary folder and check its files against
    the digests deploy recorded (``nextbuy verify-model``); loads nothing. Returns the version
    checked and its verified ``artifact_sha256`` (None: nothing recorded, warned);
    ``io.DataError`` when the files differ, or ``uri`` is no registry version."""
    import tempfile

    from nextbuy.mlops import io

    if not uri.startswith("models:/"):
        raise io.DataError(uri, "not a registry URI (models:/NAME/VERSION or models:/NAME@ALIAS)")
    with tempfile.TemporaryDirectory() as tmp:
        _, version, digest = _download_checked(uri, tmp)
    if version is None:
        raise io.DataError(uri, "not a registry URI (models:/NAME/VERSION or models:/NAME@ALIAS)")
    return version, digest


def _verify_served_files(moments_path: str | Path) -> None:
    """In ``load_context``: the model directory around the bundle, when MLflow downloaded it
    from the registry (``registered_model_meta``), checked against its version's digests."""
    root = Path(moments_path).resolve().parent.parent
    registered = _downloaded_version(root)
    if registered is None or not (root / "MLmodel").is_file():
        return  # not a registry download (a local path, or log_model checking its input example)
    uri = f"models:/{registered[0]}/{registered[1]}"
    # MLflow imported the bundled code already, which may have written __pycache__ there.
    verify_model_files(uri, root, _version_tags(uri, *registered), ignore_bytecode=True)


def _json_object(path: str | Path, keys: tuple[str, ...]) -> dict:
    from nextbuy.mlops import io

    d = io.read_json(path)
    if not isinstance(d, dict):
        raise io.DataError(path, f"expected a JSON object with {list(keys)}, got {type(d).__name__}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise io.DataError(path, f"missing key(s) {missing} (found {sorted(d)})", missing[0])
    return d


def read_calibration(path: str | Path) -> BucketCalibration:
    """The per-bucket calibration (``calibrate``'s calibration.json), checked: sorted finite
    bucket edges, finite increasing knots, probabilities in [0, 1]."""
    from nextbuy.mlops import io

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
    from nextbuy.mlops import io

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
    key of params.yaml ``deploy.retrieval``, within its bounds."""
    from pydantic import ValidationError

    from nextbuy.mlops import io

    d = _json_object(path, tuple(k for k in RetrievalConfig.model_fields if k not in RETRIEVAL_STORED_BEFORE))
    try:
        return RetrievalConfig.model_validate({**RETRIEVAL_STORED_BEFORE, **d})
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or None
        raise io.DataError(path, f"malformed retrieval settings ({key}: {first['msg']})", key) from None


def _invalid(message: str) -> MlflowException:
    """A refusal: MLflow's scoring server answers it with HTTP 400 and ``message``."""
    return MlflowException.invalid_parameter_value(message)


_SHORT = reprlib.Repr()  # bounded depth and length: a nested cell can be huge
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 3, 3, 40, 40


def _shown(values) -> str:
    """The first few offending values, each cut short."""
    return "[" + ", ".join(_SHORT.repr(v) for v in list(values)[:5]) + "]"


def _names(names: list[str]) -> str:
    """Column names for a message: the first ten, each cut short, and how many more."""
    shown = [n if len(n) <= 40 else n[:37] + "..." for n in names[:10]]
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    return f"{shown}{more}"


def _ids(series: pd.Series, col: str) -> np.ndarray:
    """``series`` as int64 product ids, or a refusal naming the first bad values and why."""
    if pd.api.types.is_bool_dtype(series.dtype):
        raise _invalid(
            f"column '{col}' holds true/false: product ids are integers, not booleans; "
            f"first bad values: {_shown(series.head(5))}"
        )
    if series.dtype == object:
        cells = series.to_numpy()
        nested = np.fromiter((not pd.api.types.is_scalar(v) for v in cells), bool, len(cells))
        if nested.any():
            raise _invalid(
                f"column '{col}' holds lists or objects: send one integer product id per cell; "
                f"first bad values: {_shown(cells[nested])}"
            )
        flags = np.fromiter((isinstance(v, (bool, np.bool_)) for v in cells), bool, len(cells))
        if flags.any():
            raise _invalid(
                f"column '{col}' holds true/false: product ids are integers, not booleans; "
                f"first bad values: {_shown(cells[flags])}"
            )
    values = pd.to_numeric(series, errors="coerce")
    if values.isna().any():  # null, NaN, text
        raise _invalid(
            f"column '{col}' must hold integer product ids, not null/NaN or text; "
            f"first bad values: {_shown(series[values.isna()])}"
        )
    in_range = "integer product ids within int64 range (|id| < 2^63)"
    if values.dtype.kind == "i":
        checks = ()
    elif values.dtype.kind == "u":
        checks = ((values.to_numpy() > np.iinfo(np.int64).max, in_range),)
    else:  # floats (and ints beyond int64, which pandas turns into floats)
        as_float = values.to_numpy(dtype=np.float64)
        checks = (
            (~np.isfinite(as_float), "finite integer product ids, not Infinity/-Infinity"),
            (as_float != np.floor(as_float), "integer product ids, not fractions"),
            (np.abs(as_float) >= 2.0**63, in_range),  # floats: the boundary itself is out
        )
    for bad, what in checks:
        if bad.any():
            raise _invalid(f"column '{col}' must hold {what}; first bad values: {_shown(series[bad])}")
    return values.to_numpy(dtype=np.int64)


def validate_request(
    frame: pd.DataFrame, max_rows: int = MAX_REQUEST_ROWS, need_candidates: bool = True
) -> pd.DataFrame:
    """Refuse malformed requests with a message that says what to send (HTTP 400 when served):
    missing, duplicate or extra columns, no rows or more than ``max_rows``, and ids that are
    not integers (text, null, NaN, Infinity, fractions, booleans, lists/objects, beyond int64).
    Pairs (``need_candidates``) take ``source_id, candidate_id``; top-K takes ``source_id`` only."""
    wanted = list(INPUT_COLUMNS if need_candidates else INPUT_COLUMNS[:1])
    how = (
        f"to score pairs send columns {list(INPUT_COLUMNS)}; for top-K recommendations send "
        f"column ['source_id'] only, with params {{\"top_k\": K}}, K from 1 to {MAX_TOP_K:,}"
    )
    columns = [str(c) for c in frame.columns]
    duplicated = [c for c, n in Counter(columns).items() if n > 1]
    if duplicated:
        raise _invalid(f"duplicate column(s) {_names(duplicated)}; {how}")
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise _invalid(f"missing column(s) {missing}; {how} (product ids are integers)")
    extra = [c for c in columns if c not in wanted]
    if extra:
        raise _invalid(f"unexpected column(s) {_names(extra)}; {how}")
    if len(frame) == 0:
        raise _invalid("empty request: send at least one row")
    if len(frame) > max_rows:
        raise _invalid(
            f"{len(frame)} rows in one request; the limit is {max_rows} "
            "(use `nextbuy batch-topk` for bulk scoring)"
        )
    return pd.DataFrame({col: _ids(frame.iloc[:, columns.index(col)], col) for col in wanted})


def top_k_param(params: dict | None) -> int:
    """The ``top_k`` of a request's params: 0 (absent, null or 0, the signature's default)
    scores pairs; 1..MAX_TOP_K asks for that many recommendations per source. Anything else
    (other keys, negative, above the cap, not an integer) is refused with what to send."""
    if params is None:
        return 0
    if not isinstance(params, dict):
        raise _invalid(f'params must be a JSON object such as {{"top_k": 10}}, got {type(params).__name__}')
    unknown = sorted(str(k) for k in params if k != "top_k")
    if unknown:
        raise _invalid(
            f"unknown param(s) {unknown}; the only accepted param is 'top_k' "
            f"(an integer from 1 to {MAX_TOP_K:,}: recommendations per source)"
        )
    k = params.get("top_k")
    if k is None:
        return 0
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise _invalid(f"top_k must be an integer from 1 to {MAX_TOP_K:,}, got {k!r}")
    k = int(k)
    if k < 0:
        raise _invalid(
            f"top_k must be at least 1 (got {k}): it is the number of recommendations per source; "
            "leave top_k out (or 0) to score (source_id, candidate_id) pairs instead"
        )
    if k > MAX_TOP_K:
        raise _invalid(
            f"top_k {k} is above the limit of {MAX_TOP_K:,} recommendations per source; "
            f"ask for at most {MAX_TOP_K:,} (use `nextbuy batch-topk --k K` for more)"
        )
    return k


def _refuse_too_deep_json() -> None:
    """Make JSON nested too deeply a 400, not a 500.

    MLflow's scoring server decodes the body with ``json.loads`` before the model sees it,
    and puts the repr of the input frame in the message of any refusal. JSON nested deeper
    than Python's recursion limit allows (about 1,000 levels for the decoder, fewer for
    pandas' repr of a nested cell) raises RecursionError in either place, which the server
    answers with HTTP 500 and nothing useful. Wrap its request handler, ``invocations``
    (once per process), so that becomes a refusal saying what to send. Nothing here
    recurses, so a RecursionError can only come from the shape of the request. A no-op if
    MLflow renames the function.
    """
    from mlflow.pyfunc import scoring_server

    handle = getattr(scoring_server, "invocations", None)
    if handle is None or getattr(handle, "nextbuy_guard", False):
        return

    @functools.wraps(handle)
    def guarded(*args, **kwargs):
        try:
            return handle(*args, **kwargs)
        except RecursionError:
            raise _invalid(
                "request JSON is nested too deeply; send "
                '{"dataframe_split": {"columns": [...], "data": [[id, ...], ...]}} '
                "with one integer product id per cell"
            ) from None

    guarded.nextbuy_guard = True
    scoring_server.invocations = guarded


class NextbuyModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc.

    Pairs: rows of (source_id, candidate_id) -> score, uncertainty, bucket,
    prob_calibrated, decision, cold_start.
    Recommendations: params {"top_k": K} with rows of source_id -> the K best
    candidates per source (accepted first, by calibrated probability).
    """

    def load_context(self, context) -> None:
        a = context.artifacts
        # After MLflow unpickled this object (a replaced pickle never gets here), before the
        # bundle files are read: changed files or corruption stop the server from starting.
        _verify_served_files(a["moments"])
        self.bundle = ServingBundle.load(a["moments"], a["calibration"], a["thresholds"], a.get("retrieval"))
        _refuse_too_deep_json()

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        top_k = top_k_param(params)
        request = validate_request(pd.DataFrame(model_input), need_candidates=top_k == 0)
        if top_k == 0:
            return self.bundle.score(request["source_id"].to_numpy(), request["candidate_id"].to_numpy())
        sources = request["source_id"].drop_duplicates().to_numpy()
        rows = sources.size * min(top_k, max(self.bundle.n_products - 1, 1))
        if rows > MAX_TOPK_ROWS:
            raise _invalid(
                f"top-K answer of {rows:,} rows ({sources.size:,} sources x top_k {top_k}); "
                f"the limit is {MAX_TOPK_ROWS:,} rows per request: send fewer sources or a smaller "
                "top_k (use `nextbuy batch-topk` for bulk recommendations)"
            )
        return self.bundle.top_k(sources, top_k)
