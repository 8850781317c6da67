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
STAGES = ("ingest", "label_delay", "train", "calibrate", "thresholds", "deploy")
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


def _stage_command(name: str) -> Callable[[str], None]:
    def command(params: str = ParamsOption) -> None:
        _run_stage(name, params)

    command.__doc__ = importlib.import_module(f"nextbuy.stages.{name}").__doc__.strip().split("\n\n")[0]
    return command


for _stage in STAGES:
    app.command(name=_stage.replace("_", "-"))(_stage_command(_stage))


@app.command()
def summary(root: Path = typer.Option(Path("."), help="project root")) -> None:
    """Headline metrics of each stage, the registered model and how to open the UIs."""
    from nextbuy.report import print_summary

    print_summary(root)


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: each prints a table and writes JSON (--out).")
app.add_typer(bench_app, name="bench")


def main() -> None:  # pragma: no cover
    app()
