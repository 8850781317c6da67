"""The model card of a registered version: what its release knew, and its metrics as its traffic's
labels matured since.

Parts: ``record`` (the typed :class:`Card` and its pieces), ``text`` (its Markdown, front matter
and MLflow Description), ``facts`` (what a card computes: label maturity, calibration per
bucket, cold sources, matured metrics) are pure; ``mlflow_cards`` (a card built at deploy,
written to and read from MLflow), ``search`` (``nextbuy models list/find/diff``) and
``maturity`` (the recent versions re-scored on matured traffic) talk to MLflow.

Importing this package loads only the pure parts: the MLflow-touching names load their part on
first use, so the Spark engine and the CLI import the face without mlflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nextbuy.faces import lazy_names
from nextbuy.model_card.facts import Measured, maturity_columns
from nextbuy.model_card.record import Card
from nextbuy.model_card.text import description, render

if TYPE_CHECKING:
    from nextbuy.model_card.maturity import InProcess, flags, mature_recent
    from nextbuy.model_card.mlflow_cards import publish_card, read
    from nextbuy.model_card.search import by_hash, by_metric, by_param, by_snapshot, diff, listing

__all__ = [
    "Card",
    "InProcess",
    "Measured",
    "by_hash",
    "by_metric",
    "by_param",
    "by_snapshot",
    "description",
    "diff",
    "flags",
    "listing",
    "mature_recent",
    "maturity_columns",
    "publish_card",
    "read",
    "render",
]

# The part each MLflow-touching name of the face lives in (imported on first use: mlflow is heavy).
_MLFLOW_PARTS = {
    "InProcess": "maturity",
    "flags": "maturity",
    "mature_recent": "maturity",
    "publish_card": "mlflow_cards",
    "read": "mlflow_cards",
    "by_hash": "search",
    "by_metric": "search",
    "by_param": "search",
    "by_snapshot": "search",
    "diff": "search",
    "listing": "search",
}


__getattr__ = lazy_names(__name__, _MLFLOW_PARTS, globals())
