"""bench faults' run: the matrix it runs, two bad-input cases run for real on a tiny project,
and --only's choice of cases."""

from __future__ import annotations

import pytest

from nextbuy.bench.faults.cases import CASES
from nextbuy.bench.faults.matrix import run_case, selected
from nextbuy.bench.faults.project import Project, capture
from nextbuy.bench.faults.recovery import KILL_POINTS
from nextbuy.bench.faults.requests import requests
from nextbuy.bench.faults.serving import SIGTERM
from nextbuy.stage_list import dag_stages
from tests.conftest import ROOT
from tests.helpers import copy_finished_project, project_env


def test_the_matrix_has_at_least_200_cases_over_every_stage():
    stages = dag_stages(ROOT, "training") + dag_stages(ROOT, "monitoring")
    malformed = requests(100_000, 1000, 10_000_000)
    kills = len(stages) * len(KILL_POINTS)
    assert len(CASES) + len(malformed) + kills >= 200
    assert {c.stage for c in CASES} == set(stages)  # bad input reaches every stage
    names = [(c.group, c.name) for c in CASES] + [("request", r.name) for r in malformed]
    assert len(names) == len(set(names))
    assert all(c.fragments or c.name == "binary garbage" for c in CASES)


@pytest.mark.slow
def test_cases_run_for_real_are_judged_and_the_project_is_put_back(
    tmp_path, tiny_params, finished_tiny_project
):
    """On a project that has run every stage, as the bench's: a params typo, a damaged
    upstream output, a stage run by hand with a key twice, a tab or an unreachable Spark master
    are refused clearly with the stage's outputs intact, and the project is back at its
    baseline after each case."""
    dest = copy_finished_project(finished_tiny_project, tmp_path)
    project = Project(dest, tiny_params, project_env(dest))
    baseline = capture(project)
    for name in (
        "typo key",
        "truncated products",
        "typo key (by hand)",
        "a key twice in params.yaml (by hand)",
        "params.yaml indented with a tab (by hand)",
        "unreachable Spark master (by hand)",
    ):
        case = next(c for c in CASES if c.name == name)
        row = run_case(project, case, baseline)
        assert row["clear"], row["message"]
        assert not row["lost"], row
        assert row["exit"] != 0, row
        assert capture(project) == baseline


def test_a_kill_case_is_picked_by_its_stage_and_point_or_by_kill_alone():
    from nextbuy.bench.faults.recovery import kill_name

    assert selected(kill_name("train", 0.6), "train: kill -9 at 60%")
    assert selected(kill_name("train", 0.25), "kill")
    assert not selected(kill_name("deploy", 0.6), "train: kill")


def test_only_picks_cases_by_any_of_its_bar_separated_parts():
    assert selected("too many rows", None)
    assert selected("too many rows", "many|top-K")
    assert selected(SIGTERM, "many|top-K")
    assert not selected("graph file missing", "many|top-K")
