"""`nextbuy bench`: benchmarks that print a table and write JSON (--out).

The operational benchmarks that measure the product (src/nextbuy/bench/<name>.py, or the package
bench/<name>/ whose face holds it, each with ``run(out, **options) -> dict``) are the commands
below, in the order `--help` lists them.
Research benchmarks live outside the package (benchmarks/ at the project root) and reach this
group through the ``nextbuy.bench`` entry point group: each entry point names a Typer command
function (its docstring the help), registered under the entry point's name. The product never
imports them; without the research package installed their commands are simply absent.
Importing this module stays light: each command imports its benchmark when run.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import typer

from nextbuy.cli.common import ParamsOption, app, console, input_error, setup_logging

ENTRY_POINT_GROUP = "nextbuy.bench"
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: each prints a table and writes JSON (--out).")
app.add_typer(bench_app, name="bench")


def _out(name: str) -> Any:
    return typer.Option(Path(f"bench-{name}.json"), "--out", help="JSON results")


def _run(name: str, out: Path, **options: Any) -> None:
    """Run the benchmark ``nextbuy.bench.<name>`` and print the one-line summary (its integer counters
    only, for the fault matrix, whose figures also hold the per-case rows)."""
    from nextbuy.config import NoParamsFile  # here: the CLI's start-up stays light

    setup_logging()
    try:
        figures = importlib.import_module(f"nextbuy.bench.{name}").run(out, **options)
    except NoParamsFile as err:  # run outside the project folder
        raise input_error(f"[bold red]bench {name}[/]: {err}: run it in the project folder") from None
    if name == "faults":
        figures = {k: v for k, v in figures.items() if isinstance(v, int)}
    console.print(f"[green]bench {name}[/] → {out}: {json.dumps(figures)}", highlight=False)


def serve(
    out: Path = _out("serve"),
    products: int = typer.Option(100_000, min=100, help="products in the synthetic catalogue"),
    topk_products: list[int] = typer.Option(
        [], "--topk-products", help="also time top-K for every product of a catalogue this size (repeatable)"
    ),
    topk_bundle: Path | None = typer.Option(
        None,
        "--topk-bundle",
        exists=True,
        file_okay=False,
        help="also time top-K for every product of the trained bundle a pipeline run left in "
        "this project folder (models/gnn, models/calibration, models/thresholds)",
    ),
) -> None:
    """Batch pairs/s, top-K for all 100k products (retrieval vs exact), REST p50/p99, 100 candidates."""
    _run("serve", out, products=products, topk_products=topk_products, topk_bundle=topk_bundle)


def monitor(out: Path = _out("monitor")) -> None:
    """A month of traffic: days to detect an injected drift, false alarms vs naive positivity."""
    _run("monitor", out)


def preset(
    out: Path = _out("preset"),
    preset: Path = typer.Option(..., exists=True, dir_okay=False, help="presets/<store>.yaml"),
    params: str = ParamsOption,
) -> None:
    """The whole pipeline on a preset's store (make run-preset): what it read, released and saw."""
    _run("preset", out, preset=preset, params_file=params)


def dag(out: Path = _out("dag")) -> None:
    """Airflow overhead: dag.test() of nextbuy_training vs dvc repro of its six stages (tiny store)."""
    _run("dag", out)


def faults(
    out: Path = _out("faults"),
    only: str | None = typer.Option(
        None,
        help="run only the cases whose name contains this (alternatives separated by |; "
        "a kill case: 'train: kill -9 at 60%')",
    ),
) -> None:
    """Fault matrix, tiny store: bad params/files/outputs, kill -9, SIGTERM, full disk, stopped UIs."""
    _run("faults", out, only=only)


def scale(
    out: Path = _out("scale"),
    sizes: str = typer.Option("10000,100000,1000000", help="catalogue sizes (products), comma-separated"),
    preset: Path | None = typer.Option(
        None, help="params preset applied over params.yaml (e.g. presets/large-store-1m.yaml)"
    ),
    budget_minutes: float | None = typer.Option(
        None,
        min=1,
        help="per size: skip a size estimated or seen to take longer (unset: the bench's own, "
        "recorded in the result's config)",
    ),
) -> None:
    """Stage times and peak RSS at 10k/100k/1M products; time exponent, BLADE vs GraphSAGE epoch."""
    budget = {} if budget_minutes is None else {"budget_s": 60.0 * budget_minutes}
    _run("scale", out, sizes=sizes, preset=None if preset is None else str(preset), **budget)


def events(
    out: Path = _out("events"),
    sizes: str = typer.Option(
        "1000000:5000000,3000000:15000000,10000000:50000000",
        help="orders:impressions per size, comma-separated (each size in a process of its own)",
    ),
    params: str = ParamsOption,
) -> None:
    """Graph + labels from raw logs: build time, peak RSS per orders:impressions size (to 10M:50M)."""
    try:
        _run("events", out, sizes=sizes, params=params)
    except ValueError as err:  # sizes that are not orders:impressions pairs
        raise input_error(f"[bold red]bench events[/]: {err}") from None


def engines(
    out: Path = _out("engines"),
    sizes: str = typer.Option("1000000,10000000,100000000", help="impressions per store, comma-separated"),
    cap_gib: float = typer.Option(16.0, min=1.0, help="a run whose processes pass this together is stopped"),
    work: Path | None = typer.Option(
        None, help="folder for the stores (default: the system's temporary one)"
    ),
) -> None:
    """ingest, label_delay, monitor, batch-topk: pandas vs Spark, 1M/10M/100M impressions, time, RSS."""
    try:
        _run("engines", out, sizes=sizes, cap_gib=cap_gib, work=work)
    except ValueError as err:  # sizes that are not numbers
        raise input_error(f"[bold red]bench engines[/]: {err}") from None


# name -> one-line help, in the order `nextbuy bench --help` and the CLI reference list them.
PRODUCT_BENCHES: dict[str, Callable[..., None]] = {
    "serve": serve,
    "monitor": monitor,
    "dag": dag,
    "faults": faults,
    "scale": scale,
    "events": events,
    "engines": engines,
    "preset": preset,
}
BENCHES = {name: (command.__doc__ or "").strip() for name, command in PRODUCT_BENCHES.items()}
for _name, _command in PRODUCT_BENCHES.items():
    bench_app.command(name=_name)(_command)
for _entry in entry_points(group=ENTRY_POINT_GROUP):
    if _entry.name not in BENCHES:  # an installed research benchmark never hides a product one
        bench_app.command(name=_entry.name)(_entry.load())
