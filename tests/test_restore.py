"""A failed stage's last good outputs come back from the DVC cache, as dvc.lock records them."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nextbuy.files import unwritable
from nextbuy.restore import Restored, keep_new, put_back, restore_stage_outputs, set_aside


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
    assert done == Restored(("metrics/train.json", "models/gnn"), ("plots/train/loss.csv",))
    for path, content in files.items():
        assert (tmp_path / path).read_bytes() == content, path
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["gnn"]  # no staging folder left
    # Again: already in place, nothing changes.
    assert restore_stage_outputs("train", tmp_path).restored == ("metrics/train.json", "models/gnn")


def test_cache_dir_of_the_dvc_config_is_honoured(tmp_path):
    cache = tmp_path / "elsewhere" / "cache"
    files = _project(tmp_path, cache)
    (tmp_path / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {cache}\n")
    assert restore_stage_outputs("train", tmp_path).restored == ("metrics/train.json", "models/gnn")
    assert (tmp_path / "metrics" / "train.json").read_bytes() == files["metrics/train.json"]


def test_nothing_recorded_means_nothing_to_restore(tmp_path):
    assert restore_stage_outputs("train", tmp_path) == Restored()
    _project(tmp_path, tmp_path / ".dvc" / "cache")
    assert restore_stage_outputs("deploy", tmp_path) == Restored()


def test_restored_files_are_links_to_the_cache_that_stay_read_only(tmp_path):
    """On the cache's file system a restore needs no space: hard links, and the cache
    object keeps its read-only mode (nothing can write the cache through the link)."""
    cache = tmp_path / ".dvc" / "cache"
    _project(tmp_path, cache)
    for obj in cache.rglob("*"):
        if obj.is_file():
            obj.chmod(0o444)
    restore_stage_outputs("train", tmp_path)
    restored = tmp_path / "metrics" / "train.json"
    assert restored.stat().st_nlink == 2
    assert restored.stat().st_mode & 0o777 == 0o444


def _outputs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _last_good(root: Path) -> dict[str, bytes]:
    (root / "models" / "gnn").mkdir(parents=True)
    (root / "models" / "gnn" / "state.pt").write_bytes(b"old model" * 100)
    (root / "metrics").mkdir()
    (root / "metrics" / "train.json").write_text('{"auc": 0.7}')
    return _outputs(root)


OUTPUTS = ("models/gnn", "metrics/train.json", "plots/train/loss.csv")


def test_a_failed_stage_run_by_hand_gets_its_set_aside_outputs_back(tmp_path):
    before = _last_good(tmp_path)
    aside = set_aside(OUTPUTS, tmp_path)
    assert aside.moved == ("models/gnn", "metrics/train.json")
    assert not (tmp_path / "models" / "gnn").exists()  # nobody reads half-new outputs meanwhile
    (tmp_path / "models" / "gnn").mkdir()
    (tmp_path / "models" / "gnn" / "state.pt").write_bytes(b"half a new")  # then the stage fails
    (tmp_path / "plots" / "train").mkdir(parents=True)
    (tmp_path / "plots" / "train" / "loss.csv").write_text("epoch,loss\n")
    done = put_back(aside, "train")
    assert done.restored == ("models/gnn", "metrics/train.json")
    assert _outputs(tmp_path) == before  # the half-written plot is gone too


def test_a_successful_stage_drops_what_it_set_aside(tmp_path):
    _last_good(tmp_path)
    aside = set_aside(OUTPUTS, tmp_path)
    (tmp_path / "models" / "gnn").mkdir()
    (tmp_path / "models" / "gnn" / "state.pt").write_bytes(b"new")
    (tmp_path / "metrics" / "train.json").write_text("{}")
    keep_new(aside)
    assert _outputs(tmp_path) == {"metrics/train.json": b"{}", "models/gnn/state.pt": b"new"}


def test_the_next_run_removes_what_a_killed_run_left_and_keeps_its_last_good(tmp_path):
    before = _last_good(tmp_path)
    set_aside(OUTPUTS, tmp_path)  # then kill -9: no way to clean up
    (tmp_path / "models" / "gnn").mkdir()
    (tmp_path / "models" / "gnn" / "state.pt").write_bytes(b"half")
    (tmp_path / "metrics" / ".train.json.x1y2.tmp").write_text("{")
    (tmp_path / "models" / ".gnn.k3j4").mkdir()
    aside = set_aside(OUTPUTS, tmp_path)
    assert aside.swept == ("models/.gnn.k3j4", "models/gnn", "metrics/.train.json.x1y2.tmp")
    assert aside.moved == ("models/gnn", "metrics/train.json")
    put_back(aside, "train")
    assert _outputs(tmp_path) == before


@contextlib.contextmanager
def _small_filesystem(folder: Path, size: str, *options: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder`` (root only); the test is skipped where it
    cannot be mounted."""
    folder.mkdir(parents=True, exist_ok=True)
    opts = ",".join((f"size={size}", *options))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def _fill(path: Path) -> None:
    """Write ``path`` until the disk is full (a stage writing its new outputs)."""
    with path.open("wb") as f:
        while True:
            f.write(b"\x00" * 65536)
            f.flush()


def test_on_a_full_disk_a_stage_run_by_hand_keeps_its_last_good_outputs(tmp_path):
    with _small_filesystem(tmp_path / "data", "512k") as data:
        (data / "ingested").mkdir()
        (data / "ingested" / "products.parquet").write_bytes(b"p" * 200_000)
        (data / "ingested" / "meta.json").write_text('{"n": 1}')
        before = _outputs(data)
        aside = set_aside(["data/ingested"], tmp_path)
        (data / "ingested").mkdir()
        with pytest.raises(OSError, match="No space left") as full:
            _fill(data / "ingested" / "products.parquet")
        assert full.value.errno == errno.ENOSPC
        put_back(aside, "ingest")
        assert _outputs(data) == before
        assert sorted(p.name for p in data.iterdir()) == ["ingested"]  # no staging entry left


def test_on_a_full_disk_outputs_dvc_deleted_come_back_from_the_cache(tmp_path):
    """dvc repro deleted the outputs; the stage filled the disk. Its half-written outputs go
    first, which frees the space the copy from the cache (another file system) needs."""
    cache = tmp_path / ".dvc" / "cache"
    files = _project(tmp_path, cache)
    with _small_filesystem(tmp_path / "models", "256k"):
        aside = set_aside(["models/gnn"], tmp_path)
        (tmp_path / "models" / "gnn").mkdir()
        with pytest.raises(OSError, match="No space left"):
            _fill(tmp_path / "models" / "gnn" / "a.bin")
        done = put_back(aside, "train")
        assert done.restored == ("models/gnn",)
        assert (tmp_path / "models" / "gnn" / "a.bin").read_bytes() == files["models/gnn/a.bin"]
        assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["gnn"]


def test_a_read_only_folder_is_said_in_one_line(tmp_path):
    _project(tmp_path, tmp_path / ".dvc" / "cache")
    with (
        _small_filesystem(tmp_path / "models", "64k", "ro"),
        pytest.raises(OSError, match="Read-only file system") as err,
    ):
        restore_stage_outputs("train", tmp_path)
    said = unwritable(err.value)
    assert said is not None
    assert "models" in said
    assert "read-only file system" in said


def test_restore_outputs_into_a_read_only_folder_is_one_line_and_exit_2(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from nextbuy.cli import app

    _project(tmp_path, tmp_path / ".dvc" / "cache")
    monkeypatch.chdir(tmp_path)
    with _small_filesystem(tmp_path / "models", "64k", "ro"):
        result = CliRunner().invoke(app, ["restore-outputs", "train"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "read-only file system" in result.output
    assert "models" in result.output
