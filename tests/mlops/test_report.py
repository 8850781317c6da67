"""The end-of-run summary (`nextbuy summary`, printed by `make run`): one headline
per stage from its metrics file; stages not run or with broken metrics say so
and never hide the others."""

from __future__ import annotations

import io as stdio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from nextbuy import paths
from nextbuy.mlops.report import HEADLINES, UI_LINES, print_summary
from tests.conftest import ROOT

METRICS = {
    "ingest": {
        "products": 1200,
        "edges": 34567,
        "reciprocated_edge_share": 0.25,
        "impressions": {"train": 10000, "calib": 2000, "test": 1000},
    },
    "label_delay": {
        "last_7_days": {"observed_positivity": 0.031, "corrected_positivity": 0.052},
        "weights": {"importance": {"ess_share": 0.83}},
    },
    "train": {
        "final_conv_loss": 0.41234,
        "final_link_loss": 0.69311,
        "calib_auc_observed": 0.7123,
        "train_seconds": 42.4,
    },
    "calibrate": {
        "n_buckets": 3,
        "test_delay_corrected": {"ece_raw": 0.0812, "ece_calibrated": 0.0123, "auc": 0.7011},
    },
    "thresholds": {
        "target_precision": 0.3,
        "per_bucket": {"calib": {"recall": 0.42}, "test_delay_corrected": {"recall": 0.4}},
        "single": {"calib": {"recall": 0.35}, "test_delay_corrected": {"recall": 0.33}},
    },
    "deploy": {
        "model_name": "nextbuy",
        "version": 3,
        "passed": True,
        "reasons": [],
        "candidate": {"recall": 0.41, "auc": 0.705, "ece": 0.012},
        "champion_version": 3,
    },
    "traffic": {"impressions": 84000, "days": 28, "drift": {"kind": "bucket_shift", "bucket": 2}},
    "monitor": {
        "windows": 28,
        "alerts": 2,
        "alert_buckets": [2],
        "first_alert": "2026-03-12",
        "naive_alerts": 17,
    },
}


def write_metrics(root: Path, **metrics: dict) -> None:
    for stage, m in metrics.items():
        path = root / paths.metrics_file(stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(m))


def summary(root: Path) -> dict[str, str]:
    """The printed summary: the table's headline per stage, and the whole text under ``""``."""
    out = stdio.StringIO()
    print_summary(root, Console(file=out, width=400, color_system=None))
    text = out.getvalue()
    lines = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 2 and cells[0] in HEADLINES:
            lines[cells[0]] = cells[1]
    lines[""] = text
    return lines


def test_every_stage_gets_its_headline_from_its_metrics(tmp_path):
    write_metrics(tmp_path, **METRICS)
    s = summary(tmp_path)
    assert list(k for k in s if k) == list(HEADLINES)  # pipeline order
    assert s["ingest"] == (
        "1,200 products, 34,567 edges (25% reciprocated), impressions train 10,000, calib 2,000, test 1,000"
    )
    assert "observed 3.1% → delay-corrected 5.2%" in s["label_delay"]
    assert "ESS 83.0%" in s["label_delay"]
    assert "conv loss 0.4123" in s["train"]
    assert "calib AUC (observed labels) 0.712" in s["train"]
    assert "42 s" in s["train"]
    assert "ECE raw 0.081 → calibrated 0.012" in s["calibrate"]
    assert "recall per-bucket 42.0% vs single 35.0%" in s["thresholds"]
    assert s["deploy"].startswith("nextbuy v3 PASSED")
    assert s["deploy"].endswith("champion = v3")
    assert s["traffic"] == "84,000 impressions over 28 days after the snapshot, drift bucket_shift"
    assert s["monitor"] == (
        "28 windows: 2 alert(s) in bucket(s) [2] from 2026-03-12 (naive positivity would raise 17)"
    )


def test_stages_not_run_say_so(tmp_path):
    write_metrics(tmp_path, ingest=METRICS["ingest"])
    s = summary(tmp_path)
    assert "products" in s["ingest"]
    assert all(s[stage] == "not run" for stage in HEADLINES if stage != "ingest")


def test_an_unreadable_metrics_file_is_flagged_and_the_others_still_print(tmp_path):
    write_metrics(tmp_path, **METRICS)
    (tmp_path / paths.metrics_file("train")).write_text("{not json")
    broken = {k: v for k, v in METRICS["deploy"].items() if k != "candidate"}  # an older metrics layout
    write_metrics(tmp_path, deploy=broken)
    s = summary(tmp_path)
    assert s["train"].startswith("metrics unreadable")
    assert s["deploy"].startswith("metrics unreadable")
    assert "candidate" in s["deploy"]
    assert "products" in s["ingest"]
    assert "windows" in s["monitor"]


def test_refused_release_shows_the_reasons(tmp_path):
    refused = {
        **METRICS["deploy"],
        "version": 4,
        "passed": False,
        "reasons": ["recall 0.01 < 0.05", "auc below champion"],
    }
    write_metrics(tmp_path, deploy=refused)
    headline = summary(tmp_path)["deploy"]
    assert headline.startswith("nextbuy v4 REFUSED: recall 0.01 < 0.05; auc below champion")


def test_a_champion_not_compared_is_said_so_with_the_reason(tmp_path):
    write_metrics(tmp_path, deploy={**METRICS["deploy"], "champion_comparable": False})
    headline = summary(tmp_path)["deploy"]
    assert headline.endswith(
        "champion = v3; the champion before it was not compared (floors only): "
        "of another or an unrecorded catalogue"
    )
    why = (
        "champion v2 is not comparable with the candidate: 17 of the 900 test rows were in its training data"
    )
    write_metrics(
        tmp_path, deploy={**METRICS["deploy"], "champion_comparable": False, "not_comparable_reason": why}
    )
    assert summary(tmp_path)["deploy"].endswith(f"not compared (floors only): {why}")
    notes = ["auc: the 95% CI's half-width 0.050 is wider than the tolerance 0.020"]
    write_metrics(tmp_path, deploy={**METRICS["deploy"], "notes": notes})
    assert summary(tmp_path)["deploy"].endswith(f"champion = v3; NOTE {notes[0]}")
    write_metrics(tmp_path, deploy={**METRICS["deploy"], "champion_comparable": True})
    assert summary(tmp_path)["deploy"].endswith("champion = v3")


def test_missing_values_read_na_and_quiet_runs_stay_short(tmp_path):
    write_metrics(
        tmp_path,
        train={**METRICS["train"], "calib_auc_observed": None},
        label_delay={
            **METRICS["label_delay"],
            "last_7_days": {"observed_positivity": None, "corrected_positivity": None},
        },
        traffic={**METRICS["traffic"], "drift": {"kind": "none"}},
        monitor={**METRICS["monitor"], "alerts": 0, "alert_buckets": [], "first_alert": None},
    )
    s = summary(tmp_path)
    assert "calib AUC (observed labels) n/a" in s["train"]
    assert "observed n/a → delay-corrected n/a" in s["label_delay"]
    assert "drift" not in s["traffic"]
    assert s["monitor"] == "28 windows: 0 alert(s) (naive positivity would raise 17)"


def test_a_monitor_run_without_a_champion_says_nothing_was_monitored_and_shows_no_numbers(tmp_path):
    nothing = {
        "monitored": False,
        "reason": "no champion released for nextbuy-large-1m (...): metrics/deploy.json says why",
        "model_name": "nextbuy-large-1m",
        "windows": 0,
        "alerts": 0,
        "naive_alerts": 0,
        "alert_buckets": [],
        "first_alert": None,
    }
    write_metrics(tmp_path, monitor=nothing)
    assert summary(tmp_path)["monitor"] == "nothing monitored — no champion released for nextbuy-large-1m"
    write_metrics(tmp_path, monitor={**METRICS["monitor"], "monitored": True, "model_name": "nextbuy"})
    assert summary(tmp_path)["monitor"].startswith("28 windows: 2 alert(s)")


@pytest.mark.parametrize("needle", ["make airflow", "make mlflow-ui", "make dashboards", "nextbuy rollback"])
def test_summary_tells_where_to_look_next(tmp_path, needle):
    assert needle in summary(tmp_path)[""]


def test_piped_summary_keeps_each_line_whole(tmp_path):
    """`make run` output in a log or a pipe: no terminal, yet no line is cut at 80 columns."""
    write_metrics(tmp_path, **METRICS)
    terminal_hints = ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE")
    env = {k: v for k, v in os.environ.items() if k not in terminal_hints}
    piped = subprocess.run(
        [sys.executable, "-m", "nextbuy.cli", "summary", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert piped.returncode == 0, piped.stderr
    lines = [line.rstrip() for line in piped.stdout.splitlines()]
    ui_lines = [line for line in UI_LINES if "make " in line]
    assert [line for line in ui_lines if line not in lines] == []
    assert any(len(line) > 80 for line in ui_lines)  # the case that used to wrap
    ingest = HEADLINES["ingest"](METRICS["ingest"])
    assert any(ingest in line for line in lines)  # table rows are as wide as their text too


def test_thresholds_headline_says_when_the_out_of_fold_check_served_the_single_threshold(tmp_path):
    write_metrics(tmp_path, **METRICS)
    assert "single served" not in summary(tmp_path)["thresholds"]
    thresholds = {**METRICS["thresholds"], "cross_fit": {"folds": 5, "kept_per_bucket": False}}
    write_metrics(tmp_path, **{**METRICS, "thresholds": thresholds})
    assert summary(tmp_path)["thresholds"].endswith("out of fold no better: single served")


def test_the_closing_hints_name_the_model_and_project_params_yaml_names(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["deploy"]["model_name"] = "nextbuy-large-1m"
    params["monitor"]["project"] = "large on-call"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    hints = summary(tmp_path)[""]
    assert "model 'nextbuy-large-1m'" in hints
    assert "project 'large on-call'" in hints
    assert "rollback --model-name nextbuy-large-1m" in hints
    assert "model 'nextbuy'" not in hints


def test_a_run_that_released_nothing_says_so_instead_of_a_version(tmp_path):
    write_metrics(tmp_path, deploy={**METRICS["deploy"], "passed": False, "champion_version": None})
    headline = summary(tmp_path)["deploy"]
    assert headline.endswith("no champion released")
    assert "vNone" not in headline


def test_the_champion_the_summary_names_is_the_registrys(tmp_path, monkeypatch):
    """After a rollback (or with a run whose deploy was restored from an old record), the
    summary names who serves now, not what the last deploy wrote."""
    from mlflow.tracking import MlflowClient

    from nextbuy.bench.serving_fixtures import mlflow_store
    from nextbuy.release import registry

    write_metrics(tmp_path, deploy={**METRICS["deploy"], "champion_version": 3})
    with mlflow_store(f"sqlite:///{tmp_path / 'mlflow.db'}"):
        client = MlflowClient()
        client.create_registered_model("nextbuy")
        for _ in range(2):
            client.create_model_version("nextbuy", "file:///m", tags={"passed": "true", "complete": "true"})
        client.set_registered_model_alias("nextbuy", registry.CHAMPION, "2")
        assert summary(tmp_path)["deploy"].endswith("champion = v2")
        client.delete_registered_model_alias("nextbuy", registry.CHAMPION)
        assert summary(tmp_path)["deploy"].endswith("no champion released")
