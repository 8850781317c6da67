"""What every command shares: the Typer app, the console, common options, logging and the
exit codes for input errors."""

from __future__ import annotations

import logging

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from nextbuy.constants import INPUT_ERROR_EXIT_CODE

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="nextbuy: bought U, recommend V next.",
    # markdown: a docstring wrapped in the source reads as one paragraph in --help
    rich_markup_mode="markdown",
)
# soft_wrap: a message naming a file keeps the path on one line, whatever the width.
console = Console(stderr=True, soft_wrap=True)
ParamsOption = typer.Option("params.yaml", "--params", help="params file (each stage reads its own section)")
ModelNameOption = typer.Option(None, help="registered model (default: deploy.model_name of params.yaml)")


@app.callback()
def _process() -> None:
    """Every command: freed memory stays with the process for reuse (``nextbuy.allocator``)."""
    from nextbuy.allocator import keep_freed_memory

    keep_freed_memory()


def _not_stop_fallout(record: logging.LogRecord) -> bool:
    """False for what SQLAlchemy logs, with a traceback, about the cursor or connection it could
    not close after a stop signal interrupted a query (it closes the connection first): the
    stopped command says what happened, in one line."""
    from nextbuy.procs import stop_received

    return not (record.name.startswith("sqlalchemy") and record.exc_info and stop_received() is not None)


def setup_logging() -> None:
    handler = RichHandler(console=console, show_path=False)
    handler.addFilter(_not_stop_fallout)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler])
    for noisy in ("alembic", "mlflow", "urllib3", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def input_error(message: str) -> typer.Exit:
    """Exit code 2 for a configuration or input error, printed: an Airflow stage task that
    ends with it fails without retries."""
    console.print(message, highlight=False)
    return typer.Exit(code=INPUT_ERROR_EXIT_CODE)


def model_name_or_default(given: str | None) -> str:
    """``given``, else deploy.model_name of ./params.yaml (the name deploy registers under)."""
    if given is not None:
        return given
    from nextbuy.config import DeployConfig, load_section

    try:
        return load_section(DeployConfig).model_name
    except (FileNotFoundError, ValidationError) as err:
        console.print(f"[bold red]no model name: pass --model-name[/] ({escape(str(err))})", highlight=False)
        raise typer.Exit(code=2) from None
