"""Publishing a nightly batch: every shard checked complete, stale shard folders removed, then
the version's manifest and the ``_latest.json`` pointer, each replaced atomically (see
``nextbuy.orchestration.batch``). Standard library only at import time."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nextbuy.files import atomic_write_text
from nextbuy.orchestration.batch.layout import SHARD_DIR, BatchError, shard_dir
from nextbuy.orchestration.names import BATCH_MANIFEST, LATEST_POINTER

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


def _read_sources_and_ranks(folder: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    import numpy as np
    import pyarrow.parquet as pq

    parts = sorted(folder.glob("*.parquet"))
    tables = [pq.read_table(p, columns=["source_id", "rank"]) for p in parts]
    if not tables:
        return parts, np.empty(0, np.int64), np.empty(0, np.int64)
    src = np.concatenate([t.column("source_id").to_numpy() for t in tables])
    rank = np.concatenate([t.column("rank").to_numpy() for t in tables])
    return parts, src.astype(np.int64), rank.astype(np.int64)


def check_shards(folder: Path, num_shards: int, n_products: int, k: int) -> list[dict[str, Any]]:
    """Every shard folder of ``folder`` is there and holds one row per (source, rank 1..k)
    for exactly its sources (``id % num_shards == shard``): rows = n_products x k, every
    source once. Returns one summary per shard; a BatchError lists every problem."""
    import numpy as np

    problems, shards = [], []
    for shard in range(num_shards):
        path = shard_dir(folder, shard)
        expected = np.arange(shard, n_products, num_shards, dtype=np.int64)
        if not path.is_dir():
            problems.append(f"{path.name}: missing")
            continue
        try:
            parts, src, rank = _read_sources_and_ranks(path)
        except Exception as err:  # noqa: BLE001 - pyarrow raises several kinds on a damaged file
            problems.append(f"{path.name}: unreadable ({err})")
            continue
        want = expected.size * k
        if src.size != want:
            problems.append(f"{path.name}: {src.size} rows, expected {want} ({expected.size} sources x {k})")
        else:
            order = np.lexsort((rank, src))
            if not (
                np.array_equal(src[order], np.repeat(expected, k))
                and np.array_equal(rank[order], np.tile(np.arange(1, k + 1), expected.size))
            ):
                problems.append(
                    f"{path.name}: not one row per (source, rank 1..{k}) for the sources "
                    f"id % {num_shards} == {shard}"
                )
        shards.append(
            {"path": path.name, "files": len(parts), "sources": int(expected.size), "rows": int(src.size)}
        )
    if problems:
        raise BatchError(f"{folder}: incomplete batch, not published:\n" + "\n".join(problems))
    return shards


def stale_entries(folder: Path, num_shards: int) -> list[Path]:
    """What no reader should find next to this run's shards: shard folders past ``num_shards``
    (an earlier run of the same version split in more shards) and the temporary folders of
    killed attempts (``.shard=...``)."""
    if not Path(folder).is_dir():
        return []
    stale = []
    for entry in sorted(Path(folder).iterdir()):
        match = SHARD_DIR.fullmatch(entry.name)
        if (match and int(match.group(1)) >= num_shards) or entry.name.startswith(".shard="):
            stale.append(entry)
    return stale


def manifest(
    champion: Mapping[str, Any], shards: list[dict[str, Any]], run_id: str, dag_id: str, now: datetime
) -> dict[str, Any]:
    keys = ("model_name", "model_version", "model_uri", "n_products", "k", "k_per_source", "num_shards")
    return {
        **{key: champion[key] for key in keys},
        "rows": sum(s["rows"] for s in shards),
        "shards": shards,
        "created_at": now.astimezone(UTC).isoformat(timespec="seconds"),
        "dag_id": dag_id,
        "run_id": run_id,
    }


def _json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_manifest(folder: Path, content: Mapping[str, Any]) -> Path:
    path = Path(folder) / BATCH_MANIFEST
    atomic_write_text(path, _json(content))
    return path


def point_latest(root: Path, folder: Path, content: Mapping[str, Any]) -> Path:
    """``<root>/_latest.json`` := the version folder (relative to ``root``) and its manifest,
    replaced atomically: a reader sees the old pointer or the new one, never half of one."""
    folder = Path(folder)
    pointer = {"path": folder.name, "manifest": f"{folder.name}/{BATCH_MANIFEST}", **content}
    path = Path(root) / LATEST_POINTER
    atomic_write_text(path, _json(pointer))
    return path


def read_latest(root: Path) -> dict[str, Any] | None:
    """The pointer (None before the first publish); its ``path`` is relative to ``root``."""
    try:
        return json.loads((Path(root) / LATEST_POINTER).read_text())
    except FileNotFoundError:
        return None


def publish(
    champion: Mapping[str, Any], run_id: str, dag_id: str, now: datetime | None = None
) -> dict[str, Any]:
    """Check the shards, drop stale ones, write the version's manifest, then point
    ``_latest.json`` at it. Returns the manifest."""
    folder = Path(champion["out"])
    shards = check_shards(folder, champion["num_shards"], champion["n_products"], champion["k_per_source"])
    for entry in stale_entries(folder, champion["num_shards"]):
        log.info("removing %s (not part of this run's %d shards)", entry, champion["num_shards"])
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    content = manifest(champion, shards, run_id, dag_id, now or datetime.now(UTC))
    write_manifest(folder, content)
    point_latest(folder.parent, folder, content)
    return content
