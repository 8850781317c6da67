"""The champion's commands: the monitor's alerts, rollback and promote in the registry, and
batch top-K from a registered model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer
from rich.markup import escape

from nextbuy.cli.common import ModelNameOption, app, console, model_name_or_default, setup_logging
from nextbuy.constants import ALERT_EXIT_CODE


def _registry_call(action: Callable[[], str]) -> None:
    from mlflow.exceptions import MlflowException

    from nextbuy.mlops import tracking

    tracking.configure()
    try:
        console.print(action(), highlight=False)
    except MlflowException as err:
        console.print(f"[bold red]{escape(err.message)}[/]", highlight=False)
        raise typer.Exit(code=1) from None


@app.command()
def alerts(
    path: Path = typer.Option(Path("monitoring/alerts.json"), help="written by the monitor stage"),
) -> None:
    """Print the monitor's alerts; exit 3 when there is any (what Airflow branches on).

    Also the versions whose matured metrics fell below the gate's floors (their model cards are
    flagged): the champion among them is an alert; another version is printed as a warning.
    A monitor run that watched nothing (no champion released yet) has none: exit 0, saying why."""
    from nextbuy.mlops import io

    try:
        written = io.read_json(path)
        fired = written["alerts"]
    except io.DataError as err:
        console.print(f"[bold red]{escape(err.message)}[/]", highlight=False)
        raise typer.Exit(code=2) from None
    except (KeyError, TypeError):
        console.print(
            f"[bold red]{path}: no 'alerts' list (not written by the monitor stage?)[/]", highlight=False
        )
        raise typer.Exit(code=2) from None
    for a in fired:
        console.print(f"[bold red]ALERT[/] {a['window_start']} {escape(a['message'])}", highlight=False)
    champion_below = _matured_flags(written.get("matured") or [])
    if fired or champion_below:
        raise typer.Exit(code=ALERT_EXIT_CODE)
    if written.get("monitored") is False:  # no champion released: a state, not a failure
        console.print(f"[yellow]nothing monitored:[/] {escape(str(written.get('reason')))}", highlight=False)
    console.print("[green]no alerts[/]")


def _matured_flags(matured: list[dict]) -> bool:
    """Print the versions below a floor once their labels matured; whether the champion is one."""
    champion = False
    for m in matured:
        serving = m.get("alias") == "champion"
        champion = champion or serving
        label = "[bold red]ALERT[/]" if serving else "[yellow]flagged[/]"
        alias = f" ({m['alias']})" if m.get("alias") else ""
        why = "; ".join(m.get("below_floor") or [])
        console.print(
            f"{label} v{m['version']}{alias} matured below the gate's floors: {escape(why)}", highlight=False
        )
    return champion


@app.command()
def rollback(model_name: str | None = ModelNameOption) -> None:
    """Move 'champion' back to 'previous' (undo the last release); 'previous' becomes the
    newest earlier version that served as champion. A 'previous' trained on another catalogue
    than the ingested store's (data/ingested/products.parquet) is not restored."""
    from mlflow.tracking import MlflowClient

    from nextbuy import paths
    from nextbuy.domain import catalogue
    from nextbuy.mlops import io, schemas
    from nextbuy.release import registry

    name = model_name_or_default(model_name)
    belongs = None
    if paths.PRODUCTS.exists():
        try:
            products = io.read_table(paths.PRODUCTS, schemas.PRODUCTS)
        except io.DataError as err:
            console.print(f"[bold red]{escape(err.message)}[/]", highlight=False)
            raise typer.Exit(code=2) from None
        belongs = lambda recorded: catalogue.mismatch(recorded, products)  # noqa: E731
    else:
        console.print(f"[yellow]no {paths.PRODUCTS} here: the version's catalogue is not checked[/]")
    _registry_call(lambda: registry.rollback(MlflowClient(), name, belongs))


@app.command()
def promote(
    version: int = typer.Argument(..., help="model version to release"),
    model_name: str | None = ModelNameOption,
    force: bool = typer.Option(False, "--force", help="release a version the gate refused (needs --reason)"),
    reason: str | None = typer.Option(None, help="why a refused version is released anyway (kept on it)"),
) -> None:
    """Deliberately make VERSION the champion (the old one becomes 'previous').

    A version the gate refused needs --force --reason TEXT; the reason, who and when are
    tagged on it."""
    from mlflow.tracking import MlflowClient

    from nextbuy.release import registry

    if force and not (reason and reason.strip()):
        console.print("[bold red]--force needs --reason TEXT (kept on the version)[/]", highlight=False)
        raise typer.Exit(code=2)
    name = model_name_or_default(model_name)
    _registry_call(lambda: registry.promote(MlflowClient(), name, str(version), force=force, reason=reason))


@app.command("batch-topk")
def batch_topk(
    out: Path = typer.Option(Path("recommendations"), help="output folder (one sub-folder per shard)"),
    k: int = typer.Option(20, min=1, help="recommendations per source"),
    model: str | None = typer.Option(
        None, help="MLflow model URI (default: the champion of deploy.model_name, models:/<name>@champion)"
    ),
    shard: int = typer.Option(0, min=0, help="this run's shard: the sources with id % num-shards == shard"),
    num_shards: int = typer.Option(
        1, min=1, help="shards the catalogue's sources are split into (one run each)"
    ),
    sources_per_file: int = typer.Option(4096, min=1, help="sources per parquet part file (bounds memory)"),
    engine: str | None = typer.Option(
        None, help="pandas (this process) | spark (engine.spark of params.yaml); default: engine.kind"
    ),
) -> None:
    """Top-K recommendations for every product (this shard's sources) to parquet."""
    from nextbuy.config import EngineConfig, load_section, with_changes
    from nextbuy.mlops import io, tracking
    from nextbuy.release.registry import CHAMPION
    from nextbuy.serving import ServingBundle, write_top_k

    model = model or f"models:/{model_name_or_default(None)}@{CHAMPION}"
    setup_logging()
    tracking.configure()
    try:  # downloads, checks the recorded digests, then reads
        bundle = ServingBundle.from_model_uri(model)
    except io.DataError as err:
        console.print(f"[bold red]batch-topk: bad model[/]\n{escape(err.message)}", highlight=False)
        raise typer.Exit(code=2) from None
    engine_cfg = load_section(EngineConfig)
    if engine not in (None, "pandas", "spark"):
        console.print(
            f"[bold red]batch-topk: --engine is pandas or spark, not {engine!r}[/]", highlight=False
        )
        raise typer.Exit(code=2)
    if engine is not None:
        engine_cfg = with_changes(engine_cfg, kind=engine)
    if engine_cfg.kind == "spark":  # the same part files, the parts spread over Spark's executors
        from nextbuy.engines.spark import batch as spark_batch

        result = spark_batch.write_top_k(
            engine_cfg.spark, bundle, out, k, (shard, num_shards), sources_per_file
        )
    else:
        result = write_top_k(bundle, out, k, shard, num_shards, sources_per_file)
    console.print(
        f"[green]wrote {result['rows']:,} recommendations for {result['sources']:,} sources[/]"
        f" → {result['path']}"
    )
