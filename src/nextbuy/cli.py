"""Command line: one command per stage (what dvc.yaml and the Airflow DAG call),
plus summary, registry actions, Airflow and benchmarks.

Start-up stays light (no pandas, torch or mlflow): heavy modules are imported by
the command that needs them.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.text import Text

from nextbuy import stage_list
from nextbuy.constants import ALERT_EXIT_CODE, FAILURE_FILE_ENV

app = typer.Typer(add_completion=False, no_args_is_help=True, help="nextbuy: bought U, recommend V next.")
console = Console(stderr=True)
# dvc.yaml declares the stages (else: the stage modules present); one command each.
STAGE_LIST = stage_list.available()
STAGES = {stage.name: stage.desc for stage in STAGE_LIST}  # name -> help, in dvc.yaml order
ParamsOption = typer.Option("params.yaml", "--params", help="params file (each stage reads its own section)")
ModelNameOption = typer.Option(None, help="registered model (default: deploy.model_name of params.yaml)")


@app.callback()
def _process() -> None:
    """Every command: freed memory stays with the process for reuse (``nextbuy.allocator``)."""
    from nextbuy.allocator import keep_freed_memory

    keep_freed_memory()


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)]
    )
    for noisy in ("alembic", "mlflow", "urllib3", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _run_stage(name: str, params: str) -> None:
    _setup_logging()
    try:
        metrics = _stage_metrics(name, params)
    except BaseException:
        # dvc repro deleted the outputs before running us: put the last good ones back.
        _put_back_last_good(name)
        raise
    console.print(f"[green]{name} done[/] → metrics/{name}.json")
    logging.getLogger("nextbuy").debug(json.dumps(metrics, default=str))


def _put_back_last_good(name: str) -> None:
    from nextbuy.restore import restore_stage_outputs

    try:
        done = restore_stage_outputs(name)
    except Exception as err:  # noqa: BLE001 - the stage's own error is what the user must see
        console.print(
            f"[yellow]{name}: could not restore the last good outputs: {escape(str(err))}[/]", highlight=False
        )
        return
    if done["restored"]:
        console.print(
            f"[yellow]{name} failed: its last good outputs (dvc.lock) are back in place:[/] "
            + ", ".join(done["restored"]),
            highlight=False,
        )
    if done["missing"]:
        console.print(f"[yellow]{name}: not in the DVC cache, not restored:[/] " + ", ".join(done["missing"]))


def _input_error(message: str) -> typer.Exit:
    """Exit code 2 for a configuration or input error, printed; under an Airflow stage task
    (``FAILURE_FILE_ENV`` set) also written there, so the task fails without retries."""
    console.print(message, highlight=False)
    failure_file = os.environ.get(FAILURE_FILE_ENV)
    if failure_file:
        Path(failure_file).write_text(Text.from_markup(message).plain + "\n")
    return typer.Exit(code=2)


def _stage_metrics(name: str, params: str) -> dict:
    """Run stage ``name``; known failures become exit code 2 with the message a user can act on."""
    from nextbuy.mlops.io import DataError

    module = importlib.import_module(f"nextbuy.stages.{name}")
    try:
        return module.run(params)
    except DataError as err:
        raise _input_error(f"[bold red]{name}: bad input[/]\n{escape(err.message)}") from None
    except ValidationError as err:
        raise _input_error(
            f"[bold red]{name}: invalid section '{name}' in {params}[/]\n{escape(str(err))}"
        ) from None
    except FileNotFoundError as err:
        if Path(params).exists():
            raise
        raise _input_error(f"[bold red]{name}: {escape(str(err))}[/]") from None


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
            from nextbuy.stages.deploy import FIRST_RELEASE_ENV

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
    missing = []
    for stage in stages or STAGES:
        done = restore_stage_outputs(stage)
        missing += done["missing"]
    console.print("[yellow]outputs as dvc.lock records them[/] (last good runs)", highlight=False)
    if missing:
        console.print("[yellow]not in the DVC cache, not restored:[/] " + escape(", ".join(missing)))


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
    if fired:
        raise typer.Exit(code=ALERT_EXIT_CODE)
    if written.get("monitored") is False:  # no champion released: a state, not a failure
        console.print(f"[yellow]nothing monitored:[/] {escape(str(written.get('reason')))}", highlight=False)
    console.print("[green]no alerts[/]")


def _model_name(given: str | None) -> str:
    """``given``, else deploy.model_name of ./params.yaml (the name deploy registers under)."""
    if given is not None:
        return given
    from nextbuy.config import load_section

    try:
        return load_section("deploy").model_name
    except (FileNotFoundError, ValidationError) as err:
        console.print(f"[bold red]no model name: pass --model-name[/] ({escape(str(err))})", highlight=False)
        raise typer.Exit(code=2) from None


@app.command()
def rollback(model_name: str | None = ModelNameOption) -> None:
    """Move 'champion' back to 'previous' (undo the last release); 'previous' becomes the
    newest earlier version that served as champion. A 'previous' trained on another catalogue
    than the ingested store's (data/ingested/products.parquet) is not restored."""
    from mlflow.tracking import MlflowClient

    from nextbuy import paths
    from nextbuy.domain import catalogue
    from nextbuy.mlops import io, registry, schemas

    name = _model_name(model_name)
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

    from nextbuy.mlops import registry

    if force and not (reason and reason.strip()):
        console.print("[bold red]--force needs --reason TEXT (kept on the version)[/]", highlight=False)
        raise typer.Exit(code=2)
    name = _model_name(model_name)
    _registry_call(lambda: registry.promote(MlflowClient(), name, str(version), force=force, reason=reason))


@app.command("batch-topk")
def batch_topk(
    out: Path = typer.Option(Path("recommendations"), help="output folder (one sub-folder per shard)"),
    k: int = typer.Option(20, min=1, help="recommendations per source"),
    model: str | None = typer.Option(
        None, help="MLflow model URI (default: the champion of deploy.model_name, models:/<name>@champion)"
    ),
    shard: int = typer.Option(0, min=0),
    num_shards: int = typer.Option(1, min=1),
    sources_per_file: int = typer.Option(4096, min=1),
) -> None:
    """Top-K recommendations for every product (this shard's sources) to parquet."""
    from nextbuy.mlops import batch, io, tracking
    from nextbuy.mlops.registry import CHAMPION
    from nextbuy.mlops.serving import ServingBundle

    model = model or f"models:/{_model_name(None)}@{CHAMPION}"
    _setup_logging()
    tracking.configure()
    try:  # downloads, checks the recorded digests, then reads
        bundle = ServingBundle.from_model_uri(model)
    except io.DataError as err:
        console.print(f"[bold red]batch-topk: bad model[/]\n{escape(err.message)}", highlight=False)
        raise typer.Exit(code=2) from None
    result = batch.write_top_k(bundle, out, k, shard, num_shards, sources_per_file)
    console.print(
        f"[green]wrote {result['rows']:,} recommendations for {result['sources']:,} sources[/]"
        f" → {result['path']}"
    )


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


@airflow_app.command("restore-params")
def airflow_restore_params() -> None:
    """Put back the Airflow workspace's params.yaml (and its lock) a dead Airflow run left."""
    from nextbuy.orchestration.params_lock import restore_any
    from nextbuy.orchestration.workspace import workspace_dir

    console.print(restore_any(workspace_dir(_airflow_project())), highlight=False)


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: each prints a table and writes JSON (--out).")
app.add_typer(bench_app, name="bench")
# name -> help; each is src/nextbuy/bench/<name>.py with run(out: Path) -> dict.
BENCHES = {
    "serve": "Batch pairs/s, top-K for all 100k products (retrieval vs exact), REST p50/p99, 100 candidates.",
    "monitor": "A month of traffic: days to detect an injected drift, false alarms vs naive positivity.",
    "dag": "Airflow overhead: dag.test() of nextbuy_training vs dvc repro of its six stages (tiny store).",
    "linkpred": "Directed link prediction, DirLinkBench protocol: BLADE vs GNN baselines, +Adamic-Adar.",
    "model": "Conversion model vs the simulator's truth: BLADE, fixed fanout, dual MF, category LR, oracle.",
    "delay": "Delayed feedback: naive, wait, importance (+ablations) and oracle on post-snapshot labels.",
    "thresholds": "Per-bucket vs single thresholds vs calibrate-then-threshold, out of sample, by estimator.",
    "faults": "Fault matrix, tiny store: bad params/files/outputs, kill -9 in every stage, bad requests.",
    "scale": "Stage times and peak RSS at 10k/100k/1M products; time exponent, BLADE vs GraphSAGE epoch.",
}


def _bench_command(name: str, help_text: str) -> Callable[[Path], None]:
    def command(out: Path = typer.Option(Path(f"bench-{name}.json"), "--out", help="JSON results")) -> None:
        _setup_logging()
        figures = importlib.import_module(f"nextbuy.bench.{name}").run(out)
        console.print(f"[green]bench {name}[/] → {out}: {json.dumps(figures)}", highlight=False)

    command.__doc__ = help_text
    return command


def _linkpred_command(help_text: str) -> Callable[..., None]:
    def command(
        out: Path = typer.Option(Path("bench-linkpred.json"), "--out", help="JSON results"),
        graph: Path | None = typer.Option(
            None, help="PPNP .npz or src,dst edge list (default: ../shared/data/cora_ml/cora_ml.npz)"
        ),
        split: Path | None = typer.Option(
            None, help="DirLinkBench split folder (default: split0 next to the default graph; else random)"
        ),
        seeds: int = typer.Option(5, min=1, help="seeds averaged (mean ± std)"),
        workers: int = typer.Option(
            os.cpu_count() or 1,
            min=1,
            help="training processes side by side, one thread each (1: in process)",
        ),
        members: int = typer.Option(
            1, min=1, help="every trained method as a seed ensemble of this many fits (K x its training time)"
        ),
    ) -> None:
        _setup_logging()
        bench = importlib.import_module("nextbuy.bench.linkpred")
        figures = bench.run(out, graph=graph, split=split, seeds=seeds, workers=workers, members=members)
        console.print(f"[green]bench linkpred[/] → {out}: {json.dumps(figures)}", highlight=False)

    command.__doc__ = help_text
    return command


def _comma_list(text: str | None) -> tuple[str, ...] | None:
    """``"a, b"`` → ``("a", "b")``; None or blank → None."""
    items = tuple(item.strip() for item in (text or "").split(",") if item.strip())
    return items or None


def _delay_command(help_text: str) -> Callable[..., None]:
    def command(
        out: Path = typer.Option(Path("bench-delay.json"), "--out", help="JSON results"),
        seeds: int = typer.Option(5, min=1, help="training seeds averaged (mean ± std)"),
        sweep: bool = typer.Option(False, help="also short/long delays, no launches, a shorter history"),
        methods: str | None = typer.Option(
            None, help="comma-separated methods to compare (default: all; naive, importance, oracle always)"
        ),
        regimes: str | None = typer.Option(
            None, help="comma-separated sweep regimes (implies --sweep; default with --sweep: all)"
        ),
        default_store: bool = typer.Option(True, help="--no-default-store: the sweep regimes alone"),
        params: str = ParamsOption,
    ) -> None:
        _setup_logging()
        chosen = _comma_list(methods)
        chosen_regimes = _comma_list(regimes)
        bench = importlib.import_module("nextbuy.bench.delay")
        try:
            bench.selected(chosen)
            bench.sweep_regimes(chosen_regimes)
        except ValueError as err:
            console.print(f"[red]{escape(str(err))}[/]", highlight=False)
            raise typer.Exit(2) from None
        figures = bench.run(
            out,
            seeds=seeds,
            sweep=sweep or chosen_regimes is not None,
            methods=chosen,
            regimes=chosen_regimes,
            default_store=default_store,
            params_file=params,
        )
        console.print(f"[green]bench delay[/] → {out}: {json.dumps(figures)}", highlight=False)

    command.__doc__ = help_text
    return command


def _seeds_command(name: str, help_text: str) -> Callable[..., None]:
    def command(
        out: Path = typer.Option(Path(f"bench-{name}.json"), "--out", help="JSON results"),
        seeds: int = typer.Option(5, min=1, help="training seeds averaged (mean ± std)"),
        params: str = ParamsOption,
    ) -> None:
        _setup_logging()
        figures = importlib.import_module(f"nextbuy.bench.{name}").run(out, seeds=seeds, params_file=params)
        console.print(f"[green]bench {name}[/] → {out}: {json.dumps(figures)}", highlight=False)

    command.__doc__ = help_text
    return command


def _thresholds_command(help_text: str) -> Callable[..., None]:
    def command(
        out: Path = typer.Option(Path("bench-thresholds.json"), "--out", help="JSON results"),
        seeds: int = typer.Option(5, min=1, help="training seeds averaged (mean and CI)"),
        graph: Path | None = typer.Option(
            None, help="a directed graph (PPNP .npz or src,dst edge list): its test pairs, cross-fitted"
        ),
        split: Path | None = typer.Option(
            None, help="with --graph: a DirLinkBench split folder (else random)"
        ),
        params: str = ParamsOption,
    ) -> None:
        _setup_logging()
        bench = importlib.import_module("nextbuy.bench.thresholds")
        figures = bench.run(out, seeds=seeds, graph=graph, split=split, params_file=params)
        console.print(f"[green]bench thresholds[/] → {out}: {json.dumps(figures)}", highlight=False)

    command.__doc__ = help_text
    return command


def _faults_command(help_text: str) -> Callable[..., None]:
    def command(
        out: Path = typer.Option(Path("bench-faults.json"), "--out", help="JSON results"),
        only: str | None = typer.Option(None, help="run only the cases whose name contains this"),
    ) -> None:
        _setup_logging()
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
        _setup_logging()
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
        _setup_logging()
        bench = importlib.import_module("nextbuy.bench.serve")
        figures = bench.run(out, products=products, topk_products=topk_products, topk_bundle=topk_bundle)
        console.print(f"[green]bench serve[/] → {out}: {json.dumps(figures)}", highlight=False)

    command.__doc__ = help_text
    return command


_FACTORIES = {
    "serve": _serve_command,
    "scale": _scale_command,
    "faults": _faults_command,
    "linkpred": _linkpred_command,
    "model": partial(_seeds_command, "model"),
    "thresholds": _thresholds_command,
    "delay": _delay_command,
}
for _bench, _help in BENCHES.items():
    factory = _FACTORIES[_bench](_help) if _bench in _FACTORIES else _bench_command(_bench, _help)
    bench_app.command(name=_bench)(factory)


@app.command()
def plots(
    root: Path = typer.Option(Path("."), help="DVC project root"),
    out: Path = typer.Option(Path("dvc_plots"), help="folder for index.html (relative to --root)"),
) -> None:
    """dvc plots show with Vega inlined (make plots): dvc_plots/index.html needs no network."""
    from nextbuy.mlops.plots import show

    try:
        page = show(root, out)
    except RuntimeError as err:
        console.print(f"[bold red]plots: {escape(str(err))}[/]", highlight=False)
        raise typer.Exit(code=1) from None
    console.print(f"[green]plots[/] → {page} (opens offline)", highlight=False)


@app.command("mlflow-ui")
def mlflow_ui(
    backend_store_uri: str | None = typer.Option(
        None, help="tracking store (default: sqlite mlflow.db in the current directory)"
    ),
    port: int = typer.Option(5000, help="UI port on 127.0.0.1"),
) -> None:
    """MLflow UI on the nextbuy experiment's classic ML view (make mlflow-ui): Ctrl-C stops it all."""
    from nextbuy.mlops.mlflow_ui import default_store, launch

    raise typer.Exit(code=launch(backend_store_uri or default_store(), port))


@app.command("verify-model")
def verify_model(
    model: str | None = typer.Argument(
        None, help="registry model URI (default: the champion of deploy.model_name, models:/<name>@champion)"
    ),
) -> None:
    """Check a registered model's files against the SHA-256 deploy recorded on its version,
    loading nothing from them; exit 1 if any file differs, 2 if none was recorded."""
    import mlflow

    from nextbuy.mlops import io, tracking
    from nextbuy.mlops.registry import CHAMPION
    from nextbuy.mlops.serving import ARTIFACT_SHA256, verify_model_uri

    model = model or f"models:/{_model_name(None)}@{CHAMPION}"
    os.environ.setdefault(tracking.PROGRESS_BAR_ENV, "false")
    mlflow.set_tracking_uri(tracking.tracking_uri())
    try:
        version, digest = verify_model_uri(model)
    except io.DataError as err:
        console.print(f"[bold red]{escape(err.message)}[/]", highlight=False)
        raise typer.Exit(code=1) from None
    if digest is None:
        console.print(
            f"[bold yellow]{model} (v{version}): no {ARTIFACT_SHA256} recorded (registered before deploy "
            "recorded file digests): not verified[/]",
            highlight=False,
        )
        raise typer.Exit(code=2)
    console.print(
        f"[green]{model} (v{version}): every file matches {ARTIFACT_SHA256} {digest}[/]", highlight=False
    )


@app.command()
def serve(
    model: str | None = typer.Option(
        None, help="MLflow model URI (default: the champion of deploy.model_name, models:/<name>@champion)"
    ),
    port: int = typer.Option(5001, help="port on 127.0.0.1"),
    workers: int = typer.Option(1, min=1, help="uvicorn worker processes"),
    fast_path: bool = typer.Option(
        True, help="answer plain pair-scoring requests without MLflow's per-request overhead (same JSON)"
    ),
) -> None:
    """REST scoring on 127.0.0.1 (make serve): MLflow's scoring server, behind a body-size limit.

    The model's files are checked against the SHA-256 deploy recorded first (exit 1 if one
    differs). POST /invocations as with `mlflow models serve`, but a body over
    NEXTBUY_MAX_BODY_BYTES (default 10 MB) gets 413 before MLflow reads it, and plain
    dataframe_split pair requests are answered by a fast path with the same JSON."""
    import sys

    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
    from mlflow.pyfunc import scoring_server
    from mlflow.utils.file_utils import path_to_local_file_uri

    from nextbuy.mlops import rest_app
    from nextbuy.mlops.registry import CHAMPION
    from nextbuy.procs import HOST

    try:
        limit = rest_app.max_body_bytes()
    except ValueError as err:
        console.print(f"[bold red]serve: {escape(str(err))}[/]", highlight=False)
        raise typer.Exit(code=2) from None
    model = model or f"models:/{_model_name(None)}@{CHAMPION}"
    path, which = _checked_local_copy(model)
    url = f"http://{HOST}:{port}"
    console.print(
        f"[green]serving {which}[/] at {url}  (POST /invocations; Ctrl-C stops it)",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"bodies over {limit:,} bytes: 413 before MLflow reads them ({rest_app.MAX_BODY_BYTES_ENV})",
        highlight=False,
        soft_wrap=True,
    )
    env = dict(os.environ)
    env[scoring_server._SERVER_MODEL_PATH] = path_to_local_file_uri(str(path))
    env[rest_app.FAST_PATH_ENV] = "1" if fast_path else "0"
    env[MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.name] = str(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get())
    cmd = [sys.executable, "-m", "uvicorn", "--host", HOST, "--port", str(port)]
    cmd += ["--workers", str(workers), "nextbuy.mlops.rest_app:app"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], cmd, env)  # uvicorn takes this process's place (pid, group, signals)


def _checked_local_copy(model: str) -> tuple[Path, str]:
    """``model`` downloaded once (an alias resolved once) and checked against the digests deploy
    recorded: what is checked is what is served. Like `mlflow models serve`, the copy stays in
    the temp dir. Exit 1 if a file differs."""
    import shutil
    import tempfile

    import mlflow

    from nextbuy.mlops import io, tracking
    from nextbuy.mlops.serving import _download_checked

    os.environ.setdefault(tracking.PROGRESS_BAR_ENV, "false")
    mlflow.set_tracking_uri(tracking.tracking_uri())
    local = tempfile.mkdtemp(prefix="nextbuy-serve-")
    try:
        path, version, digest = _download_checked(model, local)
    except io.DataError as err:
        shutil.rmtree(local, ignore_errors=True)
        console.print(f"[bold red]{escape(err.message)}[/]", highlight=False)
        raise typer.Exit(code=1) from None
    which = f"{model} (v{version})" if version is not None else model
    if digest is None:
        console.print(f"[bold yellow]{which}: files not verified (no recorded digests)[/]", highlight=False)
    return Path(path), which


if __name__ == "__main__":  # pragma: no cover
    app()
