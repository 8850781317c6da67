"""params.yaml sections: bounds, unknown keys refused, each stage reads only its own section."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from nextbuy.config import SECTIONS, load_section
from tests.conftest import ROOT


def test_repo_params_are_valid_for_every_stage():
    for name in SECTIONS:
        load_section(name, ROOT / "params.yaml")


def test_dvc_stages_declare_exactly_their_section():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        # traffic simulates more of the ingested store, so it also reads the simulator's settings.
        # monitor watches the model that deploy registers.
        extra = {
            "traffic": ["ingest.simulator", "ingest.seed", "ingest.snapshot"],
            "monitor": ["deploy.model_name"],
        }.get(name, [])
        assert stage["params"] == [name, *extra]


def test_unknown_key_and_out_of_range_are_refused(tmp_path):
    params = tmp_path / "params.yaml"
    full = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.write_text(yaml.safe_dump({"train": {**full["train"], "epochs": 0}}))
    with pytest.raises(ValidationError, match="epochs"):
        load_section("train", params)
    params.write_text(yaml.safe_dump({"train": {**full["train"], "epoch": 3}}))
    with pytest.raises(ValidationError, match="epoch"):
        load_section("train", params)


def test_real_source_needs_a_path(tmp_path):
    params = tmp_path / "params.yaml"
    full = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.write_text(yaml.safe_dump({"ingest": {**full["ingest"], "source": "npz"}}))
    with pytest.raises(ValidationError, match="graph_path"):
        load_section("ingest", params)
