"""`nextbuy bench`: benchmarks that print a table and write JSON (--out).

The operational benchmarks that measure the product (src/nextbuy/bench/) are registered here.
Research benchmarks live outside the package (benchmarks/ at the project root) and reach this
group through the ``nextbuy.bench`` entry point group: each entry point names a Typer command
function (its docstring the help), registered under the entry point's name. The product never
imports them; without the research package installed their commands are simply absent.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

import typer

from nextbuy.cli.common import app, console, setup_logging

ENTRY_POINT_GROUP = "nextbuy.bench"
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: each prints a table and writes JSON (--out).")
app.add_typer(bench_app, name="bench")
# name -> help; each is src/nextbuy/bench/<name>.py with run(out: Path) -> dict.
BENCHES = {
    "serve": "Batch pairs/s, top-K for all 100k products (retrieval vs exact), REST p50/p99, 100 candidates.",
    "monitor": "A month of traffic: days to detect an injected drift, false alarms vs naive positivity.",
    "dag": "Airflow overhead: dag.test() of nextbuy_training vs dvc repro of its six stages (tiny store).",
    "faults": "Fault matrix, tiny store: bad params/files/outputs, kill -9 in every stage, bad requests.",
    "scale": "Stage times and peak RSS at 10k/100k/1M products; time exponent, BLADE vs GraphSAGE epoch.",
}


def _bench_command(name: str, help_text: str) -> Callable[[Path], None]:
    def command(out: Path = typer.Option(Path(f"bench-{name}.json"), "--out", help="JSON results")) -> None:
        setup_logging()
        figures = importlib.import_module(f"nextbuy.bench.{name}").run(out)
        console.print(f"[green]bench {name}[/] → {out}: {json.dumps(figures)}", highlight=False)

    command.__doc__ = help_text
    return command


def _faults_command(help_text: str) -> Callable[..., None]:
    def command(
        out: Path = typer.Option(Path("bench-faults.json"), "--out", help="JSON results"),
        only: str | None = typer.Option(
            None, help="run only the cases whose name contains this (alternatives separated by |)"
        ),
    ) -> None:
        setup_logging()
        figures = importlib.import_module("nextbuy.bench.faults").run(out, only=only)
        counts = {k: v for k, v in figures.items() if isinstance(v, int)}
        console.print(f"[green]bench faults[/] → {out}: {json.dumps(counts)}", highlight=False)

    command.__doc__ = help_text
    return command


def _scale_command(help_text: str) -> Callable[..., None]:
    def command(
        out: Path = typer.Option(Path("bench-scale.json"), "--out", help="JSON results"),
        sizes: str = typer.Option("10000,100000,1000000", help="catalogue sizes (products), comma-separated"),
        preset: Path | None = typer.Option(
            None, help="params preset applied over params.yaml (e.g. presets/large-store-1m.yaml)"
        ),
    ) -> None:
        setup_logging()
        bench = importlib.import_module("nextbuy.bench.scale")
        chosen = None if preset is None else str(preset)
        figures = bench.run(out, sizes=bench.parse_sizes(sizes), preset=chosen)
        console.print(f"[green]bench scale[/] → {out}: {json.dumps(figures)}", highlight=False)

    command.__doc__ = help_text
    return command


def _serve_command(help_text: str) -> Callable[..., None]:
    def command(
        out: Path = typer.Option(Path("bench-serve.json"), "--out", help="JSON results"),
        products: int = typer.Option(100_000, min=100, help="products in the synthetic catalogue"),
        topk_products: list[int] = typer.Option(
            [],
            "--topk-products",
            help="also time top-K for every product of a catalogue this size (repeatable)",
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
        setup_logging()
        bench = importlib.import_module("nextbuy.bench.serve")
        figures = bench.run(out, products=products, topk_products=topk_products, topk_bundle=topk_bundle)
        console.print(f"[green]bench serve[/] → {out}: {json.dumps(figures)}", highlight=False)

    command.__doc__ = help_text
    return command


_FACTORIES = {"serve": _serve_command, "scale": _scale_command, "faults": _faults_command}
for _bench, _help in BENCHES.items():
    factory = _FACTORIES[_bench](_help) if _bench in _FACTORIES else _bench_command(_bench, _help)
    bench_app.command(name=_bench)(factory)
for _entry in entry_points(group=ENTRY_POINT_GROUP):
    if _entry.name not in BENCHES:  # an installed research benchmark never hides a product one
        bench_app.command(name=_entry.name)(_entry.load())
