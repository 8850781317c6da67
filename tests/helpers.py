"""Configs from the repo's params.yaml, and a temporary git + DVC copy of the
project to run the pipeline in (the end-to-end and DAG tests)."""

from __future__ import annotations

from pathlib import Path

from nextbuy.bench.project_copy import copy_project, project_env  # noqa: F401 - the tests' import
from nextbuy.config import read_params, section_config
from tests.conftest import ROOT


def config(dotted: str, **changes):
    """The validated config of a params.yaml section (``train``, ``ingest.simulator``)
    with ``changes`` on top: tests take every other knob from the repo's params.yaml."""
    return section_config(read_params(ROOT / "params.yaml"), dotted, **changes)


def project_copy(tmp: Path, params: dict) -> Path:
    """A fresh git checkout of the project with ``params`` as params.yaml."""
    return copy_project(ROOT, tmp / "project", params)
