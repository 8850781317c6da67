"""What a case of ``nextbuy bench faults`` is (``Case``: bad input to a stage; ``Request``: a
malformed scoring request), the input files the cases write into the project copy, and the
params edits they run with."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

INPUTS = Path("inputs")  # the cases' input files, inside the project copy
GRAPH = INPUTS / "edges.csv"  # a valid real graph: the tiny store's edges, by product key
LOG = INPUTS / "log.parquet"  # a valid real impressions log over it
SNAPSHOT = "2026-02-10"  # the tiny store's snapshot (presets/tiny.yaml: 40 days from 2026-01-01)


@dataclass(frozen=True)
class Case:
    name: str
    group: str  # params | input | artifact
    stage: str  # the stage that must refuse
    fragments: tuple[str, ...]
    params: Callable[[dict], dict] | None = None  # the params.yaml the case runs with
    files: Callable[[Path], None] | None = None  # writes or damages files in the project
    expect: str = "refuse"  # refuse | warn
    rows: bool = False  # the message must show the first offending rows
    single: bool = False  # dvc repro --single-item --force (an upstream output was damaged)
    by_hand: bool = False  # run as `nextbuy <stage>` by hand, not through dvc repro
    env: dict[str, str] = field(default_factory=dict)  # environment variables set for the run


@dataclass(frozen=True)
class Request:
    name: str
    body: bytes
    fragments: tuple[str, ...]
    content_type: str = "application/json"
    status: tuple[int, ...] = (400,)
    params: dict = field(default_factory=dict)


def setting(**changes: object) -> Callable[[dict], dict]:
    """params with dotted keys set (``train__epochs=0`` sets train.epochs)."""

    def apply(params: dict) -> dict:
        out = copy.deepcopy(params)
        for dotted, value in changes.items():
            *parents, leaf = dotted.split("__")
            node = out
            for key in parents:
                node = node[key]
            node[leaf] = value
        return out

    return apply


def dropping(section: str) -> Callable[[dict], dict]:
    def apply(params: dict) -> dict:
        return {k: v for k, v in copy.deepcopy(params).items() if k != section}

    return apply
