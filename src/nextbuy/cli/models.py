"""`nextbuy models`: the model catalogue on MLflow's registry: list the versions, show a version's
card, find versions by data snapshot, hash, param or metric, diff two versions, and re-score the
recent versions on traffic whose labels have matured."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nextbuy.cli.common import ModelNameOption, app, console, model_name_or_default, setup_logging

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

models_app = typer.Typer(
    no_args_is_help=True,
    help="The model catalogue: every registered version's card, searchable by data, metric and lineage.",
)
app.add_typer(models_app, name="models")
out = Console(soft_wrap=True)  # results on stdout (pipeable); messages on stderr
# Each command imports nextbuy.model_card inside: it brings pandas (and mlflow on first use), and
# the CLI's start-up stays light.


def _client_call(action: Callable[[Any], Any]) -> Any:
    """``action(client)`` on the project's MLflow store; registry errors exit 1, bad queries 2."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from nextbuy.mlops import io, tracking

    tracking.configure()
    try:
        return action(MlflowClient())
    except io.DataError as err:
        console.print(f"[bold red]{escape(err.message)}[/]", highlight=False)
        raise typer.Exit(code=2) from None
    except ValueError as err:
        console.print(f"[bold red]{escape(str(err))}[/]", highlight=False)
        raise typer.Exit(code=2) from None
    except MlflowException as err:
        console.print(f"[bold red]{escape(err.message)}[/]", highlight=False)
        raise typer.Exit(code=1) from None


# Listing headers short enough for a row to fit 80 columns (the rest of a key reads as written).
HEADERS = {"version": "v", "release_auc": "AUC at release", "matured_auc": "AUC matured"}


def _cell(value: object) -> str:
    """A listing's value as read at a glance: a midnight snapshot as its date, other times to
    the minute."""
    if value is None:
        return "—"
    text = str(value)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)?", text):
        text = text[:10] if text[11:19] == "00:00:00" else text[:16]
    return escape(text)


def _table(rows: list[dict], title: str) -> None:
    if not rows:
        console.print(f"[yellow]{escape(title)}: no versions[/]", highlight=False)
        return
    # No side borders, one space between columns: a version's row fits an 80-column terminal.
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in rows[0]:
        table.add_column(HEADERS.get(column, column.replace("_", " ")))
    for row in rows:
        table.add_row(*(_cell(v) for v in row.values()))
    out.print(table)


@models_app.command("list")
def list_versions(model_name: str | None = ModelNameOption) -> None:
    """Every version, newest first: alias, data snapshot, AUC at release (the gate's estimate on
    delay-corrected labels) and once its traffic's labels matured, and status."""
    from nextbuy import model_card

    name = model_name_or_default(model_name)
    _table(_client_call(lambda c: model_card.listing(c, name)), f"{name}: registered versions")


@models_app.command()
def show(
    version: int = typer.Argument(..., help="model version"),
    model_name: str | None = ModelNameOption,
    front_matter: bool = typer.Option(True, help="with the YAML front matter (Hugging Face layout)"),
) -> None:
    """The version's model card (Markdown), as its deploy recorded it. A version without one is
    refused, saying how to register the model again."""
    from nextbuy import model_card

    name = model_name_or_default(model_name)
    card = _client_call(lambda c: model_card.read(c, name, str(version)))
    print(model_card.render(card) if front_matter else model_card.description(card, limit=10**9))


@models_app.command()
def find(
    snapshot: str | None = typer.Option(
        None, help="versions that learned from this data snapshot (blast radius)"
    ),
    data_hash: str | None = typer.Option(
        None, "--hash", help="DVC md5 of the ingested or weighted data (a prefix will do)"
    ),
    param: str | None = typer.Option(None, help="KEY=VALUE of params.yaml, e.g. train.lr=0.005"),
    metric: str | None = typer.Option(
        None, help="METRIC OP VALUE, e.g. 'matured.auc<0.6', 'candidate.auc>=0.7'"
    ),
    model_name: str | None = ModelNameOption,
) -> None:
    """Versions meeting every condition given (at least one), listed as `models list` does."""
    from nextbuy import model_card

    name = model_name_or_default(model_name)
    searches = [
        (snapshot, model_card.by_snapshot),
        (data_hash, model_card.by_hash),
        (param, model_card.by_param),
        (metric, model_card.by_metric),
    ]
    given = [(value, search) for value, search in searches if value is not None]
    if not given:
        console.print("[bold red]give --snapshot, --hash, --param or --metric[/]", highlight=False)
        raise typer.Exit(code=2)

    def matching(client: MlflowClient) -> list[dict]:
        found = set.intersection(*(search(client, name, value) for value, search in given))
        return [row for row in model_card.listing(client, name) if row["version"] in found]

    _table(_client_call(matching), f"{name}: versions found")


@models_app.command()
def diff(
    first: int = typer.Argument(..., help="model version"),
    second: int = typer.Argument(..., help="the other model version"),
    model_name: str | None = ModelNameOption,
) -> None:
    """What differs between two versions: params, data (snapshot, DVC hashes, commit) and metrics."""
    from nextbuy import model_card

    name = model_name_or_default(model_name)
    changes = _client_call(lambda c: model_card.diff(c, name, str(first), str(second)))
    for section, rows in changes.items():
        if not rows:
            out.print(f"{section}: the same", highlight=False)
            continue
        table = Table(title=f"{section}: v{first} vs v{second}")
        for column in (section.rstrip("s"), f"v{first}", f"v{second}"):
            table.add_column(column)
        for key, a, b in rows:
            table.add_row(
                escape(key),
                escape(str(a) if a is not None else "—"),
                escape(str(b) if b is not None else "—"),
            )
        out.print(table)


@models_app.command()
def mature(
    params: str = typer.Option(
        "params.yaml", "--params", help="params file (monitor, deploy and engine sections)"
    ),
) -> None:
    """Re-score the recent versions on the traffic (data/traffic) whose labels have matured and
    add dated rows to their cards (what the monitor stage does after watching the traffic, on
    the engine of engine.kind)."""
    from nextbuy import model_card, paths
    from nextbuy.config import DeployConfig, EngineConfig, MonitorConfig, load_section
    from nextbuy.mlops import io, schemas
    from nextbuy.stages.monitor import maturity_engine

    setup_logging()
    cfg, deploy_cfg = load_section(MonitorConfig, params), load_section(DeployConfig, params)
    engine = maturity_engine(load_section(EngineConfig, params))
    traffic = (paths.TRAFFIC_IMPRESSIONS, paths.TRAFFIC_META)
    matured = _client_call(
        lambda c: model_card.mature_recent(
            c,
            deploy_cfg.model_name,
            io.read_table(paths.PRODUCTS, schemas.PRODUCTS),
            traffic,
            (cfg, deploy_cfg),
            engine,
        )
    )
    for m in matured:
        rows = (
            ", ".join(f"{r['maturity_days']}d AUC {r['auc'] or float('nan'):.3f}" for r in m["rows"])
            or "no matured rows yet"
        )
        flag = f" [bold red]below floor: {escape('; '.join(m['below_floor']))}[/]" if m["below_floor"] else ""
        console.print(f"v{m['version']} ({m['alias'] or 'no alias'}): {rows}{flag}", highlight=False)
