"""bench events: each size in a process of its own, with its build time and its own peak RSS;
the synthetic logs' planted conversions are what the build attributes."""

from __future__ import annotations

import json

import pytest

from nextbuy.bench import events
from tests.conftest import ROOT


def test_sizes_are_orders_impressions_pairs():
    assert events.parse_sizes("1e6:5e6,200:300") == [(1_000_000, 5_000_000), (200, 300)]
    with pytest.raises(ValueError, match="orders:impressions"):
        events.parse_sizes("10:20")


def test_each_size_reports_time_memory_and_finds_the_planted_conversions(tmp_path):
    out = tmp_path / "events.json"
    figures = events.run(out, sizes="2000:10000,20000:100000", params=str(ROOT / "params.yaml"))
    assert json.loads(out.read_text()) == figures
    small, large = figures["sizes"]
    assert (large["orders"], large["impressions"]) == (20_000, 100_000)
    for row in (small, large):
        assert row["build_s"] > 0
        assert row["peak_rss_gib"] > row["inputs_gib"] > 0
        assert row["edges"] > 0
        # 3% converted (a few later than the 30-day attribution or the logs' end), and some
        # customers' own orders happen to follow an impression of what they bought
        assert 0.02 < row["conversions_attributed"] / row["impressions"] < 2 * events.CONVERTED
    assert figures["rules"]["attribution_days"] == 30
