"""The verdicts of ``nextbuy bench faults``: each case judged from its exit code, output and
outputs, the counts over the cases, and the table printed per group."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from nextbuy.bench.faults.base import Case, Request

TRACEBACK = "Traceback (most recent call last)"
COUNTS = (
    "cases",
    "clear_errors",
    "silent_accepts",
    "tracebacks",
    "unclear",
    "outputs_lost",
    "orphans",
    "recovered",
    "server_down",
    "bare_dvc_lost",
)
TABLE_COUNTS = COUNTS[:8]  # cases .. recovered: the table's columns after the group


# ---- judging (pure) -----------------------------------------------------------------------


def flat(text: str) -> str:
    """Lower case, one space between words: rich wraps long lines."""
    return " ".join(text.split()).lower()


def judge(case: Case, returncode: int, output: str, outputs_same: bool) -> dict:
    """The verdict on one bad-input case."""
    text = flat(output)
    named = all(flat(f) in text for f in case.fragments) and (not case.rows or "first offending rows" in text)
    traceback = TRACEBACK.lower() in text
    if case.expect == "warn":
        silent = returncode == 0 and not named
        clear = returncode == 0 and named and not traceback
    else:
        silent = returncode == 0
        clear = returncode != 0 and named and not traceback
    return {
        "clear": clear,
        "silent": silent,
        "traceback": traceback,
        "unclear": not (clear or silent or traceback),
        "lost": case.expect == "refuse" and not outputs_same,
    }


def judge_request(request: Request, status: int | None, message: str, alive: bool) -> dict:
    named = all(flat(f) in flat(message) for f in request.fragments)
    error = status is None or status >= 500
    clear = status in request.status and named
    return {
        "clear": clear,
        "silent": status is not None and 200 <= status < 300,
        "traceback": error,
        "unclear": not clear and status is not None and 400 <= status < 500,
        "down": not alive,
    }


def tally(rows: list[dict]) -> dict:
    """The JSON counts over every case row."""
    return {
        "cases": len(rows),
        "clear_errors": sum(r.get("clear", False) for r in rows),
        "silent_accepts": sum(r.get("silent", False) for r in rows),
        "tracebacks": sum(r.get("traceback", False) for r in rows),
        "unclear": sum(r.get("unclear", False) for r in rows),
        "outputs_lost": sum(r.get("lost", False) for r in rows),
        "orphans": sum(r.get("orphans", 0) for r in rows),
        "recovered": sum(r.get("recovered", False) for r in rows),
        "server_down": sum(r.get("down", False) for r in rows),
        "bare_dvc_lost": sum(r.get("bare_dvc_lost", False) for r in rows),
    }


def print_table(f: dict, console: Console) -> None:
    """The counts per group and over all, then each case that went wrong with its message."""
    table = Table(title="bench faults: tiny store, fresh copy")
    for column in (
        "group",
        "cases",
        "clear",
        "silent",
        "traceback",
        "unclear",
        "lost",
        "orphans",
        "recovered",
    ):
        table.add_column(column, justify="left" if column == "group" else "right")
    groups = sorted({r["group"] for r in f["rows"]})
    for group in [*groups, None]:
        rows = [r for r in f["rows"] if group is None or r["group"] == group]
        t = tally(rows)
        table.add_row(
            group or "all",
            *(str(t[k]) for k in TABLE_COUNTS),
        )
    console.print(table)
    bad = [
        r
        for r in f["rows"]
        if not (r.get("clear") or r.get("recovered")) or r.get("lost") or r.get("orphans")
    ]
    for r in bad:
        console.print(
            f"[red]{r['group']} / {r['stage']} / {r['case']}[/] (exit {r['exit']}): {r['message'][-300:]}",
            highlight=False,
        )
