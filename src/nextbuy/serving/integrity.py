"""The serving model's files against the SHA-256 deploy recorded on its registry version: digests,
manifests, a checked download and the check at load time."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from nextbuy import yaml_io
from nextbuy.mlops import io
from nextbuy.serving.readers import REREGISTER

log = logging.getLogger(__name__)

# Registry version tags written by deploy: the SHA-256 of every file of the logged model as a
# sha256sum-style manifest ("<sha256>  <path>" lines, sorted by path), and the SHA-256 of that
# manifest text (the digest loads are checked against).
ARTIFACT_SHA256, ARTIFACT_MANIFEST = "artifact_sha256", "artifact_manifest"
# Written by MLflow's downloader next to a registered model it downloads (name, version):
# not one of the model's files.
DOWNLOAD_META = "registered_model_meta"


def _artifact_location(uri: str) -> str:
    """Where the registry says the files of ``uri`` live (the uri itself if unknown)."""
    if not uri.startswith("models:/"):
        return uri
    try:
        # MLflow: imported where the registry is read (the scorer alone never needs it)
        from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

        return ModelsArtifactRepository.get_underlying_uri(uri)
    except Exception:  # noqa: BLE001 - only for the message
        return uri


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_file_digests(model_dir: str | Path, ignore_bytecode: bool = False) -> dict[str, str]:
    """SHA-256 of every file under a model directory, by POSIX path relative to it, sorted.
    Reads bytes only: nothing is unpickled, imported or parsed. The file MLflow's
    downloader adds (``registered_model_meta``) is not one of the model's files.
    ``ignore_bytecode``: leave out ``__pycache__`` folders, which importing the bundled code
    writes (MLflow never logs them); only for a check after that import."""
    root = Path(model_dir)
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
    files.pop(DOWNLOAD_META, None)
    if ignore_bytecode:
        files = {rel: p for rel, p in files.items() if "__pycache__" not in rel.split("/")}
    return {rel: file_sha256(files[rel]) for rel in sorted(files)}


def manifest_text(digests: Mapping[str, str]) -> str:
    """``sha256sum`` format, sorted by path: ``sha256sum -c`` checks a download with it."""
    return "".join(f"{sha}  {rel}\n" for rel, sha in sorted(digests.items()))


def manifest_digest(digests: Mapping[str, str]) -> str:
    """One SHA-256 over every (path, SHA-256) of a model: the ``artifact_sha256`` tag."""
    return hashlib.sha256(manifest_text(digests).encode()).hexdigest()


def parse_manifest(text: str) -> dict[str, str]:
    rows = (line.split("  ", 1) for line in text.splitlines() if "  " in line)
    return {rel: sha for sha, rel in rows}


def artifact_tags(model_dir: str | Path) -> dict[str, str]:
    """The registry tags recording a model directory's files (deploy sets them on the version)."""
    digests = model_file_digests(model_dir)
    return {ARTIFACT_SHA256: manifest_digest(digests), ARTIFACT_MANIFEST: manifest_text(digests)}


def _first_mismatch(actual: Mapping[str, str], recorded: Mapping[str, str]) -> tuple[str, str] | None:
    """(path, what is wrong with it) for the first path, in sorted order, that differs."""
    for rel in sorted(set(actual) | set(recorded)):
        if rel not in actual:
            return rel, "missing (deploy recorded this file)"
        if rel not in recorded:
            return rel, "not one of the files deploy recorded (added since)"
        if actual[rel] != recorded[rel]:
            return rel, f"changed (sha256 {actual[rel][:16]}…, deploy recorded {recorded[rel][:16]}…)"
    return None


def verify_model_files(
    uri: str,
    model_dir: str | Path,
    tags: Mapping[str, str] | None,
    version: str | None = None,
    ignore_bytecode: bool = False,
) -> str | None:
    """Check a downloaded model's files against the digests deploy recorded on its registry
    version (``tags``; None when ``uri`` is no registry version). Call it before anything in
    ``model_dir`` is read, imported or unpickled.

    Returns the verified ``artifact_sha256``. A model that is no registry version is logged as
    a warning and returns None: it loads unverified. A version without the digest tags deploy
    records is refused (``io.DataError`` naming the tags and how to re-register it). Files
    that differ raise ``io.DataError`` naming ``uri`` and the first differing file (missing,
    added or changed); ``version``, the registry version ``uri`` resolved to, is named in
    messages when given. ``ignore_bytecode``: see :func:`model_file_digests` (never before the
    code is imported: a planted ``__pycache__`` file would then run)."""
    which = f"{uri} (v{version})" if version is not None else uri
    if tags is None:
        log.warning("%s: not a registered model version; its files are NOT verified before loading", which)
        return None
    missing = [tag for tag in (ARTIFACT_SHA256, ARTIFACT_MANIFEST) if not tags.get(tag)]
    if missing:
        raise io.DataError(
            which,
            f"no {' or '.join(repr(t) for t in missing)} tag (the file digests deploy records); {REREGISTER}",
        )
    expected, recorded_text = tags[ARTIFACT_SHA256], tags[ARTIFACT_MANIFEST]
    actual = model_file_digests(model_dir, ignore_bytecode)
    if manifest_digest(actual) == expected:
        return expected
    how = (
        "refusing to load it: the model's files changed in the artifact store after deploy "
        "registered it (tampering or corruption). Restore the files, or release another version "
        "(nextbuy rollback / promote, or re-run deploy)"
    )
    if hashlib.sha256(recorded_text.encode()).hexdigest() == expected:
        mismatch = _first_mismatch(actual, parse_manifest(recorded_text))
        if mismatch is not None:
            rel, what = mismatch
            at = f" in v{version}" if version is not None else ""
            raise io.DataError(f"{uri} ({rel})", f"{what}{at}; {how}")
    raise io.DataError(
        which,
        f"the files' digest {manifest_digest(actual)[:16]}… differs from the recorded "
        f"{ARTIFACT_SHA256} {expected[:16]}… (its '{ARTIFACT_MANIFEST}' tag does not match "
        f"'{ARTIFACT_SHA256}' either: registry tags altered?); {how}",
    )


def _registered_version(uri: str) -> tuple[str, str] | None:
    """(name, version) a ``models:/`` registry URI resolves to now; None for other URIs
    (``runs:/``, paths, ``models:/<model id>``). Raises MlflowException when it resolves to nothing."""
    if not uri.startswith("models:/"):
        return None
    # MLflow: imported where the registry is read (the scorer alone never needs it)
    from mlflow.store.artifact.utils.models import _parse_model_uri, get_model_name_and_version
    from mlflow.tracking import MlflowClient

    if _parse_model_uri(uri).model_id is not None:
        return None
    name, version = get_model_name_and_version(MlflowClient(), uri)
    return name, str(version)


def version_tags(uri: str, name: str, version: str) -> dict[str, str]:
    """The tags of registry version ``version`` of ``name`` (``uri`` is named if it cannot be read)."""
    # MLflow: imported where the registry is read (the scorer alone never needs it)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return dict(MlflowClient().get_model_version(name, version).tags)
    except MlflowException as err:
        raise io.DataError(
            uri, f"cannot read v{version} of '{name}' in the registry ({err.message})"
        ) from None


def downloaded_version(model_dir: str | Path) -> tuple[str, str] | None:
    """(name, version) MLflow's downloader recorded next to a registered model it downloaded."""
    meta = Path(model_dir) / DOWNLOAD_META
    try:
        d = yaml_io.load(meta.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(d, dict) or not d.get("model_name") or d.get("model_version") is None:
        return None
    return str(d["model_name"]), str(d["model_version"])


def download_checked(uri: str, dst: str | Path) -> tuple[Path, str | None, str | None]:
    """Download ``uri`` into ``dst`` and verify its files (:func:`verify_model_files`);
    returns the download, the registry version it is (None: not one) and the verified
    digest (None: not a registry version, warned).
    An alias is resolved once and that version downloaded, so what is checked is what was
    downloaded. ``io.DataError`` when nothing can be downloaded, the files are gone or the
    version has no recorded digests."""
    # MLflow: imported where the registry is read (the scorer alone never needs it)
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        registered = _registered_version(uri)
        pinned = uri if registered is None else f"models:/{registered[0]}/{registered[1]}"
        tags = None if registered is None else version_tags(uri, *registered)
        path = Path(mlflow.artifacts.download_artifacts(pinned, dst_path=str(dst)))
    except (MlflowException, OSError) as err:
        raise io.DataError(uri, f"cannot download the model from {_artifact_location(uri)} ({err})") from None
    if not (path / "artifacts").is_dir():
        raise io.DataError(
            uri,
            f"the model's files are missing at {_artifact_location(uri)} (was the artifact "
            "store, e.g. mlartifacts/, deleted or moved?); re-run deploy to register a model "
            "whose files exist, or restore the artifact store",
        )
    version = None if registered is None else registered[1]
    _drop_bytecode_caches(path)
    return path, version, verify_model_files(uri, path, tags, None if pinned == uri else version)


def _drop_bytecode_caches(download: Path) -> None:
    """Remove the ``__pycache__`` folders a download brought along: Python writes them into a
    local artifact store whenever a model's code is imported in place there (``mlflow.pyfunc.
    load_model`` of a ``models:/`` URI on a file store imports from the store itself). MLflow never
    logs them, deploy never recorded them, and, gone from the copy before anything in it is
    imported, none of them can run."""
    caches = [p for p in download.rglob("__pycache__") if p.is_dir()]
    for cache in caches:
        shutil.rmtree(cache)
    if caches:
        log.info("%s: left out %d bytecode cache folder(s) (__pycache__) of the store", download, len(caches))


def verify_model_uri(uri: str) -> tuple[str, str]:
    """Download the registry model ``uri`` to a temporary folder and check its files against
    the digests deploy recorded (``nextbuy verify-model``); loads nothing. Returns the version
    checked and its verified ``artifact_sha256``; ``io.DataError`` when the files differ, the
    version has no recorded digests, or ``uri`` is no registry version."""
    if not uri.startswith("models:/"):
        raise io.DataError(uri, "not a registry URI (models:/NAME/VERSION or models:/NAME@ALIAS)")
    with tempfile.TemporaryDirectory() as tmp:
        _, version, digest = download_checked(uri, tmp)
    if version is None or digest is None:  # a registry version always has its digest checked
        raise io.DataError(uri, "not a registry URI (models:/NAME/VERSION or models:/NAME@ALIAS)")
    return version, digest


def verify_served_files(moments_path: str | Path) -> None:
    """In ``load_context``: the model directory around the bundle, when MLflow downloaded it
    from the registry (``registered_model_meta``), checked against its version's digests."""
    root = Path(moments_path).resolve().parent.parent
    registered = downloaded_version(root)
    if registered is None or not (root / "MLmodel").is_file():
        return  # not a registry download (a local path, or log_model checking its input example)
    uri = f"models:/{registered[0]}/{registered[1]}"
    # MLflow imported the bundled code already, which may have written __pycache__ there.
    verify_model_files(uri, root, version_tags(uri, *registered), ignore_bytecode=True)
