"""``nextbuy bench events``: time and peak memory of building the graph and the labels from raw
logs (``domain.events.build_from_logs``, the core of ``ingest.source: events``) at sizes up to
10M orders and 50M impressions.

Each size runs in a child process of its own, so its peak RSS (``os.wait4``) is that size's
alone: the synthetic coded logs held in memory (the builder's inputs, ``inputs_gib``) plus
everything the build needs. Reading and coding the files is not timed: at these sizes it is
the parquet reader's work, and the build is what the pipeline adds.

The logs are a synthetic store: ``products`` = orders / 100 with Zipf popularity, customers =
orders / 5, 90 days; impressions shown to those customers; 3% of impressions converted by an
order of the shown product (log-normal delay, median 3 days), 10% clicked, 4% carted; the
rest of the orders are the customers' own. The rules are params.yaml's ``ingest.events``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from nextbuy.config import EventsConfig, read_params

DEFAULT_SIZES = "1000000:5000000,3000000:15000000,10000000:50000000"
SPAN_DAYS = 90
CONVERTED, CLICKED, CARTED = 0.03, 0.10, 0.04
NS_PER_DAY = 86_400 * 10**9


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``orders:impressions`` pairs, comma-separated."""
    pairs = []
    for item in text.split(","):
        orders, _, impressions = item.partition(":")
        pairs.append((int(float(orders)), int(float(impressions))))
    if not pairs or any(o < 100 or i < 100 for o, i in pairs):
        raise ValueError(f"sizes {text!r}: give orders:impressions pairs of at least 100 each")
    return pairs


def _zipf_draw(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    weight = (np.arange(n) + 1.0) ** -1.1
    cumulative = np.cumsum(weight[rng.permutation(n)])
    return np.minimum(np.searchsorted(cumulative, rng.random(size) * cumulative[-1]), n - 1).astype(np.int64)


def synthetic_logs(
    n_orders: int, n_impressions: int, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """Coded orders, impressions and interactions (the builder's input contract) and the
    number of products."""
    rng = np.random.default_rng(seed)
    n_products, n_customers = max(1_000, n_orders // 100), max(100, n_orders // 5)
    start = pd.Timestamp("2026-01-01").value
    span = SPAN_DAYS * NS_PER_DAY
    shown_ns = start + (rng.random(n_impressions) * span).astype(np.int64)
    impressions = pd.DataFrame(
        {
            "impression_id": np.arange(n_impressions, dtype=np.int64),
            "customer": rng.integers(0, n_customers, n_impressions),
            "source_id": _zipf_draw(rng, n_products, n_impressions),
            "shown_id": _zipf_draw(rng, n_products, n_impressions),
            "shown_at": shown_ns.view("datetime64[ns]"),
        }
    )
    n_conv = min(round(CONVERTED * n_impressions), n_orders // 2)
    conv = rng.choice(n_impressions, n_conv, replace=False)
    delay = (np.exp(rng.normal(np.log(3.0), 1.0, n_conv)) * NS_PER_DAY).astype(np.int64)
    n_own = n_orders - n_conv
    orders = pd.DataFrame(
        {
            "customer": np.concatenate(
                [rng.integers(0, n_customers, n_own), impressions["customer"].to_numpy()[conv]]
            ),
            "product": np.concatenate(
                [_zipf_draw(rng, n_products, n_own), impressions["shown_id"].to_numpy()[conv]]
            ),
            "ordered_at": np.concatenate(
                [start + (rng.random(n_own) * span).astype(np.int64), shown_ns[conv] + delay]
            ).view("datetime64[ns]"),
        }
    )
    parts = []
    for kind, share, minutes in (("click", CLICKED, 5.0), ("cart", CARTED, 20.0)):
        rows = rng.choice(n_impressions, round(share * n_impressions), replace=False)
        after = (rng.exponential(minutes * 60e9, len(rows))).astype(np.int64)
        parts.append(
            pd.DataFrame(
                {
                    "customer": impressions["customer"].to_numpy()[rows],
                    "product": impressions["shown_id"].to_numpy()[rows],
                    "kind": pd.Categorical.from_codes(
                        np.full(len(rows), 0 if kind == "click" else 1), ["click", "cart"]
                    ),
                    "at": (shown_ns[rows] + after).view("datetime64[ns]"),
                }
            )
        )
    return orders, impressions, pd.concat(parts, ignore_index=True), n_products


def measure(n_orders: int, n_impressions: int, events: dict) -> dict:
    """One size, in this process: generate the logs, then build the graph and labels."""
    from nextbuy.domain.events import build_from_logs

    cfg = EventsConfig.model_validate(events)
    started = time.perf_counter()
    orders, impressions, interactions, n_products = synthetic_logs(n_orders, n_impressions)
    generated = time.perf_counter()
    inputs = sum(int(f.memory_usage(deep=True).sum()) for f in (orders, impressions, interactions))
    snapshot = pd.Timestamp("2026-01-01") + pd.Timedelta(days=SPAN_DAYS)
    built = build_from_logs(orders, impressions, interactions, n_products, cfg, snapshot)
    done = time.perf_counter()
    return {
        "orders": n_orders,
        "impressions": n_impressions,
        "interactions": len(interactions),
        "products": n_products,
        "edges": len(built.edges),
        "conversions_attributed": built.counts["conversions_attributed"],
        "generate_s": round(generated - started, 3),
        "build_s": round(done - generated, 3),
        "inputs_gib": round(inputs / 2**30, 4),
    }


def run_size(n_orders: int, n_impressions: int, events: dict) -> dict:
    """:func:`measure` in a child process; its own peak RSS added."""
    code = (
        "import json, sys; from nextbuy.bench.events import measure; "
        "print(json.dumps(measure(int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]))))"
    )
    cmd = [sys.executable, "-c", code, str(n_orders), str(n_impressions), json.dumps(events)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as child:
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        output = child.stdout.read() if child.stdout else ""
    if child.returncode != 0:
        return {"orders": n_orders, "impressions": n_impressions, "failed": f"exit {child.returncode}"}
    row = json.loads(output.strip().splitlines()[-1])
    return row | {"peak_rss_gib": round(usage.ru_maxrss / 2**20, 2)}  # ru_maxrss: KiB on Linux


def run(out: Path, sizes: str = DEFAULT_SIZES, params: str = "params.yaml") -> dict:
    events = read_params(params)["ingest"]["events"]
    rows = [run_size(o, i, events) for o, i in parse_sizes(sizes)]
    figures = {
        "rules": {k: v for k, v in events.items() if not k.endswith("_path")},
        "sizes": rows,
        "largest_peak_rss_gib": max((r.get("peak_rss_gib", 0.0) for r in rows), default=0.0),
    }
    Path(out).write_text(json.dumps(figures, indent=2) + "\n")
    table = Table(title="graph + labels from raw logs (domain.events.build_from_logs)")
    for column in ("orders", "impressions", "edges", "build s", "inputs GiB", "peak RSS GiB"):
        table.add_column(column, justify="right")
    for r in rows:
        cells = [
            r.get(k) for k in ("orders", "impressions", "edges", "build_s", "inputs_gib", "peak_rss_gib")
        ]
        table.add_row(
            *(f"{c:,}" if isinstance(c, int) else str(c if c is not None else r.get("failed")) for c in cells)
        )
    Console(stderr=True).print(table)
    return figures
