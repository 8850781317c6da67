"""Validation of serving requests (pairs or top-K) into refusals a caller can act on, the
scoring server's guard against JSON nested too deeply, and the cancellation of a request
whose work is no longer wanted."""

from __future__ import annotations

import functools
import reprlib
import threading
from collections import Counter
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

INPUT_COLUMNS = ("source_id", "candidate_id")
# The same request in the store's own product keys (text such as "85123A", or integers).
KEY_COLUMNS = ("source_key", "candidate_key")
MAX_REQUEST_ROWS = 100_000  # REST guard: larger batches belong to `nextbuy batch-topk`
# REST guard on top-K: recommendations per source (a larger K is a bulk job: batch-topk), and
# rows in one top-K answer (distinct sources x K, K capped by the catalogue).
MAX_TOP_K = 1000

# The cancellation of the request being computed. ``nextbuy serve`` (``limits.Admission``)
# sets the event when its client has gone, when SIGTERM's grace period has run out, or once the
# request is answered (MLflow's timeout answers 504 while its worker thread runs on). MLflow's
# server runs the model in a worker thread with ``asyncio.to_thread``, which copies the
# context: the model's ``predict`` sees the event and stops between chunks of work.
CANCELLED: ContextVar[threading.Event | None] = ContextVar("nextbuy_request_cancelled", default=None)


class RequestCancelled(Exception):
    """The request's work stopped: nobody is left to read its answer."""


def raise_if_cancelled() -> None:
    """RequestCancelled when the request being computed in this thread was cancelled."""
    event = CANCELLED.get()
    if event is not None and event.is_set():
        raise RequestCancelled("request cancelled: its client has gone or the server is stopping")


def refusal(message: str) -> MlflowException:
    """A refusal: MLflow's scoring server answers it with HTTP 400 and ``message``."""
    return MlflowException.invalid_parameter_value(message)


_SHORT = reprlib.Repr()  # bounded depth and length: a nested cell can be huge
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 3, 3, 40, 40


def _shown(values: Iterable[object]) -> str:
    """The first few offending values, each cut short."""
    return "[" + ", ".join(_SHORT.repr(v) for v in list(values)[:5]) + "]"


def _names(names: list[str]) -> str:
    """Column names for a message: the first ten, each cut short, and how many more."""
    shown = [n if len(n) <= 40 else n[:37] + "..." for n in names[:10]]
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    return f"{shown}{more}"


def _refuse_nested(cells: np.ndarray, col: str, one: str) -> None:
    """A refusal naming the first cells that hold a list or an object, not ``one`` value."""
    nested = np.fromiter((not pd.api.types.is_scalar(v) for v in cells), bool, len(cells))
    if nested.any():
        raise refusal(
            f"column '{col}' holds lists or objects: send {one} per cell; "
            f"first bad values: {_shown(cells[nested])}"
        )


def _flags(cells: np.ndarray) -> np.ndarray:
    """Which cells hold true/false."""
    return np.fromiter((isinstance(v, (bool, np.bool_)) for v in cells), bool, len(cells))


def _ids(series: pd.Series, col: str) -> np.ndarray:
    """``series`` as int64 product ids, or a refusal naming the first bad values and why."""
    if pd.api.types.is_bool_dtype(series.dtype):
        raise refusal(
            f"column '{col}' holds true/false: product ids are integers, not booleans; "
            f"first bad values: {_shown(series.head(5))}"
        )
    if series.dtype == object:
        cells = series.to_numpy()
        _refuse_nested(cells, col, "one integer product id")
        flags = _flags(cells)
        if flags.any():
            raise refusal(
                f"column '{col}' holds true/false: product ids are integers, not booleans; "
                f"first bad values: {_shown(cells[flags])}"
            )
    values = pd.to_numeric(series, errors="coerce")
    if values.isna().any():  # null, NaN, text
        raise refusal(
            f"column '{col}' must hold integer product ids, not null/NaN or text; "
            f"first bad values: {_shown(series[values.isna()])}"
        )
    in_range = "integer product ids within int64 range (|id| < 2^63)"
    checks: tuple[tuple[np.ndarray, str], ...]
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
            raise refusal(f"column '{col}' must hold {what}; first bad values: {_shown(series[bad])}")
    return values.to_numpy(dtype=np.int64)


def _store_keys(series: pd.Series, col: str) -> np.ndarray:
    """``series`` as the store's product keys (text; an integer key in its written form, 7 not
    7.0), or a refusal naming the first bad values and why."""
    cells = series.to_numpy(dtype=object)
    _refuse_nested(cells, col, "one product key")
    flags = _flags(cells)
    missing = pd.isna(series).to_numpy()
    if flags.any() or missing.any():
        bad = cells[flags | missing]
        raise refusal(
            f"column '{col}' must hold the store's product keys (text or integers), not null/NaN "
            f"or true/false; first bad values: {_shown(bad)}"
        )
    fractions = np.fromiter(
        (isinstance(v, (float, np.floating)) and not float(v).is_integer() for v in cells), bool, len(cells)
    )
    if fractions.any():
        raise refusal(
            f"column '{col}' holds fractions: a product key is text or an integer; "
            f"first bad values: {_shown(cells[fractions])}"
        )
    text = [str(int(v)) if isinstance(v, (float, np.floating)) else str(v).strip() for v in cells]
    empty = np.array([t == "" for t in text])
    if empty.any():
        raise refusal(f"column '{col}' holds empty product keys; first bad values: {_shown(cells[empty])}")
    return np.array(text, dtype=object)


def validate_request(
    frame: pd.DataFrame, max_rows: int = MAX_REQUEST_ROWS, need_candidates: bool = True
) -> pd.DataFrame:
    """Refuse malformed requests with a message that says what to send (HTTP 400 when served):
    missing, duplicate or extra columns, no rows or more than ``max_rows``, and ids that are
    not integers (text, null, NaN, Infinity, fractions, booleans, lists/objects, beyond int64).
    Pairs (``need_candidates``) take ``source_id, candidate_id``; top-K takes ``source_id`` only.
    Either may speak the store's own keys instead: ``source_key[, candidate_key]`` (text)."""
    columns = [str(c) for c in frame.columns]
    by_key = any(c in KEY_COLUMNS for c in columns)
    names = KEY_COLUMNS if by_key else INPUT_COLUMNS
    wanted = list(names if need_candidates else names[:1])
    how = (
        f"to score pairs send columns {list(INPUT_COLUMNS)} (product ids) or {list(KEY_COLUMNS)} "
        f"(the store's product keys); for top-K recommendations send column ['source_id'] or "
        f"['source_key'] only, with params {{\"top_k\": K}}, K from 1 to {MAX_TOP_K:,}"
    )
    duplicated = [c for c, n in Counter(columns).items() if n > 1]
    if duplicated:
        raise refusal(f"duplicate column(s) {_names(duplicated)}; {how}")
    missing = [c for c in wanted if c not in columns]
    if missing:
        what = "the store's product keys" if by_key else "product ids are integers"
        raise refusal(f"missing column(s) {missing}; {how} ({what})")
    extra = [c for c in columns if c not in wanted]
    if extra:
        raise refusal(f"unexpected column(s) {_names(extra)}; {how}")
    if len(frame) == 0:
        raise refusal("empty request: send at least one row")
    if len(frame) > max_rows:
        raise refusal(
            f"{len(frame)} rows in one request; the limit is {max_rows} "
            "(use `nextbuy batch-topk` for bulk scoring)"
        )
    read = _store_keys if by_key else _ids
    return pd.DataFrame({col: read(frame.iloc[:, columns.index(col)], col) for col in wanted})


def top_k_param(params: dict | None) -> int:
    """The ``top_k`` of a request's params: 0 (absent, null or 0, the signature's default)
    scores pairs; 1..MAX_TOP_K asks for that many recommendations per source. Anything else
    (other keys, negative, above the cap, not an integer) is refused with what to send."""
    if params is None:
        return 0
    if not isinstance(params, dict):
        raise refusal(f'params must be a JSON object such as {{"top_k": 10}}, got {type(params).__name__}')
    unknown = sorted(str(k) for k in params if k != "top_k")
    if unknown:
        raise refusal(
            f"unknown param(s) {unknown}; the only accepted param is 'top_k' "
            f"(an integer from 1 to {MAX_TOP_K:,}: recommendations per source)"
        )
    k = params.get("top_k")
    if k is None:
        return 0
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise refusal(f"top_k must be an integer from 1 to {MAX_TOP_K:,}, got {k!r}")
    k = int(k)
    if k < 0:
        raise refusal(
            f"top_k must be at least 1 (got {k}): it is the number of recommendations per source; "
            "leave top_k out (or 0) to score (source_id, candidate_id) pairs instead"
        )
    if k > MAX_TOP_K:
        raise refusal(
            f"top_k {k} is above the limit of {MAX_TOP_K:,} recommendations per source; "
            f"ask for at most {MAX_TOP_K:,} (use `nextbuy batch-topk --k K` for more)"
        )
    return k


def refuse_too_deep_json() -> None:
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
    from mlflow.pyfunc import scoring_server  # MLflow's server (FastAPI): only where a model is served

    handle = getattr(scoring_server, "invocations", None)
    if handle is None or getattr(handle, "nextbuy_guard", False):
        return

    @functools.wraps(handle)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return handle(*args, **kwargs)
        except RecursionError:
            raise refusal(
                "request JSON is nested too deeply; send "
                '{"dataframe_split": {"columns": [...], "data": [[id, ...], ...]}} '
                "with one integer product id per cell"
            ) from None

    setattr(guarded, "nextbuy_guard", True)  # noqa: B010 (an attribute functions do not declare)
    scoring_server.invocations = guarded
