"""Command line: one command per stage (what dvc.yaml and the Airflow DAG call),
plus summary and benchmarks."""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Callable

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler

from nextbuy.io import DataError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="nextbuy: bought U, recommend V next.")
console = Console(stderr=True)
STAGES = {
    "ingest": "Load or simulate products, the directed graph and impressions; validate; split by time.",
    "label_delay": "Fit the conversion-delay model; importance weights for every impression.",
    "train": "Train the dual-embedding GNN (BLADE) with the weighted conversion and directed link losses.",
    "calibrate": "Score the holdout with uncertainty; isotonic calibration per uncertainty bucket.",
    "thresholds": "Fit one threshold per uncertainty bucket for the precision target, plus the baseline.",
    "deploy": "Register the serving model in MLflow; move 'champion' when the floors hold.",
}
ParamsOption = typer.Option("params.yaml", "--params", help="params file (each stage reads its own section)")


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)])
    for noisy in ("alembic", "mlflow", "urllib3", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _run_stage(name: str, params: str) -> None:
    _setup_logging()
    module = importlib.import_module(f"nextbuy.stages.{name}")
    try:
        metrics = module.run(params)
    except DataError as err:
        console.print(f"[bold red]{name}: bad input[/]\n{err.message}", highlight=False)
        raise typer.Exit(code=2) from None
    except ValidationError as err:
        console.print(f"[bold red]{name}: invalid section '{name}' in {params}[/]\n{err}", highlight=False)
        raise typer.Exit(code=2) from None
    console.print(f"[green]{name} done[/] → metrics/{name}.json")
    logging.getLogger("nextbuy").debug(json.dumps(metrics, default=str))


def _stage_command(name: str, help_text: str) -> Callable[[str], None]:
    def command(params: str = ParamsOption) -> None:
        _run_stage(name, params)

    command.__doc__ = help_text
    return command


# Help texts here, not from the stage modules' docstrings: importing every stage
# (torch, mlflow) would slow down every command.
for _stage, _help in STAGES.items():
    app.command(name=_stage.replace("_", "-"))(_stage_command(_stage, _help))


@app.command()
def summary(root: Path = typer.Option(Path("."), help="project root")) -> None:
    """Headline metrics of each stage, the registered model and how to open the UIs."""
    from nextbuy.report import print_summary

    print_summary(root)


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: each prints a table and writes JSON (--out).")
app.add_typer(bench_app, name="bench")


if __name__ == "__main__":  # pragma: no cover
    app()
