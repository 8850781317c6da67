"""Fixtures of the dashboard tests (helpers: workspace.py)."""

from __future__ import annotations

import pytest

from tests.mlops.dashboards.workspace import make_snapshots, make_windows


@pytest.fixture(scope="module")
def windows_and_snapshots():
    reference, windows = make_windows()
    return reference, windows, make_snapshots(reference, windows)
