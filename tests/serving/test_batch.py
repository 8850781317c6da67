"""Batch top-K: k rows per source, shards partition the catalogue, parquet parts readable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nextbuy.bench.serving_fixtures import load_bundle, write_bundle_files
from nextbuy.serving import batch
from nextbuy.serving.bundle import TOPK_COLUMNS

N = 40


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    files = write_bundle_files(tmp_path_factory.mktemp("bundle"), n_products=N, d=8, n_fit=4000)
    return load_bundle(files)


def read_shard(path) -> pd.DataFrame:
    parts = sorted(p for p in path.iterdir())
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def test_shards_partition_the_sources():
    shards = [batch.shard_sources(10, i, 3) for i in range(3)]
    assert [s.tolist() for s in shards] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert batch.shard_sources(10, 0, 1).tolist() == list(range(10))


@pytest.mark.parametrize(("shard", "num_shards"), [(3, 3), (-1, 2)])
def test_a_shard_outside_the_range_is_refused(shard, num_shards):
    with pytest.raises(ValueError, match="shard must be in"):
        batch.shard_sources(10, shard, num_shards)


def test_one_shard_writes_k_ranked_rows_for_every_source(bundle, tmp_path):
    result = batch.write_top_k(bundle, tmp_path, k=5, sources_per_file=16, progress=False)
    path = tmp_path / "shard=000"
    assert result == {"shard": 0, "num_shards": 1, "sources": N, "rows": 5 * N, "path": str(path)}
    assert sorted(p.name for p in path.iterdir()) == [f"part-{i:05d}.parquet" for i in range(3)]  # 16+16+8
    recs = read_shard(path)
    assert list(recs.columns) == list(TOPK_COLUMNS)
    assert len(recs) == 5 * N
    per_source = recs.groupby("source_id")
    assert (per_source.size() == 5).all()
    assert sorted(per_source.groups) == list(range(N))
    assert (per_source["rank"].apply(list) == pd.Series([[1, 2, 3, 4, 5]] * N)).all()
    assert (recs["source_id"] != recs["candidate_id"]).all()
    assert recs.groupby("source_id")["candidate_id"].nunique().eq(5).all()


def test_the_files_hold_what_the_bundle_answers(bundle, tmp_path):
    batch.write_top_k(bundle, tmp_path, k=3, sources_per_file=7, progress=False)
    recs = read_shard(tmp_path / "shard=000")
    pd.testing.assert_frame_equal(recs, bundle.top_k(np.arange(N), 3), check_dtype=False)


def test_shards_together_cover_each_source_exactly_once(bundle, tmp_path):
    results = [
        batch.write_top_k(bundle, tmp_path, 4, shard=i, num_shards=3, progress=False) for i in range(3)
    ]
    assert sum(r["sources"] for r in results) == N
    assert sum(r["rows"] for r in results) == 4 * N
    sources = [set(read_shard(tmp_path / f"shard={i:03d}")["source_id"]) for i in range(3)]
    assert set.union(*sources) == set(range(N))
    assert all(not (a & b) for i, a in enumerate(sources) for b in sources[i + 1 :])
    assert all(s % 3 == i for i, shard in enumerate(sources) for s in shard)


def test_a_shard_without_sources_is_complete_and_empty(bundle, tmp_path):
    result = batch.write_top_k(bundle, tmp_path, 3, shard=N, num_shards=N + 1, progress=False)
    assert result["sources"] == result["rows"] == 0
    assert list((tmp_path / f"shard={N:03d}").iterdir()) == []


def test_rewriting_a_shard_replaces_it_and_leaves_no_temporaries(bundle, tmp_path):
    batch.write_top_k(bundle, tmp_path, 2, sources_per_file=5, progress=False)  # 8 parts
    batch.write_top_k(bundle, tmp_path, 3, sources_per_file=N, progress=False)  # 1 part
    assert [p.name for p in tmp_path.iterdir()] == ["shard=000"]
    assert [p.name for p in (tmp_path / "shard=000").iterdir()] == ["part-00000.parquet"]
    assert len(read_shard(tmp_path / "shard=000")) == 3 * N


def test_a_bundle_with_retrieval_settings_writes_the_same_files(bundle, tmp_path):
    """What `nextbuy batch-topk` writes for a model registered with retrieval settings: the
    same columns, types and lists as the exact method's."""
    from tests.helpers import config

    fast = bundle.with_retrieval(config("deploy.retrieval", kind="flat", candidates=6))
    batch.write_top_k(fast, tmp_path / "fast", k=5, sources_per_file=16, progress=False)
    batch.write_top_k(bundle, tmp_path / "exact", k=5, sources_per_file=16, progress=False)
    got, want = (read_shard(tmp_path / name / "shard=000") for name in ("fast", "exact"))
    assert list(got.columns) == list(TOPK_COLUMNS)
    assert got.dtypes.to_dict() == want.dtypes.to_dict()
    same = ["source_id", "rank", "candidate_id", "bucket", "decision", "cold_start"]
    pd.testing.assert_frame_equal(got[same], want[same])
    # float32 scores summed in another order: equal to rounding (the calibration amplifies it).
    np.testing.assert_allclose(got[["score", "uncertainty"]], want[["score", "uncertainty"]], rtol=1e-5)
    np.testing.assert_allclose(got["prob_calibrated"], want["prob_calibrated"], atol=1e-3)
