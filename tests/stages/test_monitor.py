"""traffic + monitor stage cores on a tiny trained store: a drill drift is caught
in the drifted bucket after it starts; clean traffic raises nothing. Only a champion of
the store's catalogue watches its traffic: another catalogue's, or one recording none, stops
the stage naming the model and both catalogues, before any scoring. No champion released yet
is a state, not bad input: the stage succeeds, writing every declared output saying it
monitored nothing and why, with no alerts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from nextbuy import paths
from nextbuy.bench.serving_fixtures import mlflow_store
from nextbuy.cli import ALERT_EXIT_CODE, app
from nextbuy.domain import catalogue
from nextbuy.mlops import io, schemas, tracking
from nextbuy.pipeline import watch_traffic
from nextbuy.release import registry
from nextbuy.stages import monitor
from tests.conftest import ROOT
from tests.helpers import config

MONITOR = config("monitor", min_volume=200)


@pytest.fixture(scope="module")
def trained():
    from nextbuy.pipeline import run_in_memory
    from tests.conftest import TINY_PARAMS

    return run_in_memory(TINY_PARAMS)


def test_clean_month_raises_no_alert(trained):
    table, fired = watch_traffic(trained, config("traffic", days=20, impressions_per_day=3000), MONITOR)
    assert fired == []
    assert set(table["bucket"]) == {0, 1}
    assert table["window"].nunique() == 20


def test_drift_drill_alerts_in_the_drifted_bucket_after_it_starts(trained):
    drift = {"kind": "bucket_shift", "bucket": 1, "start_day": 8, "odds_multiplier": 0.3}
    traffic = config("traffic", days=20, impressions_per_day=3000, drift=drift)
    table, fired = watch_traffic(trained, traffic, MONITOR)
    assert fired, table.to_string()
    assert {a["bucket"] for a in fired} == {1}
    assert min(a["window"] for a in fired) >= 8


def test_alerts_command_exit_status(tmp_path):
    path = tmp_path / "alerts.json"
    io.write_json({"now": "2026-03-01", "alerts": []}, path)
    assert CliRunner().invoke(app, ["alerts", "--path", str(path)]).exit_code == 0
    io.write_json(
        {"now": "2026-03-01", "alerts": [{"window_start": "2026-02-20", "message": "bucket 1: low"}]}, path
    )
    result = CliRunner().invoke(app, ["alerts", "--path", str(path)])
    assert result.exit_code == ALERT_EXIT_CODE
    assert "bucket 1" in result.output


# --- the champion that may watch this store ---------------------------------------------


@pytest.fixture
def client(tmp_path, monkeypatch, new_mlflow_store):
    """A project dir (the cwd) with its own MLflow store; a client on it. Process state put back."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv(tracking.RUN_CONTEXT_ENV, "")
    monkeypatch.delenv(tracking.RUN_CONTEXT_ENV)  # recorded: restored (absent) afterwards
    monkeypatch.chdir(tmp_path)
    with mlflow_store(new_mlflow_store(tmp_path / "mlflow.db")):
        tracking.configure(tmp_path)
        yield MlflowClient()


def products(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "product_id": np.arange(n, dtype=np.int64),
            "product_key": [str(i) for i in range(n)],
            "category": (np.arange(n) % 5).astype(np.int64),
            "price": np.full(n, 9.5),
        }
    )


def champion(client, tags: dict[str, str], name: str = "nextbuy") -> str:
    """A released champion (a bare registry entry: nothing to download) with ``tags``."""
    client.create_registered_model(name)
    version = client.create_model_version(
        name, "file:///m", tags={"passed": "true", "complete": "true", **tags}
    ).version
    client.set_registered_model_alias(name, registry.CHAMPION, str(version))
    return str(version)


def test_a_champion_of_the_stores_catalogue_watches_it(client):
    store = products(300)
    version = champion(client, {registry.CATALOGUE: catalogue.identity(store)})
    assert monitor.champion_of_this_store(client, "nextbuy", store) == version


def another_store(n: int) -> pd.DataFrame:
    """n products numbered like products(n) but other products (other categories)."""
    return products(n).assign(category=lambda t: (t["category"] + 1) % 5)


def test_a_champion_of_the_store_before_its_latest_launches_watches_it(client):
    version = champion(client, {registry.CATALOGUE: catalogue.identity(products(250))})
    assert monitor.champion_of_this_store(client, "nextbuy", products(300)) == version


def test_a_champion_of_another_catalogue_is_refused_naming_the_model_and_both_catalogues(client):
    small, large = another_store(50), products(300)
    version = champion(client, {registry.CATALOGUE: catalogue.identity(small)})
    with pytest.raises(io.DataError) as err:
        monitor.champion_of_this_store(client, "nextbuy", large)
    message = err.value.message
    assert message.startswith("models:/nextbuy@champion")
    assert f"nextbuy v{version}" in message
    assert catalogue.identity(small) in message
    assert catalogue.identity(large) in message
    assert "50 products" in message
    assert "300 products" in message
    assert str(paths.PRODUCTS) in message


def test_a_champion_recording_no_catalogue_is_refused(client):
    champion(client, {})
    with pytest.raises(io.DataError, match="unknown catalogue"):
        monitor.champion_of_this_store(client, "nextbuy", products(300))


def test_no_champion_is_no_version_not_an_error(client):
    champion(client, {registry.CATALOGUE: catalogue.identity(products(300))}, name="nextbuy-other")
    assert monitor.champion_of_this_store(client, "nextbuy-large-100k", products(300)) is None


def declared_outputs() -> list[Path]:
    """What dvc.yaml's monitor stage declares it writes (outs and metrics)."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["monitor"]
    entries = stage.get("outs", []) + stage.get("metrics", [])
    return [Path(e if isinstance(e, str) else next(iter(e))) for e in entries]


def test_with_no_champion_the_stage_succeeds_monitoring_nothing_and_saying_why(client, monkeypatch):
    store = products(300)
    io.write_table(store, paths.PRODUCTS, schemas.PRODUCTS)
    io.write_json({"start": "2026-02-10", "now": "2026-02-16"}, paths.TRAFFIC_META)
    model_name = config("deploy").model_name
    # another store's champion, under its own name: not this store's
    champion(client, {registry.CATALOGUE: catalogue.identity(store)}, name=f"{model_name}-other")
    monkeypatch.setattr(registry, "load_version", lambda *a: pytest.fail("a model was loaded"))
    monkeypatch.setattr(monitor, "publish_dashboard", lambda *a: pytest.fail("Evidently was published to"))
    result = CliRunner().invoke(app, ["monitor", "--params", str(ROOT / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert [p for p in declared_outputs() if not p.exists()] == []
    metrics = io.read_json(paths.metrics_file("monitor"))
    assert metrics["monitored"] is False
    assert metrics["alerts"] == 0
    assert metrics["windows"] == 0
    assert f"no champion released for {model_name}" in metrics["reason"]
    assert str(paths.metrics_file("deploy")) in metrics["reason"]
    assert metrics["evidently_project_id"] is None
    assert metrics["champion_version"] is None
    alerts = io.read_json(paths.MONITOR_ALERTS)
    assert alerts["alerts"] == []
    assert alerts["monitored"] is False
    assert alerts["reason"] == metrics["reason"]
    assert pd.read_parquet(paths.MONITOR_WINDOWS).empty
    plot = (paths.plots_dir("monitor") / "positivity.csv").read_text().splitlines()
    assert plot == [",".join(monitor.PLOT_COLUMNS)]
    checked = CliRunner().invoke(app, ["alerts", "--path", str(paths.MONITOR_ALERTS)])
    assert checked.exit_code == 0, checked.output
    assert "nothing monitored" in checked.output
    assert "no alerts" in checked.output


def test_the_stage_stops_before_scoring_and_writes_no_alerts_with_a_foreign_champion(client, monkeypatch):
    store = products(300)
    io.write_table(store, paths.PRODUCTS, schemas.PRODUCTS)
    model_name = config("deploy").model_name
    champion(client, {registry.CATALOGUE: catalogue.identity(another_store(50))}, name=model_name)
    read_table = io.read_table
    monkeypatch.setattr(  # traffic, edges: never reached
        io, "read_table", lambda path, schema: read_table(path, schema) if path == paths.PRODUCTS else None
    )
    monkeypatch.setattr(io, "read_json", lambda path: {"start": "2026-02-10", "now": "2026-02-16"})
    monkeypatch.setattr(monitor.delay.DelayModel, "from_dict", staticmethod(lambda d: None))
    monkeypatch.setattr(registry, "load_version", lambda *a: pytest.fail("a foreign champion was loaded"))
    with pytest.raises(io.DataError, match="not a model of this store"):
        monitor.run(str(ROOT / "params.yaml"))
    assert not paths.MONITOR_ALERTS.exists()
    assert not paths.metrics_file("monitor").exists()
