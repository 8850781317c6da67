"""The simulated store written as a store's own raw logs (what ``ingest.source: events`` reads):
orders, impressions, interactions and the catalogue, as a store would export them.

How the simulator's records become log rows (so what ingest rebuilds from them is what the
simulator knows, see tests/data/test_store_logs.py):

- a purchase "bought u, then v" at time t is one customer's two order lines: u at
  ``t - gap`` and v at t (gap uniform in (0, ``ORDER_GAP_HOURS``], never before u's launch),
  so the graph's edge u -> v is first seen at t, as in the simulator;
- an impression is shown to a customer of its own, who clicks, adds to cart and orders the
  shown product at the impression's event times (as observed at the logs' end); that
  customer's one order makes no co-purchase pair, so conversions do not add edges;
- the catalogue lists every product with its category, price and launch time.

Nothing of the ground truth (true conversion probabilities, unobserved conversions) is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nextbuy.config import SimulatorConfig
from nextbuy.data.simulator import simulate_span, store_purchases
from nextbuy.mlops import io

ORDER_GAP_HOURS = 6.0
_GAP_STREAM = 11  # the random stream of the order gaps (apart from the simulator's own)
LOG_FORMATS = ("parquet", "csv", "partitioned")
LOG_NAMES = ("orders", "impressions", "interactions", "catalogue")


@dataclass(frozen=True, eq=False)
class StoreLogs:
    orders: pd.DataFrame  # customer, product, ordered_at, quantity
    impressions: pd.DataFrame  # impression_id, customer, source_product, shown_product, shown_at
    interactions: pd.DataFrame  # customer, product, kind, at
    catalogue: pd.DataFrame  # product, category, price, launched_at

    def frames(self) -> dict[str, pd.DataFrame]:
        return {name: getattr(self, name) for name in LOG_NAMES}


def _purchase_orders(bought: np.ndarray, launch_ns: np.ndarray, keys: np.ndarray, seed: int) -> pd.DataFrame:
    u, v, t_ns = bought
    rng = np.random.default_rng([seed, _GAP_STREAM])
    gap = np.ceil(rng.random(len(u)) * ORDER_GAP_HOURS * 3_600e9).astype(np.int64) + 1
    launched = launch_ns[u] > np.iinfo(np.int64).min
    room = np.where(launched, (t_ns - launch_ns[u]) // 2, gap)
    gap = np.maximum(np.minimum(gap, room), 1)
    customer = np.char.add("b", np.arange(len(u)).astype(str))
    return pd.DataFrame(
        {
            "customer": np.concatenate([customer, customer]).astype(object),
            "product": np.concatenate([keys[u], keys[v]]),
            "ordered_at": pd.to_datetime(np.concatenate([t_ns - gap, t_ns]), unit="ns"),
            "quantity": np.ones(2 * len(u), dtype=np.int64),
        }
    )


def simulated_logs(cfg: SimulatorConfig, seed: int, until: pd.Timestamp) -> StoreLogs:
    """The simulated store from its first day to ``until`` as raw logs, observed at ``until``."""
    world, bought = store_purchases(cfg, seed, until)
    traffic = simulate_span(world, cfg, seed, world.start, until).impressions
    keys = world.products.sort_values("product_id")["product_key"].to_numpy(str).astype(object)
    launch = world.truth_products.sort_values("product_id")["launched_at"]
    launch_ns = launch.to_numpy("datetime64[ns]").view(np.int64)
    customer = np.char.add("s", traffic["impression_id"].to_numpy().astype(str)).astype(object)
    shown = keys[traffic["shown_id"].to_numpy()]
    converted = traffic["converted_at"].notna().to_numpy()
    conversions = pd.DataFrame(
        {
            "customer": customer[converted],
            "product": shown[converted],
            "ordered_at": traffic["converted_at"][converted].to_numpy(),
            "quantity": np.ones(int(converted.sum()), dtype=np.int64),
        }
    )
    orders = pd.concat([_purchase_orders(bought, launch_ns, keys, seed), conversions], ignore_index=True)
    interactions = pd.concat(
        [
            pd.DataFrame(
                {
                    "customer": customer[t.notna()],
                    "product": shown[t.notna()],
                    "kind": kind,
                    "at": t[t.notna()],
                }
            )
            for kind, t in (("click", traffic["clicked_at"]), ("cart", traffic["carted_at"]))
        ],
        ignore_index=True,
    )
    return StoreLogs(
        orders=orders.sort_values("ordered_at", kind="stable").reset_index(drop=True),
        impressions=pd.DataFrame(
            {
                "impression_id": traffic["impression_id"].to_numpy(np.int64),
                "customer": customer,
                "source_product": keys[traffic["source_id"].to_numpy()],
                "shown_product": shown,
                "shown_at": traffic["shown_at"].to_numpy(),
            }
        ),
        interactions=interactions.sort_values("at", kind="stable").reset_index(drop=True),
        catalogue=pd.DataFrame(
            {
                "product": keys,
                "category": world.products.sort_values("product_id")["category"].to_numpy(np.int64),
                "price": world.products.sort_values("product_id")["price"].to_numpy(np.float64),
                "launched_at": launch.to_numpy(),
            }
        ),
    )


def _write_by_month(frame: pd.DataFrame, time: str, folder: Path) -> None:
    """``frame`` as one parquet file per month of ``time`` under ``month=YYYY-MM/`` (hive
    partitioning: the month is in the path, not in the file), each written on its own. pyarrow's
    dataset writer (``to_parquet(partition_cols=...)``) leaves threads that can abort the process
    as Python exits, after every file is written (apache/arrow#36980: "terminate called
    without an active exception", exit 134, in a few runs of simulate-logs in a hundred)."""
    for month, part in frame.groupby(frame[time].dt.strftime("%Y-%m"), sort=True):
        (folder / f"month={month}").mkdir(parents=True)
        part.to_parquet(folder / f"month={month}" / "part-0.parquet", index=False)


def write_logs(logs: StoreLogs, out: os.PathLike | str, form: str = "parquet") -> dict[str, str]:
    """The logs as files under ``out`` (replaced as a whole): ``parquet`` (one file each),
    ``csv``, or ``partitioned`` (each event log a parquet folder with a ``month=YYYY-MM/`` part
    per month of its time column, the catalogue one file). Returns name -> path written."""
    if form not in LOG_FORMATS:
        raise ValueError(f"unknown log format {form!r} (one of {', '.join(LOG_FORMATS)})")
    written = {}
    with io.atomic_dir(out) as tmp:
        for name, frame in logs.frames().items():
            time = {"orders": "ordered_at", "impressions": "shown_at", "interactions": "at"}.get(name)
            if form == "csv":
                path = Path(name + ".csv")
                frame.to_csv(tmp / path, index=False)
            elif form == "partitioned" and time is not None:
                path = Path(name)
                _write_by_month(frame, time, tmp / path)
            else:
                path = Path(name + ".parquet")
                frame.to_parquet(tmp / path, index=False)
            written[name] = str(Path(out) / path)
    return written
