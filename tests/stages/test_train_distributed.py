"""The train stage under torchrun's environment: two ranks train together and only rank 0 logs
and writes. Each rank runs in its own copy of the same inputs, so what rank 1 would have written
could not hide among rank 0's files."""

from __future__ import annotations

import json
import os
import shutil
import socket

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import yaml

from nextbuy import paths
from nextbuy.constants import WEIGHTING_METHODS
from nextbuy.domain import delay
from nextbuy.mlops import io, schemas

WORLD = 2
OUTPUTS = (paths.GNN_STATE, paths.GNN_MOMENTS, paths.GNN_META, paths.metrics_file("train"))


def _inputs(n: int = 60, rows: int = 1200, seed: int = 0) -> None:
    """What ingest and label_delay would leave in the working directory: a small store."""
    rng = np.random.default_rng(seed)
    products = pd.DataFrame({"product_id": np.arange(n), "product_key": [f"p{i}" for i in range(n)],
                             "category": rng.integers(0, 4, n), "price": rng.uniform(1, 50, n)})  # fmt: skip
    pairs = np.unique(rng.integers(0, n, (300, 2)), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    edges = pd.DataFrame({"src": pairs[:, 0], "dst": pairs[:, 1], "weight": 1.0, "time": pd.NaT})
    label = (rng.random(rows) < 0.2).astype(np.int8)
    elapsed = rng.uniform(0, 30, rows)
    weighted = pd.DataFrame(
        {
            "impression_id": np.arange(rows),
            "source_id": rng.integers(0, n, rows),
            "shown_id": rng.integers(0, n, rows),
            "shown_at": pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.uniform(0, 30, rows), unit="D"),
            "split": rng.choice(["train", "calib", "test"], rows, p=[0.7, 0.15, 0.15]),
            "label": label,
            "clicked": np.zeros(rows, np.int8),
            "carted": np.zeros(rows, np.int8),
            "engaged_days": np.zeros(rows),
            "engagement_lag": np.zeros(rows),
            "elapsed_days": elapsed,
            "delay_days": np.where(label == 1, elapsed * rng.uniform(0, 1, rows), np.nan),
            "p_flip": np.zeros(rows),
            **{f"target_{m}": label.astype(np.float64) for m in WEIGHTING_METHODS},
            **{f"weight_{m}": rng.uniform(0.5, 2.0, rows) for m in WEIGHTING_METHODS},
        }
    )
    io.write_table(products, paths.PRODUCTS, schemas.PRODUCTS)
    io.write_table(edges, paths.EDGES, schemas.EDGES)
    io.write_sparse(sp.random(n, 5, density=0.3, random_state=seed, format="csr"), paths.FEATURES)
    io.write_table(weighted, paths.WEIGHTED_IMPRESSIONS, schemas.WEIGHTED)
    fit_rows = weighted[weighted["split"] == "train"]
    io.write_json(delay.fit_delay_model(fit_rows, delay.ENGAGEMENT).to_dict(), paths.DELAY_MODEL)


def _rank_main(rank: int, port: int, root: str) -> None:
    """What torchrun starts: the stage, with RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous set."""
    from nextbuy.stages import train

    torch.set_num_threads(1)
    os.chdir(f"{root}/rank{rank}")
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_ARTIFACT_ROOT"):
        os.environ.pop(key, None)  # the project store: ./mlflow.db
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    returned = train.run("params.yaml")
    with open(f"{root}/returned{rank}.json", "w") as fh:
        json.dump(returned, fh, default=str)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_under_torchrun_two_ranks_train_and_only_rank_0_writes(tmp_path, monkeypatch, tiny_params):
    first = tmp_path / "rank0"
    first.mkdir()
    monkeypatch.chdir(first)
    small = {"distributed": True, "distributed_backend": "gloo", "epochs": 2, "ensemble_members": 2,
             "ensemble_epochs": 1, "batch_size": 128}  # fmt: skip
    params = {**tiny_params, "train": {**tiny_params["train"], **small}}
    (first / "params.yaml").write_text(yaml.safe_dump(params))
    _inputs()
    shutil.copytree(first, tmp_path / "rank1")
    inputs = _files(first)

    torch.multiprocessing.spawn(_rank_main, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)

    assert _files(tmp_path / "rank1") == inputs  # rank 1 trained, wrote nothing, logged nothing
    assert json.loads((tmp_path / "returned1.json").read_text()) == {}
    written = _files(first) - inputs
    assert {str(p) for p in OUTPUTS} <= written
    assert "mlflow.db" in written
    metrics = json.loads(paths.metrics_file("train").read_text())
    assert metrics == json.loads((tmp_path / "returned0.json").read_text())
    assert metrics["epochs_run"] >= 1
    assert np.isfinite(metrics["final_conv_loss"])
    moments = io.read_npz(paths.GNN_MOMENTS)
    assert moments["s_mean"].shape == (60, tiny_params["train"]["embedding_dim"])
