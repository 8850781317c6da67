"""params.yaml sections: bounds, unknown keys refused, each stage reads only its own section."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from nextbuy.config import (
    ALL_SECTIONS,
    SECTIONS,
    IngestConfig,
    MonitorConfig,
    TrainConfig,
    load_section,
    section_config,
)
from tests.conftest import ROOT


def test_repo_params_are_valid_for_every_stage():
    for model in ALL_SECTIONS.values():
        load_section(model, ROOT / "params.yaml")


def test_dvc_stages_declare_exactly_their_section():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        # traffic simulates more of the ingested store, so it also reads the simulator's settings,
        # or reads the part after the snapshot of the real log ingest read.
        # monitor watches the model that deploy registers, and holds the versions' matured
        # metrics (model cards) to the gate's floors. engine: which engine runs the stage's data.
        extra = {
            "traffic": [
                "ingest.simulator",
                "ingest.seed",
                "ingest.snapshot",
                "ingest.max_event_gap_days",
                "ingest.source",
                "ingest.impressions_path",
                "ingest.events",
                "engine",
            ],
            "ingest": ["engine"],
            "label_delay": ["engine"],
            "monitor": ["deploy.model_name", "deploy.min_auc", "deploy.min_recall", "engine"],
        }.get(name, [])
        assert stage["params"] == [name, *extra]


def test_unknown_key_and_out_of_range_are_refused(tmp_path):
    params = tmp_path / "params.yaml"
    full = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.write_text(yaml.safe_dump({"train": {**full["train"], "epochs": 0}}))
    with pytest.raises(ValidationError, match="epochs"):
        load_section(TrainConfig, params)
    params.write_text(yaml.safe_dump({"train": {**full["train"], "epoch": 3}}))
    with pytest.raises(ValidationError, match="epoch"):
        load_section(TrainConfig, params)


def test_real_source_needs_a_path(tmp_path):
    params = tmp_path / "params.yaml"
    full = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.write_text(yaml.safe_dump({"ingest": {**full["ingest"], "source": "npz"}}))
    with pytest.raises(ValidationError, match="graph_path"):
        load_section(IngestConfig, params)


def test_raw_logs_need_orders_and_no_ready_made_graph(tmp_path):
    params = tmp_path / "params.yaml"
    full = yaml.safe_load((ROOT / "params.yaml").read_text())
    events = {**full["ingest"]["events"], "orders_path": None}
    params.write_text(yaml.safe_dump({"ingest": {**full["ingest"], "source": "events", "events": events}}))
    with pytest.raises(ValidationError, match=r"needs ingest\.events\.orders_path"):
        load_section(IngestConfig, params)
    events["orders_path"] = "inputs/orders.parquet"  # orders alone: exposures are replayed
    params.write_text(yaml.safe_dump({"ingest": {**full["ingest"], "source": "events", "events": events}}))
    assert load_section(IngestConfig, params).events.impressions_path is None
    events["impressions_path"] = "inputs/impressions.parquet"
    ingest = {**full["ingest"], "source": "events", "events": events, "graph_path": "inputs/edges.csv"}
    params.write_text(yaml.safe_dump({"ingest": ingest}))
    with pytest.raises(ValidationError, match=r"leave ingest\.graph_path and ingest\.impressions_path null"):
        load_section(IngestConfig, params)
    params.write_text(yaml.safe_dump({"ingest": {**ingest, "graph_path": None}}))
    assert load_section(IngestConfig, params).events.attribution_days > 0
    simulated = {**full["ingest"], "catalogue_path": "inputs/catalogue.csv"}
    params.write_text(yaml.safe_dump({"ingest": simulated}))
    with pytest.raises(ValidationError, match="the simulated store has its own catalogue"):
        load_section(IngestConfig, params)


def section(name: str, **changes):
    full = yaml.safe_load((ROOT / "params.yaml").read_text())
    return {**full[name], **changes}


@pytest.mark.parametrize(
    ("snapshot", "fragment"),
    [
        ("not a date", "is not a date"),
        ("", "empty or NaT"),
        ("NaT", "empty or NaT"),
        ("now", "depends on when the run happens"),
        ("2026-05-10T00:00:00+02:00", "time zone"),
        (20260510, "valid string"),
    ],
)
def test_garbage_snapshot_is_refused_naming_the_key(snapshot, fragment):
    with pytest.raises(ValidationError, match=fragment) as err:
        IngestConfig.model_validate(section("ingest", snapshot=snapshot))
    assert err.value.errors()[0]["loc"] == ("snapshot",)


@pytest.mark.parametrize("snapshot", [None, "2026-05-10", "2026-05-10T06:30:00", "2026-05-10 06:30"])
def test_valid_snapshot_is_kept(snapshot):
    assert IngestConfig.model_validate(section("ingest", snapshot=snapshot)).snapshot == snapshot


def test_unquoted_yaml_date_is_read_as_text(tmp_path):
    params = tmp_path / "params.yaml"
    full = yaml.safe_load((ROOT / "params.yaml").read_text())
    text = yaml.safe_dump({"ingest": {**full["ingest"], "snapshot": "SNAP"}}).replace("SNAP", "2026-05-10")
    params.write_text(text)
    cfg = load_section(IngestConfig, params)
    assert cfg.snapshot == "2026-05-10"


def test_garbage_simulator_start_date_is_refused():
    ingest = section("ingest")
    bad = {**ingest, "simulator": {**ingest["simulator"], "start_date": "soon"}}
    with pytest.raises(ValidationError, match=r"ingest.simulator.start_date='soon' is not a date"):
        IngestConfig.model_validate(bad)


@pytest.mark.parametrize("tolerance", [[0.3, -1], -0.1, [], float("nan"), [0.2, float("inf")]])
def test_negative_or_non_finite_relative_tolerance_is_refused(tolerance):
    with pytest.raises(ValidationError, match=r"relative_tolerance") as err:
        MonitorConfig.model_validate(section("monitor", relative_tolerance=tolerance))
    assert err.value.errors()[0]["loc"] == ("relative_tolerance",)


@pytest.mark.parametrize("tolerance", [0, 0.3, [0.1, 0.2, 0.5]])
def test_relative_tolerance_number_or_per_bucket_list(tolerance):
    cfg = MonitorConfig.model_validate(section("monitor", relative_tolerance=tolerance))
    assert cfg.relative_tolerance == tolerance


@pytest.mark.parametrize(
    ("dotted", "value", "named"),
    [
        ("train.epochs", True, "valid integer"),
        ("thresholds.target_precision", "0.3", "write it as 0.3"),
        ("train.lr", float("inf"), "finite number"),
        ("train.lr", float("nan"), "finite number"),
        ("ingest.simulator.n_products", "1e6", "write it as 1000000"),
    ],
)
def test_params_are_read_strictly_and_a_number_written_as_text_says_how_to_write_it(dotted, value, named):
    name, *path = dotted.split(".")
    changed = section(name)
    node = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ValidationError, match=named) as err:
        SECTIONS[name].model_validate(changed)
    assert err.value.errors()[0]["loc"][-1] == path[-1]


def test_an_integer_is_still_a_float_setting():
    assert section_config({"train": section("train", lr=1)}, TrainConfig).lr == 1.0
