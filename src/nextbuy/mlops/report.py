"""The end-of-run summary `make run` prints: one headline line per stage, the
registered model, and the commands that open the UIs."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from nextbuy import paths, yaml_io


def _monitor_headline(m: dict) -> str:
    """The windows and alerts; a run without a champion to monitor says so, with no numbers."""
    if m.get("monitored") is False:
        return f"nothing monitored — no champion released for {m['model_name']}"
    return (
        f"{m['windows']} windows: {m['alerts']} alert(s)"
        + (f" in bucket(s) {m['alert_buckets']} from {m['first_alert']}" if m["alerts"] else "")
        + f" (naive positivity would raise {m['naive_alerts']})"
    )


HEADLINES = {
    "ingest": lambda m: (
        f"{m['products']:,} products, {m['edges']:,} edges "
        f"({m['reciprocated_edge_share']:.0%} reciprocated), impressions "
        + ", ".join(f"{k} {v:,}" for k, v in m["impressions"].items())
    ),
    "label_delay": lambda m: (
        f"last 7 days positivity observed {_pct(m['last_7_days']['observed_positivity'])} → "
        f"delay-corrected {_pct(m['last_7_days']['corrected_positivity'])}; "
        f"train ESS {_pct(m['weights']['importance']['ess_share'])} of rows"
    ),
    "train": lambda m: (
        f"conv loss {m['final_conv_loss']:.4f}, link loss {m['final_link_loss']:.4f}, "
        f"calib AUC (observed labels) {_num(m['calib_auc_observed'])}, {m['train_seconds']:.0f} s"
    ),
    "calibrate": lambda m: (
        f"{m['n_buckets']} uncertainty buckets; test ECE raw {_num(m['test_delay_corrected']['ece_raw'])} → "
        f"calibrated {_num(m['test_delay_corrected']['ece_calibrated'])}, "
        f"test AUC {_num(m['test_delay_corrected']['auc'])}"
    ),
    "thresholds": lambda m: (
        f"precision target {m['target_precision']:.2f}: recall per-bucket "
        f"{_pct(m['per_bucket']['calib']['recall'])} vs single {_pct(m['single']['calib']['recall'])} "
        f"(calib); test {_pct(m['per_bucket']['test_delay_corrected']['recall'])} vs "
        f"{_pct(m['single']['test_delay_corrected']['recall'])}"
        + (
            ""
            if (m.get("cross_fit") or {}).get("kept_per_bucket", True)
            else "; out of fold no better: single served"
        )
    ),
    "deploy": lambda m: (
        f"{m['model_name']} v{m['version']} "
        f"{'PASSED' if m['passed'] else 'REFUSED: ' + '; '.join(m['reasons'])}; "
        f"test recall {_pct(m['candidate']['recall'])}, test AUC {_num(m['candidate']['auc'])}, "
        f"test ECE calibrated {_num(m['candidate']['ece'])}; "
        + (f"champion = v{m['champion_version']}" if m.get("champion_version") else "no champion released")
        + (
            "; the champion before it was not compared (floors only): "
            + (m.get("not_comparable_reason") or "of another or an unrecorded catalogue")
            if m.get("champion_comparable") is False
            else ""
        )
        + "".join(f"; NOTE {note}" for note in m.get("notes") or [])
    ),
    "traffic": lambda m: (
        f"{m['impressions']:,} impressions over {m['days']:.0f} days after the snapshot"
        + (f", drift {m['drift']['kind']}" if m.get("drift") and m["drift"]["kind"] != "none" else "")
    ),
    "monitor": _monitor_headline,
}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def ui_lines(model_name: str = "nextbuy", project: str = "nextbuy on-call") -> tuple[str, ...]:
    """Where to look next, after the table: one line each, also when piped; the model and the
    Evidently project are the ones params.yaml names."""
    return (
        "Open the UIs (each binds 127.0.0.1):",
        "  Airflow UI:  make airflow      → http://127.0.0.1:8080  (prints the admin login)",
        "  MLflow UI:   make mlflow-ui    → http://127.0.0.1:5000  "
        f"(prints the links to experiment and model '{model_name}')",
        "  DVC plots:   make plots        → dvc_plots/index.html",
        f"  Evidently:   make dashboards   → http://127.0.0.1:8000  (project '{project}')",
        "Serve the champion (REST, 127.0.0.1:5001): make serve   |  undo a release: "
        f".venv/bin/nextbuy rollback --model-name {model_name}",
    )


UI_LINES = ui_lines()


def _names(root: Path) -> tuple[str, str]:
    """deploy.model_name and monitor.project of ``root``'s params.yaml (defaults without one)."""
    import yaml

    try:
        params = yaml_io.load((root / "params.yaml").read_text()) or {}
        return str(params["deploy"]["model_name"]), str(params["monitor"]["project"])
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return "nextbuy", "nextbuy on-call"


def _content_width(console: Console, table: Table, lines: tuple[str, ...]) -> int:
    """Columns the table and the lines need unwrapped."""
    table_width = Measurement.get(console, console.options.update_width(100_000), table).maximum
    return max(table_width, *(Text.from_markup(line).cell_len for line in lines))


def champion_now(root: Path, deploy: dict) -> object:
    """The registry's champion of the model the last deploy registered under (a rollback, a
    promotion or a later deploy may have moved it); the deploy's own record when no registry
    is at hand (no ``mlflow.db`` under ``root`` and no ``MLFLOW_TRACKING_URI``)."""
    import os

    if not ((root / "mlflow.db").exists() or os.environ.get("MLFLOW_TRACKING_URI")):
        return deploy.get("champion_version")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    # MLflow: imported where the summary reads the registry
    from nextbuy.release import registry

    try:
        version = registry.released_version(MlflowClient(), deploy["model_name"], registry.CHAMPION)
    except MlflowException:
        return deploy.get("champion_version")
    return int(version) if version else None


def print_summary(root: Path = Path("."), console: Console | None = None) -> None:
    table = Table(title="nextbuy pipeline", show_lines=False)
    table.add_column("stage", style="bold")
    table.add_column("headline")
    for stage, headline in HEADLINES.items():
        path = root / paths.metrics_file(stage)
        if not path.exists():
            table.add_row(stage, "[yellow]not run[/]")
            continue
        try:
            metrics = json.loads(path.read_text())
            if stage == "deploy":  # who serves is the registry's word, not the last deploy's
                metrics = {**metrics, "champion_version": champion_now(root, metrics)}
            table.add_row(stage, headline(metrics))
        except (KeyError, TypeError, ValueError) as err:
            table.add_row(stage, f"[yellow]metrics unreadable ({err})[/]")
    lines = ui_lines(*_names(root))
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped (make run in a log, CI): rich would wrap at 80 columns
            console = Console(width=_content_width(console, table, lines))
    console.print(table)
    console.print()
    for line in lines:
        console.print(line)
