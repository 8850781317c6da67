"""The serving model as an MLflow pyfunc: :class:`NextbuyModel` wraps the scorer
(``bundle.ServingBundle``), validates each request (``requests``) and answers pairs or top-K.

Cold start: an unknown product id (never seen in training, or negative) is not
an error. It is scored with the population prior of its role — the mean
embedding, with the spread of all products added to its variance — which gives
a popularity-level score with a high uncertainty (so it lands in the most
uncertain bucket and its strictest threshold), and ``cold_start`` is True.

Top-K: the model's retrieval settings (deploy's ``retrieval.json``, from params.yaml
``deploy.retrieval``) pick a faiss index over the catalogue, built on the first top-K;
each source's candidates are retrieved from it and ranked exactly, and a source whose
top-K the re-rank cannot prove complete is completed by an exact scan of the catalogue
where ``completion`` says so (``nextbuy.domain.retrieval``): with the exact ``flat``
search and the scan top-K is exact, ``ivf`` / ``hnsw`` are approximate.

Top-K order: calibrate chooses it out of fold (``nextbuy.domain.served_ranking``): the
model's own, or a count ranking of the store's purchases (co-purchase counts, popularity)
when that ranked held-out next purchases better beyond its CI. Deploy logs the choice
(``served_ranking.json``) and, for a count ranking, the counts (``counts.npz``); the pair
columns of every answer still come from the model.

What deploy stores with every model (``bundle.STORED_FILES``, the store's product keys in
the moments, the digest tags) is what a model is loaded from: a model registered without
one of them is refused, naming what is missing and how to re-register it.

Trust boundary: deploy records the SHA-256 of every file of the logged model (the
pickled ``python_model.pkl``, ``MLmodel``, the bundled code and the bundle files) on
the registry version (``artifact_sha256``, ``artifact_manifest``). Our loaders
(:meth:`ServingBundle.from_model_uri`, :meth:`ServingBundle.from_model_dir` on a
registry download, hence monitor, deploy's champion and ``nextbuy batch-topk``)
check the downloaded files against it before reading anything in them and refuse a
model whose files changed (``integrity.verify_model_files``). ``mlflow models serve``
unpickles the model before any of our code runs: ``NextbuyModel.load_context``
repeats the check there, which catches changed bundle files and corruption, but not
a replaced pickle (whose code runs first).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from nextbuy.serving.bundle import ServingBundle
from nextbuy.serving.integrity import verify_served_files
from nextbuy.serving.requests import (
    MAX_REQUEST_ROWS,
    raise_if_cancelled,
    refusal,
    refuse_too_deep_json,
    top_k_param,
    validate_request,
)

# REST guard on top-K: rows in one top-K answer (distinct sources x K, K capped by the catalogue).
MAX_TOPK_ROWS = MAX_REQUEST_ROWS
# Top-K is computed this many answer rows at a time, the request's cancellation checked between.
CANCEL_CHECK_ROWS = 10_000


class NextbuyModel(PythonModel):
    """MLflow pyfunc.

    Pairs: rows of (source_id, candidate_id) -> score, uncertainty, bucket,
    prob_calibrated, decision, cold_start.
    Recommendations: params {"top_k": K} with rows of source_id -> the K best
    candidates per source (accepted first, by calibrated probability; or by the count
    ranking calibrate chose to serve).
    """

    def load_context(self, context: PythonModelContext) -> None:
        a = context.artifacts
        # After MLflow unpickled this object (a replaced pickle never gets here), before the
        # bundle files are read: changed files or corruption stop the server from starting.
        verify_served_files(a["moments"])
        self.bundle = ServingBundle.from_stored(a, Path(a["moments"]).resolve().parent.parent)
        refuse_too_deep_json()

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        """Pairs scored or top-K recommended; a cancelled request (``requests.CANCELLED``)
        stops before it starts, between chunks of top-K, and before its answer is written."""
        raise_if_cancelled()
        answer = self._answer(model_input, params)
        raise_if_cancelled()
        return answer

    def _answer(self, model_input: pd.DataFrame, params: dict | None) -> pd.DataFrame:
        top_k = top_k_param(params)
        request = validate_request(pd.DataFrame(model_input), need_candidates=top_k == 0)
        if "source_key" in request.columns:
            return self._answer_in_keys(request, top_k)
        if top_k == 0:
            return self.bundle.score(request["source_id"].to_numpy(), request["candidate_id"].to_numpy())
        return self._top_k(request["source_id"].to_numpy(), top_k)

    def _answer_in_keys(self, request: pd.DataFrame, top_k: int) -> pd.DataFrame:
        """A request in the store's keys: each key read as its product id (a key the model
        does not know: a product it never saw, answered as cold start), answered with the keys
        beside the ids."""
        if self.bundle.keys is None:
            raise refusal(
                "this model holds no store product keys: send source_id and candidate_id, the product ids"
            )
        source_key = request["source_key"].to_numpy()
        if top_k == 0:
            candidate_key = request["candidate_key"].to_numpy()
            answer = self.bundle.score(self.bundle.ids_of(source_key), self.bundle.ids_of(candidate_key))
            return answer.assign(source_key=source_key, candidate_key=candidate_key)
        unique = pd.unique(source_key)
        answer = self._top_k(self.bundle.ids_of(unique), top_k, unique_sources=False)
        per_source = len(answer) // len(unique)  # k rows per source, in the order sent
        return answer.assign(
            source_key=np.repeat(unique, per_source),
            candidate_key=self.bundle.key_of(answer["candidate_id"].to_numpy()),
        )

    def _top_k(self, source_id: np.ndarray, top_k: int, unique_sources: bool = True) -> pd.DataFrame:
        sources = pd.unique(source_id) if unique_sources else source_id
        rows = sources.size * min(top_k, max(self.bundle.n_products - 1, 1))
        if rows > MAX_TOPK_ROWS:
            raise refusal(
                f"top-K answer of {rows:,} rows ({sources.size:,} sources x top_k {top_k}); "
                f"the limit is {MAX_TOPK_ROWS:,} rows per request: send fewer sources or a smaller "
                "top_k (use `nextbuy batch-topk` for bulk recommendations)"
            )
        step = max(1, CANCEL_CHECK_ROWS // top_k)
        parts = []
        for start in range(0, sources.size, step):
            raise_if_cancelled()
            parts.append(self.bundle.top_k(sources[start : start + step], top_k))
        return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
