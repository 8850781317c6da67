"""ingest stage: simulated default, real graphs, and bad input through the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from nextbuy import paths
from nextbuy.cli import app
from nextbuy.config import IngestConfig
from nextbuy.data import ingest_checks
from nextbuy.data.sources import read_npz_graph
from nextbuy.mlops import io, schemas
from nextbuy.stages import ingest


@pytest.fixture
def project(tmp_path, monkeypatch, tiny_params):
    """A working directory with tiny params, as DVC would run a stage in."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    (tmp_path / "inputs").mkdir()  # where a store's files go (dvc.yaml: ingest depends on it)
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_simulated_ingest_writes_valid_tables_and_metrics(project):
    result = invoke("ingest")
    assert result.exit_code == 0, result.output
    products = io.read_table(paths.PRODUCTS, schemas.PRODUCTS)
    impressions = io.read_table(paths.IMPRESSIONS, schemas.IMPRESSIONS)
    io.read_table(paths.TRUTH_IMPRESSIONS, schemas.TRUTH_IMPRESSIONS)
    metrics = json.loads(paths.metrics_file("ingest").read_text())
    assert metrics["products"] == len(products) == 300
    # The simulated store has no features of its own: an (n, 0) matrix, so the out exists.
    assert io.read_sparse(paths.FEATURES, n_rows=len(products)).shape == (300, 0)
    assert metrics["feature_columns"] == 0
    assert set(impressions["split"]) == {"train", "calib", "test"}
    # Splits hold out sessions (source x day): interleaved in time, every split up to the snapshot.
    day = impressions["shown_at"].dt.floor("D")
    assert (impressions.groupby([impressions["source_id"], day])["split"].nunique() == 1).all()
    snapshot = pd.Timestamp(json.loads(paths.INGEST_META.read_text())["snapshot"])
    last_day = impressions["shown_at"] >= snapshot - pd.Timedelta(days=1)
    assert set(impressions.loc[last_day, "split"]) == {"train", "calib", "test"}
    assert (impressions["converted_at"].dropna() <= snapshot).all()
    # The training tables do not carry any ground truth column.
    assert not {"p_convert", "label_eventual", "delay_days"} & set(impressions.columns)


def test_split_holds_out_sessions_by_their_key():
    from nextbuy.config import SplitConfig

    keys = pd.Series([f"sku-{i % 5000}" for i in range(20_000)])
    shown = pd.Series(pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(20_000) // 5000, unit="D"))
    cfg = SplitConfig(calib_share=0.2, test_share=0.1, seed=0)
    split = ingest_checks.assign_split(keys, shown, cfg)
    shares = pd.Series(split).value_counts(normalize=True)
    assert shares["test"] == pytest.approx(0.1, abs=0.01)
    assert shares["calib"] == pytest.approx(0.2, abs=0.01)
    # A session (source x day) stays together; one source spreads over splits across days.
    sessions = pd.DataFrame({"key": keys, "day": shown, "split": split})
    assert (sessions.groupby(["key", "day"])["split"].nunique() == 1).all()
    assert (sessions.groupby("key")["split"].nunique() > 1).mean() > 0.3
    # Row order does not decide; the seed reshuffles.
    reversed_split = ingest_checks.assign_split(keys.iloc[::-1], shown.iloc[::-1], cfg)
    assert (reversed_split[::-1] == split).all()
    other_seed = SplitConfig(calib_share=0.2, test_share=0.1, seed=1)
    assert (ingest_checks.assign_split(keys, shown, other_seed) != split).mean() > 0.2


def test_ingest_is_deterministic(project, tiny_params):
    cfg = IngestConfig.model_validate(tiny_params["ingest"])
    a, b = ingest.ingest(cfg), ingest.ingest(cfg)
    pd.testing.assert_frame_equal(a.impressions, b.impressions)
    pd.testing.assert_frame_equal(a.edges, b.edges)


def write_edge_list(path, rows):
    pd.DataFrame(rows, columns=["src", "dst"]).to_csv(path, index=False)


def use_source(project, tiny_params, **ingest_params):
    tiny_params["ingest"].update(ingest_params)
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params))


LOG_END = pd.Timestamp("2026-03-01")


def random_log(n: int, first_id: int, end_id: int) -> pd.DataFrame:
    """``n`` impressions of product ids ``first_id`` to ``end_id - 1`` (text, as a store's keys)
    over the 20 days before ``LOG_END``, none converted."""
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "source_id": rng.integers(first_id, end_id, n).astype(str),
            "shown_id": rng.integers(first_id, end_id, n).astype(str),
            "shown_at": LOG_END - pd.to_timedelta(rng.uniform(0, 20, n), unit="D"),
            "converted_at": pd.NaT,
        }
    )


def use_graph_and_log(project, tiny_params, log: pd.DataFrame, **ingest_params) -> None:
    """``log`` as inputs/log.parquet, and ingest's source the edge list inputs/graph.csv with it."""
    log.to_parquet(project / "inputs" / "log.parquet")
    use_source(
        project,
        tiny_params,
        source="edge_list",
        graph_path="inputs/graph.csv",
        impressions_path="inputs/log.parquet",
        **ingest_params,
    )


def test_real_edge_list_is_cleaned_counted_and_gets_simulated_impressions(project, tiny_params):
    rng = np.random.default_rng(0)
    rows = [*rng.integers(0, 200, size=(3000, 2)).tolist(), [5, 5], [7, 7], [1, 2], [1, 2]]
    write_edge_list(project / "inputs" / "graph.csv", rows)
    use_source(project, tiny_params, source="edge_list", graph_path="inputs/graph.csv")
    result = invoke("ingest")
    assert result.exit_code == 0, result.output
    metrics = json.loads(paths.metrics_file("ingest").read_text())
    assert metrics["cleaning"]["self_loops_dropped"] >= 2
    assert metrics["cleaning"]["duplicate_edges_merged"] >= 1
    edges = io.read_table(paths.EDGES, schemas.EDGES)
    assert (edges["src"] != edges["dst"]).all()
    n = len(io.read_table(paths.PRODUCTS, schemas.PRODUCTS))
    assert io.read_sparse(paths.FEATURES).shape == (n, 0)


def clean_edge_rows(n_nodes: int = 200, n_rows: int = 3000, seed: int = 0) -> list[list[int]]:
    """Distinct src->dst pairs without self-loops: nothing for ingest to clean."""
    rng = np.random.default_rng(seed)
    pairs = rng.integers(0, n_nodes, size=(n_rows, 2))
    pairs = np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0)
    return pairs.tolist()


@pytest.mark.parametrize(
    ("extra", "warned"),
    [
        ([], None),  # clean: rows_read/edges_kept/products are sizes, not cleaning
        ([[5, 5]], "self_loops_dropped=1"),
        ([[1, 2], [1, 2]], "duplicate_edges_merged="),
    ],
)
def test_cleaning_warning_only_when_rows_were_dropped_or_merged(project, tiny_params, caplog, extra, warned):
    write_edge_list(project / "inputs" / "graph.csv", clean_edge_rows() + extra)
    use_source(project, tiny_params, source="edge_list", graph_path="inputs/graph.csv")
    with caplog.at_level("WARNING", logger="nextbuy"):
        metrics = ingest.run("params.yaml")
    cleaned = [r.getMessage() for r in caplog.records if r.name == ingest.log.name]
    if warned is None:
        assert cleaned == [], cleaned
        assert metrics["cleaning"]["rows_read"] == metrics["cleaning"]["edges_kept"] > 0
        assert not any(r.levelname == "WARNING" for r in caplog.records), caplog.text
    else:
        assert len(cleaned) == 1
        assert warned in cleaned[0]
        assert "graph.csv" in cleaned[0]
        assert not any(size in cleaned[0] for size in ("rows_read", "edges_kept", "products"))


def test_cleaning_changes_keep_only_nonzero_drops_and_merges():
    counts = {"rows_read": 9, "self_loops_dropped": 0, "duplicate_edges_merged": 2, "edges_kept": 7}
    assert ingest.cleaning_changes(counts | {"explicit_zeros_dropped": 1, "products": 5}) == {
        "duplicate_edges_merged": 2,
        "explicit_zeros_dropped": 1,
    }
    assert ingest.cleaning_changes({"rows_read": 9, "edges_kept": 9, "products": 4}) == {}


def test_cora_ml_with_simulated_impressions(project, tiny_params, cora_npz):
    shutil.copy(cora_npz, project / "inputs" / cora_npz.name)
    use_source(project, tiny_params, source="npz", graph_path=f"inputs/{cora_npz.name}")
    result = invoke("ingest")
    assert result.exit_code == 0, result.output
    assert json.loads(paths.metrics_file("ingest").read_text())["products"] == 2995
    # Its bag-of-words, rows in product_id order (node i of the file is product i).
    features = io.read_sparse(paths.FEATURES, n_rows=2995)
    assert features.shape == (2995, 2879)
    np.testing.assert_array_equal(features.toarray(), read_npz_graph(cora_npz).features.toarray())


@pytest.mark.parametrize(
    ("content", "column"),
    [
        ("src,dst\n1,2\n,3\n4,5\n", "src"),  # NaN id
        ("source,dst\n1,2\n", "src"),  # missing column
        ("", None),  # empty file
    ],
)
def test_bad_graph_exits_nonzero_names_file_column_and_keeps_outputs(project, tiny_params, content, column):
    assert invoke("ingest").exit_code == 0  # earlier good outputs
    before = {
        p: p.read_bytes()
        for p in (paths.PRODUCTS, paths.EDGES, paths.IMPRESSIONS, paths.metrics_file("ingest"))
    }
    (project / "inputs" / "bad.csv").write_text(content)
    use_source(project, tiny_params, source="edge_list", graph_path="inputs/bad.csv")
    result = invoke("ingest")
    assert result.exit_code == 2
    assert "bad.csv" in result.output
    if column:
        assert f"'{column}'" in result.output
    assert {p: p.read_bytes() for p in before} == before


@pytest.mark.parametrize(
    ("rows", "sizes"),
    [
        ([[1, 2]], "2 product(s) and 1 edge(s)"),  # a one-edge graph
        ([[i, i + 1] for i in range(4)] + [[9, 9]] * 3, "6 product(s) and 4 edge(s)"),  # loops dropped
        ([[i, (i + 1) % 10] for i in range(9)], "10 product(s) and 9 edge(s)"),
    ],
)
def test_graph_too_small_to_train_on_is_refused(project, tiny_params, rows, sizes):
    write_edge_list(project / "inputs" / "tiny.csv", rows)
    use_source(project, tiny_params, source="edge_list", graph_path="inputs/tiny.csv")
    result = invoke("ingest")
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())  # the CLI wraps long lines
    assert "tiny.csv" in output
    assert "too small to train on" in output
    assert sizes in output
    floor = ingest_checks.MIN_GRAPH_PRODUCTS, ingest_checks.MIN_GRAPH_EDGES
    assert "at least {} products and {} edges".format(*floor) in output
    assert not paths.PRODUCTS.exists()  # nothing written


def test_graph_of_the_minimum_size_is_accepted():
    rows = [[i, (i + 1) % ingest_checks.MIN_GRAPH_PRODUCTS] for i in range(ingest_checks.MIN_GRAPH_EDGES)]
    assert len({node for row in rows for node in row}) == ingest_checks.MIN_GRAPH_PRODUCTS
    graph = pd.DataFrame(rows, columns=["src", "dst"])
    products = pd.DataFrame(
        {
            "product_id": np.arange(10, dtype=np.int64),
            "product_key": [str(i) for i in range(10)],
            "category": np.full(10, -1, dtype=np.int64),
            "price": np.full(10, np.nan),
        }
    )
    edges = graph.assign(weight=1.0, time=pd.NaT).astype({"time": "datetime64[ns]"})
    ingest_checks.check_graph_size(products, edges, "graph.csv")  # no error
    with pytest.raises(io.DataError, match=r"graph.csv: graph too small"):
        ingest_checks.check_graph_size(products, edges.iloc[1:], "graph.csv")


def test_graph_censored_below_the_minimum_by_the_snapshot_is_refused(project, tiny_params):
    # 12 edges, but only 3 seen by the impressions' snapshot: the model would train on those.
    t = LOG_END
    edges = pd.DataFrame(
        {
            "src": list(range(12)),
            "dst": [(i + 1) % 12 for i in range(12)],
            "time": [t - pd.Timedelta(days=1)] * 3 + [t + pd.Timedelta(days=30)] * 9,
        }
    )
    edges.to_csv(project / "inputs" / "graph.csv", index=False)
    use_graph_and_log(project, tiny_params, random_log(3000, 0, 12))
    result = invoke("ingest")
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert "graph.csv" in output
    assert "12 product(s) and 3 edge(s)" in output


def test_bad_impressions_log_is_refused(project, tiny_params):
    write_edge_list(project / "inputs" / "graph.csv", [[1, 2], [2, 3], [3, 1], [4, 1]])
    t = pd.Timestamp("2026-03-01")
    log = pd.DataFrame(
        {
            "source_id": ["1", "2", "99"],
            "shown_id": ["2", "3", "1"],
            "shown_at": [t, t, t],
            "clicked_at": [pd.NaT] * 3,
            "carted_at": [pd.NaT] * 3,
            "converted_at": [t + pd.Timedelta(days=1), t - pd.Timedelta(days=1), pd.NaT],
        }
    )
    use_graph_and_log(project, tiny_params, log)
    result = invoke("ingest")
    assert result.exit_code == 2
    assert "log.parquet" in result.output
    assert "'source_id'" in result.output or "'converted_at'" in result.output


def test_click_after_conversion_is_refused(project, tiny_params):
    write_edge_list(project / "inputs" / "graph.csv", [[1, 2], [2, 3], [3, 1], [4, 1]])
    t = pd.Timestamp("2026-03-01")
    log = pd.DataFrame(
        {
            "source_id": ["1", "2"],
            "shown_id": ["2", "3"],
            "shown_at": [t, t],
            "clicked_at": [t + pd.Timedelta(hours=1), t + pd.Timedelta(days=2)],
            "carted_at": [pd.NaT, pd.NaT],
            "converted_at": [t + pd.Timedelta(days=1), t + pd.Timedelta(days=1)],
        }
    )
    use_graph_and_log(project, tiny_params, log)
    result = invoke("ingest")
    assert result.exit_code == 2
    assert "log.parquet" in result.output
    assert "'clicked_at'" in result.output
    assert "after converted_at" in result.output


def test_snapshot_param_moves_the_history(tiny_params):
    cfg = IngestConfig.model_validate({**tiny_params["ingest"], "snapshot": "2026-05-10"})
    data = ingest.ingest(cfg)
    assert data.snapshot == pd.Timestamp("2026-05-10")
    assert data.impressions["shown_at"].max() < data.snapshot
    assert (data.impressions["converted_at"].dropna() <= data.snapshot).all()


def test_garbage_snapshot_exits_2_naming_the_key(project, tiny_params):
    use_source(project, tiny_params, snapshot="not a date")
    result = invoke("ingest")
    assert result.exit_code == 2, result.output
    assert "ingest.snapshot='not a date' is not a date" in result.output
    assert "Traceback" not in result.output


def test_a_real_file_outside_inputs_is_refused_as_dvc_would_not_see_it_change(project, tiny_params):
    write_edge_list(project / "graph.csv", [[1, 2], [2, 3]])
    use_source(project, tiny_params, source="edge_list", graph_path="graph.csv")
    result = invoke("ingest")
    assert result.exit_code == 2
    assert "ingest.graph_path: outside inputs/" in result.output
    assert "set ingest.graph_path: inputs/graph.csv" in result.output
    assert not paths.PRODUCTS.exists()


def _log_with_one_row_at(project, tiny_params, when: pd.Timestamp, snapshot: str | None) -> None:
    write_edge_list(project / "inputs" / "graph.csv", clean_edge_rows())
    log = random_log(2000, 1, 12)
    log.loc[7, "shown_at"] = when
    use_graph_and_log(project, tiny_params, log, snapshot=snapshot)


def test_an_impression_after_the_wall_clock_is_refused_before_it_moves_the_snapshot(project, tiny_params):
    _log_with_one_row_at(project, tiny_params, pd.Timestamp("2099-01-01"), snapshot=None)
    result = invoke("ingest")
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "log.parquet" in output
    assert "'shown_at'" in output
    assert "1 row(s) lie after now" in output
    assert "2099-01-01" in output
    assert not paths.PRODUCTS.exists()


def test_impressions_after_an_explicit_snapshot_are_counted_and_warned(project, tiny_params, caplog):
    _log_with_one_row_at(project, tiny_params, pd.Timestamp("2026-03-05"), snapshot="2026-03-02")
    result = invoke("ingest")
    assert result.exit_code == 0, result.output
    metrics = json.loads(paths.metrics_file("ingest").read_text())
    assert metrics["cleaning"]["impressions_after_snapshot_dropped"] == 1
    assert "impressions_after_snapshot_dropped=1" in result.output + caplog.text


def _read_store_logs(project, tiny_params) -> None:
    """params.yaml: ingest reads the CSV logs ``simulate-logs`` wrote to inputs/store."""
    events = {f"{n}_path": f"inputs/store/{n}.csv" for n in ("orders", "impressions", "interactions")}
    tiny_params["ingest"] |= {
        "source": "events",
        "catalogue_path": "inputs/store/catalogue.csv",
        "events": tiny_params["ingest"]["events"] | events,
    }
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params))


def test_raw_logs_ingest_counts_what_was_cleaned_and_keeps_data_truth_a_typed_empty_table(
    project, tiny_params, caplog
):
    """`ingest.source: events`: the graph and labels come from the logs; a repeated order line is
    cleaned and counted; data/truth holds empty tables (no empty DVC out, no ground truth)."""
    written = invoke("simulate-logs", "inputs/store", "--days-after", "0", "--format", "csv")
    assert written.exit_code == 0, written.output
    orders = pd.read_csv(project / "inputs/store/orders.csv")
    pd.concat([orders, orders.iloc[:3]]).to_csv(project / "inputs/store/orders.csv", index=False)
    _read_store_logs(project, tiny_params)
    result = invoke("ingest")
    assert result.exit_code == 0, result.output
    assert "orders_duplicate_rows_dropped=3" in caplog.text
    metrics = json.loads(paths.metrics_file("ingest").read_text())
    assert metrics["cleaning"]["orders_duplicate_rows_dropped"] == 3
    assert metrics["products"] == 300
    assert metrics["edges"] == metrics["cleaning"]["edges_kept"] > 0
    for table in (paths.TRUTH_IMPRESSIONS, paths.TRUTH_PRODUCTS):
        assert pd.read_parquet(table).empty
    assert json.loads(paths.INGEST_META.read_text())["source"] == "events"


def _ingested_files(root) -> dict[str, bytes]:
    folder = root / "data" / "ingested"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_interactions_of_customers_never_shown_anything_are_counted_and_change_nothing_training_reads(
    project, tiny_params, caplog
):
    """They label no impression: dropped with a count, and data/ingested (what every later stage
    reads) stays byte for byte what it was, so nothing downstream runs again."""
    assert invoke("simulate-logs", "inputs/store", "--days-after", "0", "--format", "csv").exit_code == 0
    _read_store_logs(project, tiny_params)
    assert invoke("ingest").exit_code == 0
    before = _ingested_files(project)
    interactions = pd.read_csv(project / "inputs/store/interactions.csv")
    ghost = interactions.iloc[:4].assign(customer="never-shown")
    pd.concat([interactions, ghost]).to_csv(project / "inputs/store/interactions.csv", index=False)
    result = invoke("ingest")
    assert result.exit_code == 0, result.output
    assert "dropped 4 interaction(s) of 1 customer(s) never shown" in caplog.text
    metrics = json.loads(paths.metrics_file("ingest").read_text())
    assert metrics["cleaning"]["interactions_of_customers_never_shown_dropped"] == 4
    assert _ingested_files(project) == before


def test_raw_logs_outside_inputs_are_refused_naming_the_key(project, tiny_params):
    events = tiny_params["ingest"]["events"] | {
        "orders_path": "orders.csv",
        "impressions_path": "inputs/i.csv",
    }
    tiny_params["ingest"] |= {"source": "events", "events": events}
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    result = invoke("ingest")
    assert result.exit_code == 2
    assert "ingest.events.orders_path" in result.output


def test_a_catalogue_lets_an_impressions_log_show_products_with_no_edge(project, tiny_params):
    """Without a catalogue an edge list's products are its nodes only, and a log showing product
    777 (no edge) is refused; with the store's catalogue, 777 is a product like any other."""
    _log_with_one_row_at(project, tiny_params, pd.Timestamp("2026-02-20"), snapshot=None)
    log = pd.read_parquet(project / "inputs" / "log.parquet")
    log.loc[3, "shown_id"] = "777"
    log.to_parquet(project / "inputs" / "log.parquet")
    refused = invoke("ingest")
    assert refused.exit_code == 2
    assert "777" in refused.output
    keys = [str(k) for k in range(1000)]
    pd.DataFrame({"product": keys, "price": 10.0}).to_csv(project / "inputs" / "catalogue.csv", index=False)
    use_source(project, tiny_params, catalogue_path="inputs/catalogue.csv")
    result = invoke("ingest")
    assert result.exit_code == 0, result.output
    products = io.read_table(paths.PRODUCTS, schemas.PRODUCTS)
    assert len(products) == 1000
    assert (products["price"] == 10.0).all()
    impressions = io.read_table(paths.IMPRESSIONS, schemas.IMPRESSIONS)
    key = products.set_index("product_id")["product_key"]
    assert "777" in set(key[impressions["shown_id"]])
