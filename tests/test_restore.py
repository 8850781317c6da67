"""A failed stage's last good outputs come back from the DVC cache, as dvc.lock records them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from nextbuy.restore import restore_stage_outputs


def _cache_object(cache: Path, content: bytes) -> str:
    md5 = hashlib.md5(content).hexdigest()
    obj = cache / "files" / "md5" / md5[:2] / md5[2:]
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(content)
    return md5


def _project(root: Path, cache: Path) -> dict[str, bytes]:
    """A project whose `train` stage last wrote a metrics file and a two-file folder."""
    files = {
        "metrics/train.json": b'{"auc": 0.7}',
        "models/gnn/a.bin": b"\x00\x01",
        "models/gnn/sub/b.txt": b"b",
    }
    entries = [
        {"md5": _cache_object(cache, files[p]), "relpath": p.removeprefix("models/gnn/")}
        for p in ("models/gnn/a.bin", "models/gnn/sub/b.txt")
    ]
    manifest = json.dumps(entries).encode()
    dir_md5 = hashlib.md5(manifest).hexdigest() + ".dir"
    obj = cache / "files" / "md5" / dir_md5[:2] / dir_md5[2:]
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(manifest)
    lock = {
        "schema": "2.0",
        "stages": {
            "train": {
                "cmd": "nextbuy train",
                "outs": [
                    {
                        "path": "metrics/train.json",
                        "hash": "md5",
                        "md5": _cache_object(cache, files["metrics/train.json"]),
                    },
                    {"path": "models/gnn", "hash": "md5", "md5": dir_md5},
                    {"path": "plots/train/loss.csv", "hash": "md5", "md5": "0" * 32},  # never cached
                ],
            }
        },
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    (root / ".dvc").mkdir(exist_ok=True)
    return files


def test_deleted_and_half_written_outputs_come_back(tmp_path):
    files = _project(tmp_path, tmp_path / ".dvc" / "cache")
    (tmp_path / "models" / "gnn").mkdir(parents=True)
    (tmp_path / "models" / "gnn" / "a.bin").write_bytes(b"half a new model")  # a crash mid-write
    done = restore_stage_outputs("train", tmp_path)
    assert done == {"restored": ["metrics/train.json", "models/gnn"], "missing": ["plots/train/loss.csv"]}
    for path, content in files.items():
        assert (tmp_path / path).read_bytes() == content, path
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["gnn"]  # no staging folder left
    # Again: already in place, nothing changes.
    assert restore_stage_outputs("train", tmp_path)["restored"] == ["metrics/train.json", "models/gnn"]


def test_cache_dir_of_the_dvc_config_is_honoured(tmp_path):
    cache = tmp_path / "elsewhere" / "cache"
    files = _project(tmp_path, cache)
    (tmp_path / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {cache}\n")
    assert restore_stage_outputs("train", tmp_path)["restored"] == ["metrics/train.json", "models/gnn"]
    assert (tmp_path / "metrics" / "train.json").read_bytes() == files["metrics/train.json"]


def test_nothing_recorded_means_nothing_to_restore(tmp_path):
    assert restore_stage_outputs("train", tmp_path) == {"restored": [], "missing": []}
    _project(tmp_path, tmp_path / ".dvc" / "cache")
    assert restore_stage_outputs("deploy", tmp_path) == {"restored": [], "missing": []}
