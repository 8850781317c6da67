"""`nextbuy bench scale`: the per-size core on a 2,000-product store (in this process), the
exponent fit and the skip rules on synthetic figures, the child watchdog, the CLI entry."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from nextbuy.bench import scale, scale_core
from nextbuy.cli import BENCHES, app
from nextbuy.config import read_params
from tests.conftest import ROOT

PARAMS = read_params(ROOT / "params.yaml")


@pytest.fixture(scope="module")
def small_size():
    steps = []
    figures = scale_core.measure(PARAMS, 2_000, sample_sources=200, on_step=steps.append)
    return figures, steps


def test_one_size_reports_every_key_with_positive_times(small_size):
    figures, steps = small_size
    assert set(scale.SIZE_KEYS) <= set(figures)
    assert figures["n_products"] == 2_000
    assert figures["n_edges"] > 0
    for key in (*scale_core.STAGE_KEYS, "topk_s", "sage_epoch_s"):
        assert figures[key] > 0.0, key
    assert figures["total_s"] == pytest.approx(sum(figures[k] for k in scale_core.STAGE_KEYS))
    assert figures["topk_sources"] == 200
    assert figures["topk_all_s_extrapolated"] > figures["topk_s"]
    assert figures["sampler_edges_per_s"] > 0
    assert figures["blade_vs_sage_epoch_ratio"] > 0
    assert 0 < figures["peak_rss_gib"] < 64
    assert list(dict.fromkeys(steps)) == list(scale_core.STEPS)  # in order (epochs may repeat)
    assert len(figures["train_epoch_all_s"]) == len(figures["sage_epoch_all_s"]) >= 1


def test_scaled_params_grow_purchases_and_impressions_in_proportion():
    sim = PARAMS["ingest"]["simulator"]
    scaled = scale_core.scaled_params(PARAMS, 10 * sim["n_products"])
    new = scaled["ingest"]["simulator"]
    assert new["n_products"] == 10 * sim["n_products"]
    assert new["n_purchases"] == 10 * sim["n_purchases"]
    assert new["n_impressions"] == 10 * sim["n_impressions"]
    assert scaled["train"]["epochs"] == 1
    assert new["n_categories"] == sim["n_categories"]


def test_time_exponent_is_the_log_log_slope():
    edges = [1e4, 1e5, 1e6]
    assert scale.time_exponent(edges, [3.0 * e**1.25 for e in edges]) == pytest.approx(1.25)
    assert scale.time_exponent(edges, [2.0, 20.0, 200.0]) == pytest.approx(1.0)
    assert scale.time_exponent([1e4], [1.0]) is None
    assert scale.time_exponent([1e4, 1e4], [1.0, 2.0]) is None


def test_preflight_skips_what_extrapolates_past_time_or_memory():
    measured = [{"n_products": 10_000, "child_s": 100.0, "peak_rss_gib": 1.0}]
    assert scale.preflight(100_000, [], 3600.0, 1.0) is None  # nothing to extrapolate from
    assert scale.preflight(100_000, measured, 3600.0, 64.0) is None
    assert "budget" in scale.preflight(1_000_000, measured, 3600.0, 64.0)
    assert "GiB" in scale.preflight(100_000, measured, 3600.0, 5.0)
    # super-linear sizes extrapolate with their own power
    two = [*measured, {"n_products": 100000, "child_s": 1000.0 * 10**0.5, "peak_rss_gib": 10.0}]
    assert scale.estimate(1_000_000, two)["child_s"] == pytest.approx(1000.0 * 10**0.5 * 10**1.5)
    # memory: a fixed base plus a cost per product, through the two largest sizes
    assert scale.estimate(1_000_000, two)["peak_rss_gib"] == pytest.approx(10.0 + 9.0 / 90_000 * 900_000)
    based = [{"n_products": 10_000, "child_s": 10.0, "peak_rss_gib": 0.86},
             {"n_products": 100_000, "child_s": 135.0, "peak_rss_gib": 2.46}]  # fmt: skip
    assert scale.estimate(1_000_000, based)["peak_rss_gib"] == pytest.approx(2.46 + 1.6 * 10)
    assert scale.preflight(1_000_000, based, 3600.0, 22.9) is None  # not 24.6 GiB (10 x 2.46)


def test_summary_takes_the_largest_run_and_keeps_skipped_sizes():
    rows = [
        {"n_products": 10, "n_edges": 100, "total_s": 1.0, "sampler_edges_per_s": 5.0,
         "blade_vs_sage_epoch_ratio": 1.2},
        {"n_products": 100, "n_edges": 1000, "total_s": 10.0, "sampler_edges_per_s": 7.0,
         "blade_vs_sage_epoch_ratio": 1.1},
        scale.skipped(1000, "too big"),
    ]  # fmt: skip
    figures = scale.summarise(rows, {})
    assert figures["time_exponent"] == pytest.approx(1.0)
    assert figures["sampler_edges_per_s"] == 7.0
    assert figures["blade_vs_sage_epoch_ratio"] == 1.1
    assert figures["sizes"][2]["skipped"] == "too big"
    assert figures["sizes"][2]["total_s"] is None
    assert figures["host"]["cpu_count"] >= 1
    assert figures["config"]["largest_run"] == 100
    assert set(figures) == {"sizes", "time_exponent", "sampler_edges_per_s", "blade_vs_sage_epoch_ratio",
                            "config", "host"}  # fmt: skip


def test_the_graphsage_ratio_comes_from_the_largest_size_that_ran_it():
    rows = [
        {"n_products": 10, "n_edges": 100, "total_s": 1.0, "blade_vs_sage_epoch_ratio": 1.2},
        {"n_products": 100, "n_edges": 1000, "total_s": 10.0, "blade_vs_sage_epoch_ratio": None},
    ]
    figures = scale.summarise(rows, {})
    assert figures["blade_vs_sage_epoch_ratio"] == 1.2
    assert figures["config"]["largest_sage_run"] == 10
    assert figures["config"]["largest_run"] == 100


def test_with_neighbour_history_the_sage_pair_still_samples_every_hop(monkeypatch):
    """The configured (history) epoch is timed apart; GraphSAGE is compared with BLADE at the same
    neighbour budget, and not at all above SAGE_MAX_PRODUCTS."""
    params = scale_core.merge(PARAMS, {"train": {"neighbour_history": True}})
    figures = scale_core.measure(params, 1_000, sample_sources=50)
    assert figures["train_epoch_s"] > 0
    assert figures["train_epoch_sampled_s"] > 0
    assert figures["blade_vs_sage_epoch_ratio"] == pytest.approx(
        figures["train_epoch_sampled_s"] / figures["sage_epoch_s"]
    )
    monkeypatch.setattr(scale_core, "SAGE_MAX_PRODUCTS", 500)
    alone = scale_core.measure(params, 1_000, sample_sources=50)
    assert alone["sage_epoch_s"] is None
    assert alone["blade_vs_sage_epoch_ratio"] is None
    assert alone["train_epoch_s"] > 0


def test_a_child_past_its_budget_or_failing_is_recorded_not_raised(tmp_path):
    over = scale.run_size(ROOT / "params.yaml", 2_000, 100, budget_s=0.2, on_step=lambda _: None)
    assert "budget" in over["skipped"]
    assert over["total_s"] is None
    failed = scale.run_size(tmp_path / "missing.yaml", 2_000, 100, budget_s=60.0, on_step=lambda _: None)
    assert "exited 1" in failed["skipped"]
    assert "missing.yaml" in failed["skipped"]


def test_cli_registers_scale_with_sizes():
    assert "scale" in BENCHES
    result = CliRunner().invoke(app, ["bench", "scale", "--help"])
    assert result.exit_code == 0
    assert "--sizes" in result.output
    assert scale.parse_sizes("2000, 10_000") == (2000, 10_000)
    assert scale.DEFAULT_SIZES == (10_000, 100_000, 1_000_000)
    with pytest.raises(ValueError, match="sizes must be comma-separated"):
        scale.parse_sizes("5")


def test_a_preset_is_applied_over_params_for_every_size(tmp_path, monkeypatch):
    """`--preset`: each size's child reads params.yaml with the preset's overrides."""
    preset = tmp_path / "preset.yaml"
    preset.write_text("train:\n  batch_size: 4096\n")
    seen = []

    def child(params_file, n_products, sample_sources, budget_s, on_step):
        seen.append((n_products, read_params(params_file)["train"]["batch_size"]))
        return scale.skipped(n_products, "not run in this test")

    monkeypatch.setattr(scale, "run_size", child)
    figures = scale.run(
        tmp_path / "out.json", sizes=(100, 200), params_file=str(ROOT / "params.yaml"), preset=str(preset)
    )
    assert seen == [(100, 4096), (200, 4096)]
    assert figures["config"]["preset"] == str(preset)
    assert figures["config"]["params_file"] == str(ROOT / "params.yaml")  # as given, not the merged temp file
    assert figures["config"]["batch_size"] == 4096
    assert "--preset" in CliRunner().invoke(app, ["bench", "scale", "--help"]).output


def test_bench_scale_takes_a_longer_budget_for_the_largest_preset(tmp_path, monkeypatch):
    """The 1M-product preset takes longer than the default budget per size: the user raises it."""
    calls = []
    monkeypatch.setattr(scale, "run", lambda out, **kw: calls.append(kw) or {"ok": 1})
    out = str(tmp_path / "s.json")
    for extra in (["--budget-minutes", "240"], []):
        result = CliRunner().invoke(app, ["bench", "scale", "--out", out, *extra])
        assert result.exit_code == 0, result.output
    assert calls[0]["budget_s"] == 240 * 60.0
    assert "budget_s" not in calls[1]  # the bench's own
