"""The command line: its command list, the alerts exit codes Airflow branches on, and stage
commands refusing an invalid params file before they touch any file.

(One command per dvc.yaml stage with dvc.yaml's help: tests/test_stage_list.py; alerts exiting
0 / 3 on a monitor-written file: tests/stages/test_monitor.py; bad ingest inputs:
tests/stages/test_ingest.py.)

Then the registry commands' guard rails: promote of a refused version needs --force --reason;
deploy refuses to re-seed a lost registry unless --first-release.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nextbuy.cli import ALERT_EXIT_CODE, app
from nextbuy.config import read_params
from tests.conftest import ROOT

STAGE_COMMANDS = [
    spec["cmd"].removeprefix("nextbuy ")
    for spec in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()
]
OTHER_COMMANDS = [
    "preset",
    "restore-outputs",
    "repro-stage",
    "check-dvc-lock",
    "summary",
    "simulate-logs",
    "store-data",
    "alerts",
    "rollback",
    "promote",
    "batch-topk",
    "plots",
    "port-free",
    "mlflow-ui",
    "verify-model",
    "serve",
    "docs-reference",
    "airflow",
    "models",
    "bench",
]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def listed_commands(help_text: str) -> list[str]:
    """Command names in a --help page (rich panel rows or plain click rows), in order."""
    section = help_text.split("Commands", 1)[1]
    return re.findall(r"^(?:│ |  )([a-z][\w-]*)\s{2,}", section, flags=re.MULTILINE)


def test_help_lists_every_stage_then_the_other_commands():
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    assert listed_commands(result.output) == STAGE_COMMANDS + OTHER_COMMANDS


@pytest.mark.parametrize(
    ("group", "commands"),
    [
        # the product's benchmarks, the research ones (benchmarks/: entry points, by name), then
        # the results' own commands
        (
            "bench",
            [
                "serve",
                "monitor",
                "dag",
                "faults",
                "scale",
                "events",
                "engines",
                "preset",
                "delay",
                "linkpred",
                "model",
                "real-delay",
                "real-monitor",
                "real-ranking",
                "real-thresholds",
                "thresholds",
                "report",
                "record",
                "record-all",
            ],
        ),
        ("airflow", ["standalone", "backfill", "restore-params"]),
        ("models", ["list", "show", "find", "diff", "mature"]),
    ],
)
def test_command_groups_list_their_subcommands(group, commands):
    result = invoke(group, "--help")
    assert result.exit_code == 0, result.output
    assert listed_commands(result.output) == commands


@pytest.mark.parametrize("bench", ["model", "delay"])
def test_seeded_store_benches_run_on_the_params_file_given(bench, tmp_path, monkeypatch):
    import importlib

    calls = []
    module = importlib.import_module(f"nextbuy_lab.{bench}")
    monkeypatch.setattr(module, "run", lambda out, **kw: calls.append((out, kw)) or {"ok": 1})
    other = tmp_path / "bigger-store.yaml"
    result = invoke("bench", bench, "--out", str(tmp_path / "b.json"), "--seeds", "2", "--params", str(other))
    assert result.exit_code == 0, result.output
    [(out, kw)] = calls
    assert out == tmp_path / "b.json"
    assert kw["seeds"] == 2
    assert kw["params_file"] == str(other)


def test_preset_prints_dvc_exp_run_flags_or_refuses_a_bad_preset(tmp_path):
    root = Path(__file__).resolve().parents[1]
    result = invoke("preset", str(root / "presets" / "tiny.yaml"), "--params", str(root / "params.yaml"))
    assert result.exit_code == 0, result.output
    assert "-S ingest.simulator.n_products=300" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: 0}\n")
    result = invoke("preset", str(bad), "--params", str(root / "params.yaml"))
    assert result.exit_code == 2
    assert "epochs" in result.output


def test_no_arguments_shows_the_help_instead_of_running_anything():
    result = invoke()
    assert result.exit_code != 0
    assert "Usage" in result.output
    assert "label-delay" in result.output


# --- alerts --------------------------------------------------------------------


def write_alerts(path, alerts: list[dict]):
    path.write_text(json.dumps({"now": "2026-03-01", "alerts": alerts}))
    return str(path)


def test_alerts_prints_every_alert_and_exits_with_the_alert_code(tmp_path):
    path = write_alerts(
        tmp_path / "alerts.json",
        [
            {"window_start": "2026-02-20", "message": "bucket 1: positivity below"},
            {"window_start": "2026-02-21", "message": "bucket 2: positivity above"},
        ],
    )
    result = invoke("alerts", "--path", path)
    assert result.exit_code == ALERT_EXIT_CODE == 3
    assert "2026-02-20 bucket 1: positivity below" in result.output
    assert "2026-02-21 bucket 2: positivity above" in result.output


def test_no_alerts_exits_zero_and_says_so(tmp_path):
    result = invoke("alerts", "--path", write_alerts(tmp_path / "alerts.json", []))
    assert result.exit_code == 0
    assert "no alerts" in result.output


def test_a_monitor_run_that_watched_nothing_exits_zero_saying_why(tmp_path):
    path = tmp_path / "alerts.json"
    reason = "no champion released for nextbuy-large-1m: metrics/deploy.json says why"
    path.write_text(json.dumps({"now": "2026-03-01", "alerts": [], "monitored": False, "reason": reason}))
    result = invoke("alerts", "--path", str(path))
    assert result.exit_code == 0, result.output
    assert "nothing monitored" in result.output
    assert "nextbuy-large-1m" in result.output
    assert "no alerts" in result.output


def test_a_champion_whose_matured_metrics_broke_a_floor_is_an_alert_another_version_a_warning(tmp_path):
    path = tmp_path / "alerts.json"
    flagged = [{"version": "3", "alias": "challenger", "below_floor": ["7d: auc 0.480 < 0.500"]}]
    path.write_text(json.dumps({"now": "2026-03-01", "alerts": [], "matured": flagged}))
    warned = invoke("alerts", "--path", str(path))
    assert warned.exit_code == 0, warned.output
    assert "v3 (challenger) matured below the gate's floors: 7d: auc 0.480 < 0.500" in warned.output
    champion = [{**flagged[0], "version": "2", "alias": "champion"}]
    path.write_text(json.dumps({"now": "2026-03-01", "alerts": [], "matured": champion}))
    alert = invoke("alerts", "--path", str(path))
    assert alert.exit_code == ALERT_EXIT_CODE, alert.output
    assert "ALERT v2 (champion) matured below" in alert.output


@pytest.mark.parametrize(
    "content",
    [None, "{not json", "", '{"now": "2026-01-01"}', "[1, 2]"],
    ids=["missing", "broken-json", "empty", "no-alerts-key", "not-an-object"],
)
def test_unreadable_alerts_file_exits_2_naming_it(tmp_path, content):
    path = tmp_path / "alerts.json"
    if content is not None:
        path.write_text(content)
    result = invoke("alerts", "--path", str(path))
    assert result.exit_code == 2, result.output
    assert "alerts.json" in result.output
    assert result.exit_code != ALERT_EXIT_CODE  # Airflow must not mistake a broken file for an alert


# --- stage commands and params ----------------------------------------------------


def params_with(tmp_path, section: str, **changes) -> str:
    params = read_params(ROOT / "params.yaml")
    params[section] = {**params[section], **changes}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return "params.yaml"


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"max_weight": -1}, "max_weight"),
        ({"max_wieght": 5.0}, "max_wieght"),
        ({"delay_family": "gamma"}, "delay_family"),
    ],
    ids=["out-of-bounds", "unknown-key", "bad-choice"],
)
def test_stage_with_an_invalid_section_exits_2_naming_the_key_before_touching_files(
    tmp_path, monkeypatch, changes, named
):
    monkeypatch.chdir(tmp_path)  # nothing may be written to the repo, nor here
    params = params_with(tmp_path, "label_delay", **changes)
    result = invoke("label-delay", "--params", params)
    assert result.exit_code == 2, result.output
    assert "label_delay" in result.output
    assert named in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_a_valid_section_gets_past_validation_to_the_missing_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("label-delay", "--params", params_with(tmp_path, "label_delay"))
    assert result.exit_code == 2, result.output
    assert "bad input" in result.output
    assert "impressions" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_a_missing_params_file_exits_2_naming_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("label-delay", "--params", "nope.yaml")
    assert result.exit_code == 2, result.output
    assert "nope.yaml" in result.output


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (
            lambda text: text.replace("  epochs:", "  epochs: 3\n  epochs:", 1),
            "the key 'epochs' is given twice",
        ),
        (lambda text: text.replace("\n  epochs:", "\n\tepochs:", 1), "a tab: YAML indents with spaces only"),
    ],
    ids=["duplicate-key", "tab"],
)
def test_a_params_file_that_does_not_parse_exits_2_naming_line_and_column(tmp_path, monkeypatch, edit, said):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(edit((ROOT / "params.yaml").read_text()))
    result = invoke("train", "--params", "params.yaml")
    assert result.exit_code == 2, result.output
    assert re.search(rf"train: params\.yaml:\d+:\d+: {re.escape(said)}", " ".join(result.output.split())), (
        result.output
    )
    assert "Traceback" not in result.output
    assert not (tmp_path / "models").exists()  # nothing trained


def test_a_taken_port_is_named_with_how_to_pick_another_before_any_server_starts():
    import socket

    from nextbuy.procs import HOST, free_port

    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke("port-free", str(port), "--setting", "make dashboards DASHBOARDS_PORT=<port>")
        assert result.exit_code == 2, result.output
        assert f"port {port} on 127.0.0.1 is in use" in result.output
        assert "make dashboards DASHBOARDS_PORT=<port>" in " ".join(result.output.split())
        served = invoke("serve", "--port", str(port), "--model", "models:/m/1")
        assert served.exit_code == 2, served.output
        assert "--port" in served.output
    assert invoke("port-free", str(free_port())).exit_code == 0


# --- registry guard rails -------------------------------------------------------------


def test_promote_of_a_refused_version_needs_force_and_a_reason(store):
    from nextbuy.release import registry

    store.create_registered_model("m")
    for passed in ("true", "false"):
        v = store.create_model_version("m", "file:///m", tags={"passed": passed, "complete": "false"})
        registry.release(store, "m", str(v.version), passed == "true")
    refused = invoke("promote", "2", "--model-name", "m")
    assert refused.exit_code == 1, refused.output
    assert "did not pass the gate" in refused.output, refused.output
    no_reason = invoke("promote", "2", "--model-name", "m", "--force")
    assert no_reason.exit_code == 2, no_reason.output
    assert "--reason" in no_reason.output, no_reason.output
    assert registry.alias_version(store, "m", registry.CHAMPION) == "1"
    forced = invoke("promote", "2", "--model-name", "m", "--force", "--reason", "INC-7")
    assert forced.exit_code == 0, forced.output
    assert "FORCED" in forced.output, forced.output
    assert registry.alias_version(store, "m", registry.CHAMPION) == "2"
    assert store.get_model_version("m", "2").tags[registry.FORCED_REASON] == "INC-7"


def test_deploy_refuses_to_reseed_a_lost_registry_unless_first_release(store, tmp_path):
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"stages": {"deploy": {"cmd": "nextbuy deploy"}}}))
    params = params_with(tmp_path, "deploy")
    refused = invoke("deploy", "--params", params)
    assert refused.exit_code == 2, refused.output
    assert "dvc.lock records" in refused.output
    assert "--first-release" in refused.output
    seeded = invoke("deploy", "--params", params, "--first-release")
    # Past the registry check, on to the (missing) inputs.
    assert seeded.exit_code == 2, seeded.output
    assert "bad input" in seeded.output, seeded.output
    assert "weighted" in seeded.output, seeded.output


def test_models_list_show_find_and_diff_read_the_registry(store):
    from nextbuy.mlops import tracking
    from nextbuy.model_card import Card, mlflow_cards
    from nextbuy.model_card.record import Snapshot
    from nextbuy.release import registry

    experiment = tracking.configure()
    store.create_registered_model("m")
    for version, snapshot in (("1", "2026-02-10 00:00:00"), ("2", "2026-02-17 00:00:00")):
        run_id = store.create_run(experiment).info.run_id  # the deploy run holding the card
        tags = {"passed": "true", "complete": "true"}
        store.create_model_version("m", "file:///m", run_id=run_id, tags=tags)
        card = Card(model_name="m", version=version, run_id=run_id, snapshot=Snapshot(snapshot=snapshot))
        mlflow_cards.write(store, card)
    registry.release(store, "m", "2", True)
    listed = invoke("models", "list", "--model-name", "m")
    assert listed.exit_code == 0, listed.output
    assert re.search(r"^2 +champion +2026-02-17 ", listed.output, re.M), listed.output
    assert max(len(line) for line in listed.output.splitlines()) <= 80, listed.output
    shown = invoke("models", "show", "2", "--model-name", "m")
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("---\nlibrary_name: nextbuy"), shown.output
    assert "# m v2" in shown.output
    found = invoke("models", "find", "--snapshot", "2026-02-10", "--model-name", "m")
    assert found.exit_code == 0, found.output
    assert re.search(r"^1 ", found.output, re.M), found.output
    assert not re.search(r"^2 ", found.output, re.M), found.output
    diff = invoke("models", "diff", "1", "2", "--model-name", "m")
    assert diff.exit_code == 0, diff.output
    assert "2026-02-10 00:00:00" in diff.output
    assert "2026-02-17 00:00:00" in diff.output
    assert invoke("models", "find", "--model-name", "m").exit_code == 2  # no condition
    bad = invoke("models", "find", "--metric", "auc is high", "--model-name", "m")
    assert bad.exit_code == 2, bad.output
    assert "METRIC OP VALUE" in bad.output
    assert invoke("models", "show", "9", "--model-name", "m").exit_code == 1  # no such version
    store.create_model_version("m", "file:///m", tags={"passed": "true", "complete": "true"})
    cardless = invoke("models", "show", "3", "--model-name", "m")  # a version deploy wrote no card for
    assert cardless.exit_code == 1, cardless.output
    assert cardless.output.strip().startswith("m v3 has no model card"), cardless.output
    assert "`nextbuy deploy`" in cardless.output, cardless.output


def test_after_a_stop_sqlalchemys_tracebacks_about_the_query_it_cut_are_not_logged():
    """A stop in the middle of a query: SQLAlchemy logs the cursor it could not close, with a
    traceback; the stopped command has said what happened in one line."""
    import logging
    import os
    import signal
    import sqlite3
    import sys
    import time

    from nextbuy import procs
    from nextbuy.cli.common import _not_stop_fallout

    try:
        raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
    except sqlite3.Error:
        exc_info = sys.exc_info()

    def record(logger: str) -> logging.LogRecord:
        return logging.LogRecord(logger, logging.ERROR, "", 0, "Error closing cursor", None, exc_info)

    pool, stage = record("sqlalchemy.pool.impl.QueuePool"), record("nextbuy.stages.deploy")
    seen: list[bool] = []

    def stopped_in_a_query() -> None:
        with procs.stop_signals_raise():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            finally:
                seen.extend([_not_stop_fallout(pool), _not_stop_fallout(stage)])

    assert _not_stop_fallout(pool)  # no stop: logged
    with pytest.raises(procs.Stopped):
        stopped_in_a_query()
    assert seen == [False, True]  # SQLAlchemy's fallout goes, the command's own errors stay
    assert _not_stop_fallout(pool)  # the block is over


def test_the_installed_command_runs_the_app_with_the_collector_set_for_one_batch_job(monkeypatch):
    import gc
    from importlib.metadata import entry_points

    from nextbuy import cli

    (script,) = entry_points(group="console_scripts", name="nextbuy")
    assert script.value == "nextbuy.cli:main"
    seen: list[tuple[int, ...]] = []
    monkeypatch.setattr(cli, "app", lambda: seen.append(gc.get_threshold()))
    before = gc.get_threshold()
    try:
        cli.main()
    finally:
        gc.set_threshold(*before)
    assert seen == [cli.GC_THRESHOLDS]
    assert cli.GC_THRESHOLDS[0] > before[0]  # fewer collections than the default's


def test_a_bench_run_outside_the_project_folder_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("bench", "serve", "--products", "100", "--out", str(tmp_path / "b.json"))
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "params.yaml: no params file" in said
    assert "run it in the project folder" in said
    assert "Traceback" not in result.output
