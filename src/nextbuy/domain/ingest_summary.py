"""What ingest reports of the tables it wrote (pure): the graph's size, degrees and tail
(``metrics/ingest.json``, the degree plot), the impressions per split and their observed
conversion rates, and the rows a model trained on them learns from (``split.training_record``).
The impressions' figures come as :class:`ImpressionFigures`, from a pandas frame
(:func:`impression_figures`) or from aggregates computed elsewhere (the Spark engine)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from nextbuy.domain.split import SPLITS


@dataclass(frozen=True)
class ImpressionFigures:
    sizes: dict[str, int]  # rows per split present, splits in sorted order
    converted: dict[str, int]  # rows with a conversion, per split present
    first_learned: pd.Timestamp | None  # the span of shown_at of the non-test rows
    last_learned: pd.Timestamp | None


def impression_figures(impressions: pd.DataFrame) -> ImpressionFigures:
    """The figures of a split impressions table held in this process."""
    by_split = impressions.groupby("split")
    shown = pd.to_datetime(impressions.loc[impressions["split"] != "test", "shown_at"])
    return ImpressionFigures(
        {str(s): int(n) for s, n in by_split.size().items()},
        {str(s): int(n) for s, n in by_split["converted_at"].count().items()},
        pd.Timestamp(shown.min()) if len(shown) else None,
        pd.Timestamp(shown.max()) if len(shown) else None,
    )


def degree_ccdf(edges: pd.DataFrame, n_products: int) -> pd.DataFrame:
    """Share of products with degree >= k, for a log-log plot of the tail."""
    rows = []
    for direction, col in (("out", "src"), ("in", "dst")):
        deg = np.bincount(edges[col].to_numpy(), minlength=n_products)
        ks = np.unique(np.concatenate([[1], np.unique(np.geomspace(1, max(deg.max(), 1), 30).astype(int))]))
        share = (deg[None, :] >= ks[:, None]).mean(axis=1)
        rows.append(pd.DataFrame({"direction": direction, "degree": ks, "share_at_least": share}))
    return pd.concat(rows, ignore_index=True)


def summarise(
    n: int, edges: pd.DataFrame, figures: ImpressionFigures, snapshot: pd.Timestamp, extra: dict[str, Any]
) -> dict:
    """metrics/ingest.json: ``n`` products, the graph's figures, the impressions' per split;
    ``extra``: feature_columns and cleaning, as given."""
    out_deg = np.bincount(edges["src"].to_numpy(), minlength=n)
    in_deg = np.bincount(edges["dst"].to_numpy(), minlength=n)
    pair = edges["src"].to_numpy() * n + edges["dst"].to_numpy()
    reverse = edges["dst"].to_numpy() * n + edges["src"].to_numpy()
    return {
        "snapshot": str(snapshot),
        "products": n,
        "edges": len(edges),
        "reciprocated_edge_share": float(np.isin(reverse, pair).mean()),
        "degree": {
            "out_max": int(out_deg.max()),
            "in_max": int(in_deg.max()),
            "total_median": float(np.median(out_deg + in_deg)),
            "share_total_degree_le_1": float(((out_deg + in_deg) <= 1).mean()),
        },
        "impressions": {s: figures.sizes.get(s, 0) for s in SPLITS},
        "observed_conversion_rate": {
            s: float(np.float64(figures.converted[s]) / np.float64(size)) for s, size in figures.sizes.items()
        },
        **extra,
    }
