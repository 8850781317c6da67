"""The pictures of the results page, from result files of each kind: what they draw can be read
off the SVG (its text stays text), and a file drawn twice gives the same bytes."""

from __future__ import annotations

from nextbuy.bench import figures
from nextbuy.bench.serve import GOALS
from nextbuy.bench.serve_rest import latency_summary


def _serve_result() -> dict:
    def levels(scale: float) -> list[dict]:
        return [
            latency_summary([scale * c * (1 + i / 100) for i in range(100)], 0, 2.0, c) for c in (1, 4, 16)
        ]

    return {
        "load_workers": 2,
        "load_levels": levels(1.0),
        "load_levels_mlflow_path": levels(3.0),
        "goals": GOALS,
    }


def test_rest_latency_is_drawn_per_path_against_clients_with_its_goal():
    (picture,) = figures.pictures("serve", _serve_result())
    assert picture.file == "serve.svg"
    for text in ("nextbuy serve (pair fast path): p99", "through MLflow", "concurrent clients", "p99 goal"):
        assert text in picture.svg, text
    assert "2 server workers" in picture.alt
    assert figures.pictures("serve", _serve_result())[0].svg == picture.svg  # stable bytes


def _method(hits: float, seeds: int = 5) -> dict:
    metrics = {"hits@20": hits, "mrr": hits / 3, "direction_auc": 0.5 + hits / 4}
    return metrics | {"std": {m: 0.01 for m in metrics}, "seeds": seeds}


def test_linkpred_draws_every_method_with_its_spread_blade_marked():
    result = {"blade": _method(0.9), "dirgnn": _method(0.8), "adamic_adar": _method(0.5), "commit": "abc"}
    (picture,) = figures.pictures("linkpred_cora_ml", result)
    for text in ("blade", "dirgnn", "adamic_adar", "Hits@20 (mean ± std, 5 seeds)", "direction AUC"):
        assert text in picture.svg, text
    assert "#d62728" in picture.svg  # BLADE's points in red
    assert "abc" not in picture.svg  # provenance keys are no methods
