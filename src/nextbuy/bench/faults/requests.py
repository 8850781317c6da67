"""Malformed scoring requests of ``nextbuy bench faults`` (its REST part) and the words each
refusal must contain."""

from __future__ import annotations

from nextbuy.bench.faults.base import Request
from nextbuy.bench.serving_fixtures import invocations_body

PAIRS = ["source_id", "candidate_id"]


def _deep(depth: int) -> bytes:
    cell = b"[" * depth + b"1" + b"]" * depth
    return b'{"dataframe_split": {"columns": ["source_id", "candidate_id"], "data": [[' + cell + b", 2]]}}"


def requests(max_rows: int, max_top_k: int, max_bytes: int) -> list[Request]:
    """Malformed scoring requests and the words each refusal must contain."""
    top = ["source_id"]
    too_many = (f"{max_rows + 1:,} rows", f"limit is {max_rows:,} rows")
    return [
        Request("wrong column name", invocations_body(["src", "candidate_id"], [[1, 2]]), ("source_id",)),
        Request("pairs without candidate", invocations_body(top, [[1]]), ("candidate_id",)),
        Request("text id", invocations_body(PAIRS, [["a", 2]]), ("source_id",)),
        Request("text candidate", invocations_body(PAIRS, [[1, "x"]]), ("candidate_id",)),
        Request("fraction id", invocations_body(PAIRS, [[1.5, 2]]), ("source_id", "integer")),
        Request("null id", invocations_body(PAIRS, [[1, None]]), ("candidate_id",)),
        Request("empty body", b"", ("json",)),
        Request("not JSON", b"{not json", ("json",)),
        Request("unknown format", b'{"rows": [[1, 2]]}', ("dataframe_split",)),
        Request("no rows", invocations_body(PAIRS, []), ("empty request",)),
        Request(
            "Infinity id",
            b'{"dataframe_split": {"columns": ["source_id", "candidate_id"], "data": [[Infinity, 2]]}}',
            ("source_id", "finite"),
        ),
        Request(
            "NaN id",
            b'{"dataframe_split": {"columns": ["source_id", "candidate_id"], "data": [[NaN, 2]]}}',
            ("source_id", "nan"),
        ),
        Request("boolean id", invocations_body(PAIRS, [[True, 2]]), ("source_id", "not booleans")),
        Request("beyond int64", invocations_body(PAIRS, [[10**23, 2]]), ("source_id", "int64")),
        Request("list in a cell", invocations_body(PAIRS, [[[1, [2]], 2]]), ("source_id",)),
        Request("nested 5000 deep", _deep(5000), ("nested too deeply",)),
        Request("nested 900 deep", _deep(900), ()),
        Request("extra column", invocations_body([*PAIRS, "note"], [[1, 2, "x"]]), ("note",)),
        Request("duplicate column", invocations_body(["source_id", "source_id"], [[1, 2]]), ("source_id",)),
        Request("top_k negative", invocations_body(top, [[1]], {"top_k": -1}), ("top_k must be at least 1",)),
        Request("top_k above cap", invocations_body(top, [[1]], {"top_k": 10**9}), (f"{max_top_k:,}",)),
        Request("top_k fraction", invocations_body(top, [[1]], {"top_k": 1.5}), ("top_k",)),
        Request("top_k text", invocations_body(top, [[1]], {"top_k": "5"}), ("top_k",)),
        Request("top_k with candidates", invocations_body(PAIRS, [[1, 2]], {"top_k": 5}), ("candidate_id",)),
        # Refused before MLflow parses them into a frame: 413, as bodies over the byte limit.
        Request("too many rows", invocations_body(PAIRS, [[1, 2]] * (max_rows + 1)), too_many, status=(413,)),
        Request(
            "too many top-K sources",
            invocations_body(top, [[1]] * (max_rows + 1), {"top_k": 5}),
            too_many,
            status=(413,),
        ),
        Request(
            "csv too many rows",
            b"source_id,candidate_id\n" + b"1,2\n" * (max_rows + 1),
            too_many,
            content_type="text/csv",
            status=(413,),
        ),
        Request(
            "body over the byte limit",
            invocations_body(PAIRS, [[10**12, 10**12]] * (max_bytes // 20)),
            (f"limit is {max_bytes} bytes",),
            status=(413,),
        ),
        Request("csv fraction", b"source_id,candidate_id\n1.5,2\n", ("fraction",), content_type="text/csv"),
        Request("csv missing column", b"source_id\n1\n", ("candidate_id",), content_type="text/csv"),
        Request(
            "csv extra column", b"source_id,candidate_id,note\n1,2,x\n", ("note",), content_type="text/csv"
        ),
    ]
