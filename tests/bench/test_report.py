"""Benchmark results as data: the committed results page is what `nextbuy bench report`
renders from benchmarks/results/, every result file carries its provenance, and files of
unknown layout are still shown."""

from __future__ import annotations

import json
import os
import sys

from typer.testing import CliRunner

from nextbuy.bench import figures, report
from nextbuy.cli import app
from tests.conftest import ROOT


def test_committed_results_page_and_pictures_are_what_the_report_renders():
    page = ROOT / report.PAGE
    assert page.exists(), "run `nextbuy bench report`"
    assert report.stale(ROOT) == [], "stale: run `nextbuy bench report`"


def test_the_page_shows_at_least_six_pictures_each_with_alt_text_saying_what_it_shows():
    text, drawn = report.build(ROOT)
    assert len(drawn) >= 6
    for picture in drawn:
        assert f"![{picture.alt}](images/{picture.file})" in text
        assert len(picture.alt.split()) >= 8, picture.alt
        assert picture.svg.startswith("<?xml")
        assert "<dc:date>" not in picture.svg  # stable bytes


def test_every_result_file_records_where_it_came_from():
    results = report.load_results(ROOT)
    assert "external_dirlinkbench_blade" in results
    for name, result in results.items():
        missing = [key for key in report.PROVENANCE if key not in result]
        assert not missing, f"{name}.json lacks {missing}"


def test_external_check_renders_the_paired_figures():
    page = report.render(ROOT)
    assert "94.2 ± 0.6" in page
    assert "−0.4 [−1.6, +0.7]" in page
    assert "−3.5 [−5.2, −1.8]" in page
    assert "0.911" in page
    assert "+5.9 to +12.5" in page


def test_any_subset_of_files_renders_and_unknown_ones_are_listed(tmp_path):
    assert "No result files" in report.render(tmp_path)
    folder = tmp_path / report.RESULTS_DIR
    folder.mkdir(parents=True)
    unknown = {key: None for key in report.PROVENANCE} | {"date": "2026-01-02", "gate": {"passed": 3}}
    (folder / "demo_bench.json").write_text(json.dumps(unknown))
    page = report.render(tmp_path)
    assert "demo_bench.json" in page
    assert "| `gate.passed` | 3 |" in page
    assert report.write(tmp_path)
    assert not report.write(tmp_path)


def test_record_adds_provenance_to_the_bench_json(tmp_path):
    out = tmp_path / "b.json"
    code = f"import json; json.dump({{'auc': 0.7}}, open({str(out)!r}, 'w'))"
    path = report.record("demo", [sys.executable, "-c", code, "--out", str(out)], tmp_path)
    result = json.loads(path.read_text())
    assert result["auc"] == 0.7
    assert result["wall_seconds"] >= 0
    assert result["peak_memory_mb"] > 0
    assert set(report.PROVENANCE) <= set(result)


def test_a_bench_json_does_not_replace_the_provenance_of_its_record(tmp_path):
    out = tmp_path / "b.json"
    code = f"import json; json.dump({{'machine': 'x86_64', 'auc': 0.7}}, open({str(out)!r}, 'w'))"
    path = report.record("demo", [sys.executable, "-c", code, "--out", str(out)], tmp_path)
    result = json.loads(path.read_text())
    assert result["machine"] == report.machine_description()
    assert result["auc"] == 0.7
    assert list(result)[: len(report.PROVENANCE)] == list(report.PROVENANCE)


def test_a_failed_bench_is_not_recorded_and_the_command_says_so(tmp_path):
    out = tmp_path / "b.json"
    code = f"import json, sys; json.dump({{'auc': 0.7}}, open({str(out)!r}, 'w')); sys.exit(3)"
    bench = [sys.executable, "-c", code, "--out", str(out)]
    result = CliRunner().invoke(app, ["bench", "record", "demo", "--root", str(tmp_path), "--", *bench])
    assert result.exit_code == 1
    assert "exited 3: nothing recorded" in result.output
    assert not (tmp_path / report.RESULTS_DIR / "demo.json").exists()


def test_the_daily_loop_renders_each_candidates_verdict_against_the_champion():
    page = report.render(ROOT)
    assert "## The daily loop: next-day candidates against the champion" in page
    result = json.loads((ROOT / "benchmarks" / "results" / "daily_loop.json").read_text())
    for c in result["candidates"]:
        assert f"{c['candidate']['auc']:.4f}" in page
    assert "| shuffled labels | refused |" in page


def test_the_engines_result_says_whether_spark_met_its_goal_and_where_pandas_stopped_fitting():
    result = {
        "sizes": [1_000_000, 100_000_000],
        "cap_gib": 12,
        "goal_process_gib": 8.0,
        "spark_largest_completed": True,
        "spark_largest_process_gib": 5.31,
        "pandas_first_not_fitting": {"ingest": 100_000_000, "batch_topk": None},
        "runs": [{"impressions": 100_000_000, "engine": "spark", "stage": "ingest", "stage_s": 9.0}],
    }
    lines = report.render_engines("engines", result)
    assert "| goal: Spark at 100,000,000 impressions, no process above 8 GiB | |" in lines
    assert "| Spark completed every stage | yes |" in lines
    assert "| its largest process GiB | 5.31 |" in lines
    assert "| pandas first passed the 12 GiB cap | ingest at 100,000,000 |" in lines
    missed = report.render_engines(
        "engines", result | {"spark_largest_completed": False, "pandas_first_not_fitting": {}}
    )
    assert "| Spark completed every stage | no |" in missed
    assert "| pandas first passed the 12 GiB cap | every size fitted |" in missed


def test_the_events_scale_result_renders_one_row_per_size_failed_ones_too():
    result = {
        "rules": {"graph_window_days": 30, "attribution_days": 30},
        "sizes": [
            {
                "orders": 1_000_000,
                "impressions": 5_000_000,
                "interactions": 700_000,
                "edges": 499_739,
                "conversions_attributed": 174_857,
                "build_s": 26.62,
                "inputs_gib": 0.225,
                "peak_rss_gib": 0.81,
            },
            {"orders": 10_000_000, "impressions": 50_000_000, "failed": "exit -9"},
        ],
    }
    lines = report.render_events_scale("events_scale", result)
    assert "| 1,000,000 | 5,000,000 | 700,000 | 499,739 | 174,857 | 26.6 | 0.23 | 0.81 |" in lines
    assert "| 10,000,000 | 50,000,000 | failed: exit -9 | | | | | |" in lines
    assert "`attribution_days` 30" in lines[0]


def test_a_stack_check_result_renders_its_step_and_training_task_times(tmp_path):
    folder = tmp_path / report.RESULTS_DIR
    folder.mkdir(parents=True)
    result = {key: None for key in report.PROVENANCE} | {
        "date": "2026-11-29",
        "image_size_gib": 2.1,
        "training_tasks_s": {"ingest": 41.5, "train": 2160.0},
        "steps_s": {"build": 64.2, "nextbuy_training on Celery": 2301.7, "down -v": 12.0},
        "total_s": 2448.3,
        "failed": None,
    }
    (folder / "stack_check.json").write_text(json.dumps(result))
    page = report.render(tmp_path)
    assert "## The team stack end to end (make stack-check)" in page
    assert "passed; project image 2.1 GiB" in page
    assert "| nextbuy_training on Celery | 2301.7 |" in page
    assert "| **in all** | 2448.3 |" in page
    assert "| `train` | 2160 |" in page


def test_a_recorded_command_names_no_checkout_path(tmp_path):
    from nextbuy.bench.report import portable_command

    argv = [
        str(tmp_path / ".venv/bin/nextbuy"),
        "bench",
        "serve",
        "--out",
        str(tmp_path / "s.json"),
        "--x",
        "/tmp",
    ]
    assert portable_command(argv, tmp_path) == "nextbuy bench serve --out s.json --x /tmp"


def _spread(mean: float) -> dict:
    return {"mean": mean, "std": 0.001}


def test_a_real_stores_ranking_renders_every_method_and_says_whether_blade_fell_below_the_best():
    metrics = ("hits@10", "hits@20", "ndcg@10", "mrr", "direction")
    methods = {
        m: {k: _spread(v) for k in metrics}
        for m, v in (("co_purchase", 0.05), ("blade", 0.04), ("served", 0.05))
    }
    gap = {"mean": -0.01, "ci95": [-0.02, -0.005]}
    level = {"mean": 0.0, "ci95": [-0.003, 0.003]}
    result = {
        "seeds": 5,
        "methods": methods,
        "best_baseline": "co_purchase",
        "paired_blade_minus": {k: {"co_purchase": gap} for k in metrics},
        "pairs_blade_minus_best": {
            k: {"baseline": "co_purchase", "mean": -0.01, "ci95": [-0.012, -0.008]} for k in metrics[:4]
        },
        "blade_below_best_baseline_on": ["hits@10", "hits@20"],
        "blade_below_best_baseline_beyond_ci": True,
        "paired_served_minus": {k: {"co_purchase": level} for k in metrics},
        "pairs_served_minus_best": {k: {"baseline": "co_purchase"} | level for k in metrics[:4]},
        "served_below_best_baseline_on": [],
        "served_below_best_baseline_beyond_ci": False,
        "served_ranking_per_seed": ["co_purchase"] * 4 + ["model"],
        "served_prior_per_seed": [30.0] * 4 + [0.0],
        "data": {
            "store": "online-retail",
            "snapshot": "2011-09-01",
            "exposures": "replayed",
            "test_pairs": 20000,
            "horizon_days": 30,
            "products": 3646,
        },
    }
    title, renderer = report.layout("real_ranking_online_retail")
    assert title.endswith("online retail")
    text = "\n".join(renderer("real_ranking_online_retail", result))
    assert "| `blade` | 0.040 ± 0.001" in text
    assert "exposures **replayed**" in text
    assert "| hits@20 | `co_purchase` | -0.0100 | [-0.0200, -0.0050] | [-0.0120, -0.0080] |" in text
    assert (
        "BLADE below the best baseline beyond its CI (over test pairs): **yes**, on hits@10, hits@20" in text
    )
    assert "The served order below the best baseline beyond its CI (over test pairs): **no**" in text
    assert "`co_purchase` 4, `model` 1" in text
    assert "pseudo-counts: 30, 30, 30, 30, 0" in text


def test_a_real_stores_months_render_alerts_beside_the_naive_positivitys():
    result = {
        "months": [
            {
                "month": "2011-11",
                "windows": 4,
                "exposures": 9000,
                "predicted": 0.05,
                "estimated": 0.06,
                "naive": 0.04,
                "alerts": 2,
                "naive_alerts": 5,
            }
        ],
        "alerts": 2,
        "naive_alerts": 5,
        "model_version": "2",
        "data": {"store": "online-retail", "snapshot": "2011-09-01", "exposures": "replayed"},
    }
    text = "\n".join(report.layout("real_monitor_online_retail")[1]("real_monitor_online_retail", result))
    assert "| 2011-11 | 4 | 9,000 | 5.00% | 6.00% | 4.00% | 2 | 5 |" in text
    assert "2 alerts (naive positivity: 5)" in text


def test_record_all_reruns_each_files_own_command_a_stores_monitor_right_after_its_preset(tmp_path):
    folder = tmp_path / report.RESULTS_DIR
    folder.mkdir(parents=True)
    files = {
        "preset_shop": {"command": "nextbuy bench preset --preset presets/shop.yaml --out p.json"},
        "real_monitor_shop": {"command": "nextbuy bench real-monitor --store shop --out m.json"},
        "engines": {"command": "nextbuy bench engines --out e.json", "wall_seconds": 60.0},
        "real_delay_shop": {"command": "nextbuy bench real-delay --store shop --out d.json"},
        "stack_check": {"command": "python docker/stack_check.py --out s.json"},
        "external_check": {"command": None},
    }
    for name, result in files.items():
        (folder / f"{name}.json").write_text(json.dumps(result))
    plan, skipped = report.recordings(tmp_path)
    assert [r.name for r in plan] == ["engines", "preset_shop", "real_monitor_shop", "real_delay_shop"]
    assert plan[0].argv == ["nextbuy", "bench", "engines", "--out", "e.json"]
    assert plan[0].expected_s == 60.0
    assert set(skipped) == {"stack_check", "external_check"}


def test_a_delay_cost_inside_the_seed_noise_shows_no_recovered_share():
    """RI is a share of oracle − naive: where that gap is inside the seed spread the page says
    there was nothing to recover instead of printing a ratio of noise."""
    page = report.render(ROOT)
    section = page.split("{#real-delay-complete-journey}")[1].split("\n## ")[0]
    assert "| `importance` | 0.7908 ± 0.0005 | 0.2870 ± 0.0008 | none | none |" in section
    assert "RI (AUC and NLL): none, since oracle − naive (AUC -0.00018, NLL +0.00027)" in section


def test_scale_renders_a_row_per_size_with_the_skipped_size_and_its_reason():
    result = {
        "sizes": [
            {
                "n_products": 10000,
                "n_edges": 90000,
                "total_s": 20.0,
                "topk_all_s_extrapolated": 2.0,
                "peak_rss_gib": 0.8,
                "ingest_s": 1.0,
                "label_delay_s": 10.0,
                "train_epoch_s": 6.0,
                "export_s": 0.4,
                "calibrate_s": 0.3,
            },
            {"n_products": 1000000, "skipped": "estimated 192 min > budget 60 min"},
        ],
        "time_exponent": 1.03,
        "config": {
            "stage_keys_in_total": ["ingest_s"],
            "purchases_per_product": 24.0,
            "impressions_per_product": 30.0,
            "topk_sample_sources": 2000,
        },
    }
    page = "\n".join(report.render_scale("scale", result))
    assert "| 10,000 | 90,000 | 1.0 | 10.0 | 6.0 | 0.4 | 0.3 | 20.0 | 2.0 | 0.80 |" in page
    assert "| 1,000,000 | skipped: estimated 192 min > budget 60 min |" in page
    assert "| `time_exponent` | 1.03 |" in page
    assert [p.file for p in figures.pictures("scale", result)] == ["scale.svg"]


def test_model_renders_each_method_with_blades_paired_lead_and_its_ci():
    def row(auc: float) -> dict:
        return {
            "auc": auc,
            "pr_auc": 0.1,
            "nll": 0.14,
            "seeds": 5,
            "std": {"auc": 0.001, "pr_auc": 0.0, "nll": 0.0},
        }

    result = {
        "blade": row(0.727),
        "dual_mf": row(0.680),
        "paired_auc_gap_vs_blade": {"dual_mf": {"mean": 0.047, "ci95": [0.0435, 0.0511]}},
        "test_impressions": 23455,
    }
    page = "\n".join(report.render_model("model", result))
    assert "| `blade` | 5 | 0.7270 ± 0.0010 | 0.1000 ± 0.0000 | 0.1400 ± 0.0000 |  |" in page
    assert (
        "| `dual_mf` | 5 | 0.6800 ± 0.0010 | 0.1000 ± 0.0000 | 0.1400 ± 0.0000 | +0.0470 [+0.0435, +0.0511] |"
        in page
    )
    assert "23,455 impressions" in page


def test_record_keeps_the_json_files_the_bench_wrote_beside_its_own_in_that_run(tmp_path):
    """bench linkpred writes its paired CIs to FILE.paired.json: they are part of the result;
    a side file left by an earlier run is not."""
    out = tmp_path / "b.json"
    (tmp_path / "b.stale.json").write_text("{}")
    os.utime(tmp_path / "b.stale.json", (0, 0))
    code = (
        f"import json; json.dump({{'auc': 0.7}}, open({str(out)!r}, 'w')); "
        f"json.dump({{'gap': 1}}, open({str(tmp_path / 'b.paired.json')!r}, 'w'))"
    )
    result = json.loads(
        report.record("demo", [sys.executable, "-c", code, "--out", str(out)], tmp_path).read_text()
    )
    assert result["paired"] == {"gap": 1}
    assert "stale" not in result


def _with_std(**means: float) -> dict:
    return means | {"std": {m: 0.01 for m in means}, "seeds": 5}


def test_linkpred_renders_each_method_with_blades_paired_lead_in_points():
    result = {
        "blade": _with_std(**{"hits@20": 0.9, "mrr": 0.5, "direction_auc": 0.9, "lowdeg_hits@20": 0.7}),
        "gcn": _with_std(**{"hits@20": 0.8, "mrr": 0.4, "direction_auc": 0.5, "lowdeg_hits@20": 0.6}),
        "paired": {
            "hits@20": {"gcn": {"mean": 0.1, "ci95": [0.08, 0.12]}},
            "mrr": {"gcn": {"mean": 0.1, "ci95": [-0.01, 0.21]}},
            "direction_auc": {"gcn": {"mean": 0.4, "ci95": [0.39, 0.41]}},
        },
    }
    page = "\n".join(report.render_linkpred("linkpred", result))
    assert "| `blade` | 90.0 ± 1.0 | 50.0 ± 1.0 | 0.900 ± 0.010 | 70.0 ± 1.0 |" in page
    assert "| `gcn` | 80.0 ± 1.0 | 40.0 ± 1.0 | 0.500 ± 0.010 | 60.0 ± 1.0 |" in page
    assert "| `gcn` | +10.0 [+8.0, +12.0] | +10.0 [−1.0, +21.0] | +0.400 [+0.390, +0.410] |" in page
    assert page.index("`blade`") < page.index("`gcn`")  # by Hits@20
    assert "5 seeds" in page


def _weighting(auc: float, nll: float) -> dict:
    return _with_std(auc=auc, nll=nll, pr_auc=0.1, ece=0.01)


def _delay_result(oracle_auc: float) -> dict:
    return {
        "data": {"train_impressions": 7232, "share_of_positives_unseen": 0.516, "test_impressions": 40000},
        "naive": _weighting(0.70, 0.25),
        "importance": _weighting(0.72, 0.24),
        "oracle": _weighting(oracle_auc, 0.238),
        "gap_auc": oracle_auc - 0.70,
        "gap_auc_std": 0.005,
        "ri_auc": {"naive": 0.0, "importance": 0.8},
        "ri_nll": {"naive": 0.0, "importance": 0.83},
        "paired_vs_importance": {"nll": {"naive": {"mean": -0.01, "ci95": [-0.012, -0.008]}}},
        "flip_scores": {
            "importance": {
                "negatives": {"auc": 0.9, "nll": 0.07, "estimated_flips": 235.3, "flips": 226},
                "carted_negatives": {"auc": 0.64},
            }
        },
    }


def test_delay_renders_each_weighting_with_its_ri_where_delay_costs_beyond_the_noise():
    page = "\n".join(report.render_delay("delay", _delay_result(0.725)))
    figures_ = "0.7200 ± 0.0100 | 0.2400 ± 0.0100 | 0.1000 ± 0.0100 | 0.0100 ± 0.0100"
    assert f"| `importance` | {figures_} | 0.800 | 0.830 |  |" in page
    assert "| `naive` |" in page
    assert "−0.01000 [−0.01200, −0.00800]" in page
    assert "+0.0250 ± 0.0050: beyond the seed noise" in page
    assert "| `importance` | 0.900 | 0.0700 | 235 | 226 | 0.640 |" in page
    inside = "\n".join(report.render_delay("delay", _delay_result(0.702)))
    assert "inside the seed noise" in inside
    assert "| none |" in inside


def test_thresholds_render_each_estimators_error_tracking_and_its_gain_per_target():
    def row(lift: float, gain: float, feasible: bool = True) -> dict:
        return {
            "target_lift": lift,
            "gain": gain,
            "gain_ci_low": gain - 0.02,
            "gain_ci_high": gain + 0.02,
            "feasible": feasible,
        }

    result = {
        "seeds": 5,
        "test_impressions": 40000,
        "ensemble": [row(1.5, 0.05), row(3.0, 0.1, feasible=False)],
        "oracle_error": [row(1.5, 0.2), row(3.0, 0.3)],
        "coefficient": {
            m: {"mean": -0.1, "ci95_over_seeds": [-0.2, 0.0]} for m in ("ensemble", "oracle_error")
        },
        "error_rho": {"ensemble": {"mean": 0.2, "ci95_over_seeds": [0.1, 0.3]}},
    }
    page = "\n".join(report.render_thresholds("thresholds", result))
    assert "| `ensemble` | −0.100 [−0.200, +0.000] | +0.200 [+0.100, +0.300] |" in page
    assert "| 1.5 | +5.0 [+3.0, +7.0] % | +20.0 [+18.0, +22.0] % |" in page
    assert "| 3 | +10.0 [+8.0, +12.0] % (infeasible) | +30.0 [+28.0, +32.0] % |" in page
    (picture,) = figures.pictures("thresholds", result)
    for text in ("ensemble", "oracle_error", "precision target", "recall gain"):
        assert text in picture.svg, text
