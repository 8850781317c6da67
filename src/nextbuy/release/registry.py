"""MLflow registry operations on the aliases users act on.

``champion`` serves; ``previous`` is what ``rollback`` returns to; a candidate
refused by the gate is marked ``challenger``. Every move returns a sentence
saying what it did, which the CLI prints and the deploy stage logs.

Invariants, kept with tags on the versions:

- The registry never serves what the gate refused unless a person said so:
  promoting a version tagged ``passed`` != ``true`` needs ``force`` and a reason
  (``forced_release_*`` tags, ``released_by_force=true``).
- ``previous`` only ever points to a version that was champion (``was_champion=true``,
  set just before a version is crowned) and that passed its gate or was
  force-released. A force-released ex-champion may be rolled back to: a person
  released it on purpose and it served.
- A candidate is released only against the champion it was judged against: the aliases
  move only while the champion is still that version (:func:`release_judged`); otherwise
  the deploy judges it again (``publishing.publish``).
- A deploy registers a version carrying its verdict and ``complete=false`` in one
  write, moves the aliases, then writes ``complete=true`` last. Readers ignore
  versions that are not complete; the next deploy marks those whose run is no
  longer running ``orphaned=true`` and puts the aliases back (:func:`sweep_orphans`).
- Every version deploy registers records the catalogue it was trained on (tag ``catalogue``,
  ``nextbuy.domain.catalogue``): the gate compares, and the monitor uses, a champion only
  with the store of that catalogue; a version without the tag is never compared.
- Every version records what it learned from (tag ``training_data``: snapshot, span of
  shown_at, split settings): the gate refuses to compare a champion on test rows it learned
  from (``nextbuy.domain.split.learned_rows``).
- What a version serves is what deploy registered: the version carries the SHA-256 of
  every file of the logged model (``artifact_sha256``, ``artifact_manifest``), and
  :func:`load_bundle` refuses a download that differs.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

if TYPE_CHECKING:
    from nextbuy.release.record import Release
    from nextbuy.serving import ServingBundle

CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous", "challenger"
# Version tags.
PASSED, COMPLETE, ORPHANED, CATALOGUE = "passed", "complete", "orphaned", "catalogue"
# What a version learned from (nextbuy.domain.split.training_record, JSON): the gate checks
# that no test row of a later candidate was in it.
TRAINING_DATA = "training_data"
# The gate's record (figures of candidate and champion, comparability, notes) and the lineage
# (code, data digests, params, Airflow run), each one JSON tag so a version's row stays short.
GATE, LINEAGE = "gate", "lineage"
WAS_CHAMPION, ROLLED_BACK, PROMOTED = "was_champion", "rolled_back", "promoted_manually"
FORCED, FORCED_REASON, FORCED_BY, FORCED_AT = (
    "released_by_force",
    "forced_release_reason",
    "forced_release_by",
    "forced_release_at",
)


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version ``alias`` points to, complete or not; None when unset."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def is_complete(tags: Mapping[str, str]) -> bool:
    """Written to the end by deploy (its last write sets ``complete=true``)."""
    return tags.get(COMPLETE) == "true"


def released_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version ``alias`` points to if it is complete; None otherwise (what readers use)."""
    version = alias_version(client, name, alias)
    if version is None or not is_complete(_tags(client, name, version)):
        return None
    return version


def _tags(client: MlflowClient, name: str, version: str) -> dict[str, str]:
    return dict(client.get_model_version(name, str(version)).tags)


def _tag(client: MlflowClient, name: str, version: str, tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)


def may_be_previous(tags: Mapping[str, str]) -> bool:
    """A complete version that served as champion and passed its gate or was force-released."""
    vetted = tags.get(PASSED) == "true" or tags.get(FORCED) == "true"
    return is_complete(tags) and tags.get(WAS_CHAMPION) == "true" and vetted


def _newest_previous(client: MlflowClient, name: str, below: str, skip: set[str]) -> str | None:
    """The newest version before ``below`` that may be 'previous' and was not rolled back."""
    earlier = [
        int(v.version)
        for v in client.search_model_versions(f"name='{name}'")
        if int(v.version) < int(below)
        and str(v.version) not in skip
        and may_be_previous(v.tags)
        and v.tags.get(ROLLED_BACK) != "true"
    ]
    return str(max(earlier)) if earlier else None


def _set_previous(client: MlflowClient, name: str, version: str | None) -> None:
    if version is not None:
        client.set_registered_model_alias(name, PREVIOUS, version)
    elif alias_version(client, name, PREVIOUS) is not None:
        client.delete_registered_model_alias(name, PREVIOUS)


def _refill_previous(client: MlflowClient, name: str, champion: str, skip: Collection[str] = ()) -> None:
    _set_previous(client, name, _newest_previous(client, name, champion, {champion, *skip}))


def _crown(client: MlflowClient, name: str, version: str) -> str:
    version = str(version)
    old = alias_version(client, name, CHAMPION)
    if old == version:
        return f"{name} v{version} is already champion"
    client.set_model_version_tag(name, version, WAS_CHAMPION, "true")  # before it serves
    if old is not None and may_be_previous({**_tags(client, name, old), WAS_CHAMPION: "true"}):
        client.set_model_version_tag(name, old, WAS_CHAMPION, "true")  # a champion promoted by hand
        client.set_registered_model_alias(name, PREVIOUS, old)
    client.set_registered_model_alias(name, CHAMPION, version)
    if alias_version(client, name, PREVIOUS) == version:
        _refill_previous(client, name, version)
    if alias_version(client, name, CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    if old is None:
        return f"{name}: v{version} is the first champion"
    kept = alias_version(client, name, PREVIOUS)
    return f"{name}: champion v{old} → v{version}" + (f" (v{kept} kept as '{PREVIOUS}')" if kept else "")


def release(client: MlflowClient, name: str, version: str, passed: bool) -> str:
    """After the gate: crown a passing candidate, park a refused one as challenger;
    then mark the version complete, the last write of a deploy."""
    if passed:
        message = _crown(client, name, version)
    else:
        client.set_registered_model_alias(name, CHALLENGER, str(version))
        champion = released_version(client, name, CHAMPION)
        stays = f"champion stays v{champion}" if champion is not None else "there is no champion yet"
        message = f"{name} v{version} refused and marked '{CHALLENGER}'; {stays}"
    client.set_model_version_tag(name, str(version), COMPLETE, "true")
    return message


class ChampionMoved(MlflowException):
    """The champion is no longer the version a candidate was judged against: judge it again."""

    def __init__(self, name: str, judged_against: str | None, now: str | None) -> None:
        self.judged_against, self.now = judged_against, now
        was, is_now = (f"v{v}" if v is not None else "no champion" for v in (judged_against, now))
        super().__init__(f"{name}: judged against {was}, but the champion is now {is_now}")


def release_judged(
    client: MlflowClient, name: str, version: str, passed: bool, judged_against: str | None
) -> str:
    """Compare-and-move: :func:`release` only while the champion is still the version the
    verdict was judged against (None: no champion); otherwise :class:`ChampionMoved` and no
    alias moves. MLflow has no transaction over aliases, so this check is atomic only where
    deploys run one at a time (Airflow runs the stage tasks in its one-slot pool,
    ``orchestration.names.POOL``); a deploy run by hand beside it is caught here unless the
    other crowns its version in the moment between this check and the alias write."""
    now = released_version(client, name, CHAMPION)
    if now != judged_against:
        raise ChampionMoved(name, judged_against, now)
    return release(client, name, version, passed)


def set_verdict(client: MlflowClient, name: str, version: str, record: Release) -> None:
    """Replace a registered, not yet released version's verdict tags (after judging it again)."""
    _tag(client, name, version, verdict_tags(record))


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def promote(
    client: MlflowClient, name: str, version: str, force: bool = False, reason: str | None = None
) -> str:
    """Deliberate manual release of a registered version. One the gate refused needs
    ``force`` and a ``reason``, recorded on the version."""
    version = str(version)
    tags = _tags(client, name, version)  # raises if it does not exist
    if not is_complete(tags):
        raise MlflowException(f"{name} v{version} is incomplete (its deploy did not finish): not released")
    refused = tags.get(PASSED) != "true"
    if refused and not (force and reason and reason.strip()):
        why = tags.get("reasons") if PASSED in tags else "it was never judged"
        raise MlflowException(
            f"{name} v{version} did not pass the gate ({why}); to release it anyway: --force --reason TEXT"
        )
    if refused:
        assert reason is not None  # checked above: a refused version needs --force --reason
        when = datetime.now(UTC).isoformat(timespec="seconds")
        forced = {FORCED: "true", FORCED_REASON: reason.strip()[:4000], FORCED_BY: _who(), FORCED_AT: when}
        _tag(client, name, version, forced)
    client.set_model_version_tag(name, version, PROMOTED, "true")
    message = _crown(client, name, version)
    return f"{message} — FORCED past the gate: {reason.strip()}" if refused and reason else message


def rollback(
    client: MlflowClient, name: str, belongs: Callable[[str | None], str | None] | None = None
) -> str:
    """champion → previous; previous → the newest earlier version that was champion.

    ``belongs`` (e.g. ``catalogue.mismatch`` against the store's products) says why a
    version's recorded catalogue is not this store's, or None: a 'previous' that does not
    belong is not restored, since it would score this store's ids as other products."""
    bad = alias_version(client, name, CHAMPION)
    back = alias_version(client, name, PREVIOUS)
    if back is None:
        raise MlflowException(f"{name} has no '{PREVIOUS}' version to roll back to (champion is v{bad})")
    tags = _tags(client, name, back)
    if not may_be_previous(tags):
        raise MlflowException(
            f"{name}: '{PREVIOUS}' v{back} never served as a gated or force-released champion; "
            f"not rolling back to it (promote a version explicitly instead)"
        )
    why = None if belongs is None else belongs(tags.get(CATALOGUE))
    if why is not None:
        raise MlflowException(
            f"{name}: not rolling back to '{PREVIOUS}' v{back}, it is not a model of this store: {why} "
            f"(champion v{bad} stays; promote a version of this catalogue explicitly instead)"
        )
    client.set_registered_model_alias(name, CHAMPION, back)
    if bad is not None:
        client.set_model_version_tag(name, bad, ROLLED_BACK, "true")
    _refill_previous(client, name, back, {bad} if bad else set())
    return f"{name}: rolled back champion v{bad} → v{back}"


def catalogue_of(client: MlflowClient, name: str, version: str) -> str | None:
    """The catalogue ``version`` was trained on (tag ``catalogue``); None when not recorded."""
    return _tags(client, name, version).get(CATALOGUE)


def json_tag(tags: Mapping[str, str], key: str) -> dict | None:
    """The JSON object a version's tag ``key`` holds; None when absent, not JSON or not an object."""
    try:
        value = json.loads(tags.get(key) or "null")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def json_text(value: object) -> str:
    """A tag's JSON, compact and key-sorted: the same record always reads the same."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# The longest value MLflow keeps in a model version's tag (its MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH):
# the whole params.yaml of the lineage fits, so its JSON is never cut short.
TAG_LIMIT = 100_000


def verdict_tags(release: Release) -> dict[str, str]:
    """The release record as the version's tags: the verdict and its reasons as plain text
    (searchable in MLflow's UI and API), the gate's figures and the lineage one JSON tag each."""
    gate = {
        "candidate": _rounded(release.candidate),
        "champion": _rounded(release.champion),
        "champion_comparable": release.champion_comparable,
        "not_comparable_reason": release.not_comparable_reason,
        "champion_training_overlap": release.champion_training_overlap,
        "notes": release.notes,
    }
    return {
        PASSED: str(release.passed).lower(),
        "reasons": "; ".join(release.reasons) or "all checks hold",
        GATE: json_text({k: v for k, v in gate.items() if v not in (None, [], {})}),
        LINEAGE: json_text(release.lineage)[:TAG_LIMIT],
    }


def _rounded(figures: dict[str, float | None] | None) -> dict[str, float | None]:
    return {k: None if v is None else round(v, 4) for k, v in (figures or {}).items()}


def training_data_of(client: MlflowClient, name: str, version: str) -> dict | None:
    """What ``version`` learned from (tag ``training_data``); None when not recorded."""
    record = json_tag(_tags(client, name, version), TRAINING_DATA)
    return record if record is not None and "split" in record else None


def has_release(client: MlflowClient, name: str) -> bool:
    """Whether ``name`` has any complete version (a deploy that finished)."""
    return any(is_complete(v.tags) for v in client.search_model_versions(f"name='{name}'"))


def _run_running(client: MlflowClient, run_id: str | None) -> bool:
    if not run_id:
        return False
    try:
        return client.get_run(run_id).info.status == "RUNNING"
    except MlflowException:
        return False


def _orphans(client: MlflowClient, name: str) -> list[str]:
    """Incomplete versions whose deploy run is over (a run still RUNNING may be in flight), oldest first."""
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    return [
        str(v.version)
        for v in versions
        if not is_complete(v.tags) and v.tags.get(ORPHANED) != "true" and not _run_running(client, v.run_id)
    ]


def _heal_champion(client: MlflowClient, name: str, orphans: set[str]) -> str | None:
    """An orphan crowned before its deploy died: champion back to what served before."""
    champion = alias_version(client, name, CHAMPION)
    if champion not in orphans:
        return champion
    back = alias_version(client, name, PREVIOUS)
    if back is not None and back not in orphans and may_be_previous(_tags(client, name, back)):
        client.set_registered_model_alias(name, CHAMPION, back)
        return back
    client.delete_registered_model_alias(name, CHAMPION)
    return None


def _heal_aliases(client: MlflowClient, name: str, orphans: set[str]) -> None:
    champion = _heal_champion(client, name, orphans)
    if alias_version(client, name, CHALLENGER) in orphans:
        client.delete_registered_model_alias(name, CHALLENGER)
    previous = alias_version(client, name, PREVIOUS)
    if previous is None or (previous not in orphans and previous != champion):
        return
    if champion is None:
        _set_previous(client, name, None)
    else:
        _refill_previous(client, name, champion, orphans)


def sweep_orphans(client: MlflowClient, name: str) -> list[str]:
    """Mark versions a dead deploy left incomplete ``orphaned=true`` and undo their alias
    moves (also a half-done move: 'previous' equal to 'champion'). Returns the orphans."""
    orphans = _orphans(client, name)
    for version in orphans:
        client.set_model_version_tag(name, version, ORPHANED, "true")
    _heal_aliases(client, name, set(orphans))
    return orphans


def load_bundle(name: str, alias: str) -> ServingBundle | None:
    """The serving bundle behind ``models:/name@alias``, or None when the alias is unset
    or points to an incomplete version. The downloaded files are checked against the
    SHA-256 deploy recorded on the version (tag ``artifact_sha256``) before anything in
    them is read: changed, added or missing files raise ``io.DataError`` naming the model
    and the first such file; a version without them is refused (``serving.verify_model_files``)."""
    version = released_version(MlflowClient(), name, alias)
    if version is None:
        return None
    return load_version(name, version)


def load_version(name: str, version: str) -> ServingBundle:
    """The serving bundle of ``models:/name/version``, its files checked as :func:`load_bundle` says."""
    # faiss and the serving model: imported where a version is loaded
    from nextbuy.serving import ServingBundle

    # A deleted artifact store is a DataError naming its location, not an MLflow traceback.
    return ServingBundle.from_model_uri(f"models:/{name}/{version}")
