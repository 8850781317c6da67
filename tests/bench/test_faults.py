"""bench faults: how a case is judged, the catalogue it runs, and two cases run for real
on a tiny project."""

from __future__ import annotations

import pytest

from nextbuy.bench import fault_cases, faults
from nextbuy.stage_list import dag_stages
from tests.conftest import ROOT
from tests.helpers import project_copy, project_env

CASE = fault_cases.Case("typo", "params", "train", ("params.yaml", "'epochz'"), rows=False)
NAMED = "train: invalid section 'train' in params.yaml\n  'epochz': extra inputs are not permitted"


def test_a_refusal_is_clear_only_when_it_names_the_problem_without_a_traceback():
    assert faults.judge(CASE, 2, NAMED, outputs_same=True) == {
        "clear": True,
        "silent": False,
        "traceback": False,
        "unclear": False,
        "lost": False,
    }
    assert faults.judge(CASE, 2, "train failed", True)["unclear"]
    assert faults.judge(CASE, 0, NAMED, True)["silent"]
    crashed = faults.judge(CASE, 1, NAMED + "\nTraceback (most recent call last):\n  File", True)
    assert crashed["traceback"]
    assert not crashed["clear"]
    assert faults.judge(CASE, 2, NAMED, outputs_same=False)["lost"]


def test_matching_ignores_case_and_the_line_wrapping_of_rich():
    wrapped = "train: invalid section 'train' in\nparams.yaml   'EPOCHZ'"
    assert faults.judge(CASE, 2, wrapped, True)["clear"]


def test_rows_are_required_where_the_case_says_so():
    rows_case = fault_cases.Case("abc", "input", "ingest", ("abc.csv",), rows=True)
    assert not faults.judge(rows_case, 2, "abc.csv: bad id", True)["clear"]
    assert faults.judge(rows_case, 2, "abc.csv: bad id\nfirst offending rows:\n 3 abc", True)["clear"]


def test_a_cleaning_case_must_warn_with_its_count_and_may_change_outputs():
    warn = fault_cases.Case("dups", "input", "ingest", ("dropped 7 exact duplicate",), expect="warn")
    ok = faults.judge(warn, 0, "WARNING log.parquet: dropped 7 exact duplicate row(s)", False)
    assert ok["clear"]
    assert not ok["lost"]
    assert not ok["silent"]
    assert faults.judge(warn, 0, "ingest done", False)["silent"]


def test_requests_need_their_status_and_words_and_a_live_server():
    request = fault_cases.Request("text id", b"{}", ("source_id",))
    assert faults.judge_request(request, 400, "column 'source_id' must hold", True)["clear"]
    assert faults.judge_request(request, 400, "bad request", True)["unclear"]
    assert faults.judge_request(request, 200, "[]", True)["silent"]
    assert faults.judge_request(request, 500, "Internal Server Error", True)["traceback"]
    assert faults.judge_request(request, None, "connection refused", False)["down"]


def test_tally_counts_every_kind_of_row():
    rows = [
        {"clear": True},
        {"silent": True, "lost": True},
        {"traceback": True},
        {"recovered": True, "orphans": 2},
        {"down": True, "unclear": True},
    ]
    assert faults.tally(rows) == {
        "cases": 5,
        "clear_errors": 1,
        "silent_accepts": 1,
        "tracebacks": 1,
        "unclear": 1,
        "outputs_lost": 1,
        "orphans": 2,
        "recovered": 1,
        "server_down": 1,
        "bare_dvc_lost": 0,
    }
    assert set(faults.tally(rows)) == set(faults.COUNTS)


def test_the_matrix_has_at_least_60_cases_over_every_stage():
    stages = dag_stages(ROOT, "training") + dag_stages(ROOT, "monitoring")
    requests = fault_cases.requests(100_000, 1000, 10_000_000)
    kills = len(stages) * len(faults.KILL_POINTS)
    assert len(fault_cases.CASES) + len(requests) + kills >= 60
    assert {c.stage for c in fault_cases.CASES} == set(stages)  # bad input reaches every stage
    names = [(c.group, c.name) for c in fault_cases.CASES] + [("request", r.name) for r in requests]
    assert len(names) == len(set(names))
    assert all(c.fragments or c.name == "binary garbage" for c in fault_cases.CASES)


@pytest.mark.slow
def test_cases_run_for_real_are_judged_and_the_project_is_put_back(tmp_path, tiny_params):
    """A params typo and a damaged upstream output are refused clearly with the stage's
    outputs intact, and the project is back at its baseline after each case."""
    dest = project_copy(tmp_path, tiny_params)
    project = faults.Project(dest, tiny_params, project_env(dest))
    first = project.run("dvc", "repro", "train")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    baseline = faults.capture(project)
    for name in ("typo key", "truncated products"):
        case = next(c for c in fault_cases.CASES if c.name == name)
        row = faults.run_case(project, case, baseline)
        assert row["clear"], row
        assert not row["lost"], row
        assert row["exit"] != 0, row
        assert faults.capture(project) == baseline
