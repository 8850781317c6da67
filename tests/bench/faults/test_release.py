"""bench faults' release case: its second release is valid params that train another model
and pass the gate."""

from __future__ import annotations

from nextbuy.bench.faults import release
from nextbuy.config import DeployConfig, read_params, section_config
from tests.conftest import ROOT


def test_the_second_release_trains_another_model_through_a_gate_it_passes():
    params = read_params(ROOT / "params.yaml")
    changed = release.second_release(params)
    assert changed["train"]["seed"] != params["train"]["seed"]
    deploy = section_config(changed, DeployConfig)  # still valid params
    assert deploy.tolerance >= 1.0  # any difference in AUC or recall is within it
    assert deploy.min_auc == 0.0
    assert params == read_params(ROOT / "params.yaml")  # the baseline's params untouched
