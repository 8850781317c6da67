"""bench faults: how a case is judged, the catalogue it runs, and two cases run for real
on a tiny project."""

from __future__ import annotations

import json

import pytest

from nextbuy.bench import fault_cases, fault_serving, faults
from nextbuy.stage_list import dag_stages
from tests.conftest import ROOT
from tests.helpers import copy_finished_project, project_env

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
def test_cases_run_for_real_are_judged_and_the_project_is_put_back(
    tmp_path, tiny_params, finished_tiny_project
):
    """On a project that has run every stage, as the bench's: a params typo and a damaged
    upstream output are refused clearly with the stage's outputs intact, and the project is
    back at its baseline after each case."""
    dest = copy_finished_project(finished_tiny_project, tmp_path)
    project = faults.Project(dest, tiny_params, project_env(dest))
    baseline = faults.capture(project)
    for name in ("typo key", "truncated products"):
        case = next(c for c in fault_cases.CASES if c.name == name)
        row = faults.run_case(project, case, baseline)
        assert row["clear"], row
        assert not row["lost"], row
        assert row["exit"] != 0, row
        assert faults.capture(project) == baseline


def test_only_picks_cases_by_any_of_its_bar_separated_parts():
    assert faults.selected("too many rows", None)
    assert faults.selected("too many rows", "many|top-K")
    assert faults.selected(fault_serving.SIGTERM, "many|top-K")
    assert not faults.selected("graph file missing", "many|top-K")


def test_the_heaviest_top_k_request_stays_within_the_limits_it_tests():
    from nextbuy.serving import MAX_REQUEST_ROWS, MAX_TOP_K

    for n_products in (2, 300, 5000):
        body = json.loads(fault_serving.heavy_topk_body(n_products))
        k, sources = body["params"]["top_k"], len(body["dataframe_split"]["data"])
        assert k <= MAX_TOP_K
        assert k < n_products
        assert sources * k <= MAX_REQUEST_ROWS < (sources + 1) * k or sources == n_products


def test_under_abuse_only_a_200_or_a_503_saying_when_to_retry_is_an_answer():
    reply = fault_serving.Reply
    good = [reply(200, None, 1.0, ""), reply(503, "1", 0.1, "server busy")]
    bad = [reply(503, None, 0.1, ""), reply(504, None, 60.0, ""), reply(None, None, 9.0, "reset")]
    assert fault_serving.bad_replies(good + bad) == bad


def test_the_second_release_trains_another_model_through_a_gate_it_passes():
    from nextbuy.bench import fault_release
    from nextbuy.config import read_params, section_config

    params = read_params(ROOT / "params.yaml")
    changed = fault_release.second_release(params)
    assert changed["train"]["seed"] != params["train"]["seed"]
    deploy = section_config(changed, "deploy")  # still valid params
    assert deploy.tolerance >= 1.0  # any difference in AUC or recall is within it
    assert deploy.min_auc == 0.0
    assert params == read_params(ROOT / "params.yaml")  # the baseline's params untouched


def test_an_unreadable_or_missing_dvc_lock_reads_as_no_stages_not_a_crash(tmp_path):
    """A case that broke dvc.lock is judged on it; the run goes on to the next case."""
    project = faults.Project(tmp_path, {}, {})
    assert project.lock() == {}
    for content in ("", "stages: [", "schema: '2.0'\n"):
        (tmp_path / "dvc.lock").write_text(content)
        assert project.lock() == {}
        assert project.outs("ingest") == []
    (tmp_path / "dvc.lock").write_text("stages:\n  ingest:\n    outs:\n    - path: data/ingested\n")
    assert project.outs("ingest") == ["data/ingested"]
