"""bench faults' verdicts: a case is clear only when it names its problem without a
traceback, and the counts cover every kind of row."""

from __future__ import annotations

from nextbuy.bench.faults.base import Case, Request
from nextbuy.bench.faults.verdicts import COUNTS, judge, judge_request, tally

CASE = Case("typo", "params", "train", ("params.yaml", "'epochz'"), rows=False)
NAMED = "train: invalid section 'train' in params.yaml\n  'epochz': extra inputs are not permitted"


def test_a_refusal_is_clear_only_when_it_names_the_problem_without_a_traceback():
    assert judge(CASE, 2, NAMED, outputs_same=True) == {
        "clear": True,
        "silent": False,
        "traceback": False,
        "unclear": False,
        "lost": False,
    }
    assert judge(CASE, 2, "train failed", True)["unclear"]
    assert judge(CASE, 0, NAMED, True)["silent"]
    crashed = judge(CASE, 1, NAMED + "\nTraceback (most recent call last):\n  File", True)
    assert crashed["traceback"]
    assert not crashed["clear"]
    assert judge(CASE, 2, NAMED, outputs_same=False)["lost"]


def test_matching_ignores_case_and_the_line_wrapping_of_rich():
    wrapped = "train: invalid section 'train' in\nparams.yaml   'EPOCHZ'"
    assert judge(CASE, 2, wrapped, True)["clear"]


def test_rows_are_required_where_the_case_says_so():
    rows_case = Case("abc", "input", "ingest", ("abc.csv",), rows=True)
    assert not judge(rows_case, 2, "abc.csv: bad id", True)["clear"]
    assert judge(rows_case, 2, "abc.csv: bad id\nfirst offending rows:\n 3 abc", True)["clear"]


def test_a_cleaning_case_must_warn_with_its_count_and_may_change_outputs():
    warn = Case("dups", "input", "ingest", ("dropped 7 exact duplicate",), expect="warn")
    ok = judge(warn, 0, "WARNING log.parquet: dropped 7 exact duplicate row(s)", False)
    assert ok["clear"]
    assert not ok["lost"]
    assert not ok["silent"]
    assert judge(warn, 0, "ingest done", False)["silent"]


def test_requests_need_their_status_and_words_and_a_live_server():
    request = Request("text id", b"{}", ("source_id",))
    assert judge_request(request, 400, "column 'source_id' must hold", True)["clear"]
    assert judge_request(request, 400, "bad request", True)["unclear"]
    assert judge_request(request, 200, "[]", True)["silent"]
    assert judge_request(request, 500, "Internal Server Error", True)["traceback"]
    assert judge_request(request, None, "connection refused", False)["down"]


def test_tally_counts_every_kind_of_row():
    rows = [
        {"clear": True},
        {"silent": True, "lost": True},
        {"traceback": True},
        {"recovered": True, "orphans": 2},
        {"down": True, "unclear": True},
    ]
    assert tally(rows) == {
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
    assert set(tally(rows)) == set(COUNTS)
