"""MLflow registry operations on the aliases users act on.

``champion`` serves; ``previous`` is what ``rollback`` returns to; a candidate
refused by the gate is marked ``challenger``. Every move returns a sentence
saying what it did, which the CLI prints and the deploy stage logs.
"""

from __future__ import annotations

import tempfile

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous", "challenger"


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _crown(client: MlflowClient, name: str, version: str) -> str:
    old = alias_version(client, name, CHAMPION)
    if old == str(version):
        return f"{name} v{version} is already champion"
    if old is not None:
        client.set_registered_model_alias(name, PREVIOUS, old)
    client.set_registered_model_alias(name, CHAMPION, str(version))
    if alias_version(client, name, CHALLENGER) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)
    if old is None:
        return f"{name}: v{version} is the first champion"
    return f"{name}: champion v{old} → v{version} (v{old} kept as '{PREVIOUS}')"


def release(client: MlflowClient, name: str, version: str, passed: bool) -> str:
    """After the gate: crown a passing candidate, park a refused one as challenger."""
    if passed:
        return _crown(client, name, version)
    client.set_registered_model_alias(name, CHALLENGER, str(version))
    champion = alias_version(client, name, CHAMPION)
    stays = f"champion stays v{champion}" if champion is not None else "there is no champion yet"
    return f"{name} v{version} refused and marked '{CHALLENGER}'; {stays}"


def promote(client: MlflowClient, name: str, version: str) -> str:
    """Deliberate manual release of any registered version."""
    client.get_model_version(name, str(version))  # raises if it does not exist
    client.set_model_version_tag(name, str(version), "promoted_manually", "true")
    return _crown(client, name, version)


def rollback(client: MlflowClient, name: str) -> str:
    """champion → previous; previous → the newest earlier version that passed its gate."""
    bad = alias_version(client, name, CHAMPION)
    back = alias_version(client, name, PREVIOUS)
    if back is None:
        raise MlflowException(f"{name} has no '{PREVIOUS}' version to roll back to (champion is v{bad})")
    client.set_registered_model_alias(name, CHAMPION, back)
    if bad is not None:
        client.set_model_version_tag(name, bad, "rolled_back", "true")
    earlier = [
        int(v.version)
        for v in client.search_model_versions(f"name='{name}'")
        if int(v.version) < int(back)
        and str(v.version) != bad
        and v.tags.get("passed") == "true"
        and v.tags.get("rolled_back") != "true"
    ]
    if earlier:
        client.set_registered_model_alias(name, PREVIOUS, str(max(earlier)))
    else:
        client.delete_registered_model_alias(name, PREVIOUS)
    return f"{name}: rolled back champion v{bad} → v{back}"


def load_bundle(name: str, alias: str):
    """The serving bundle behind ``models:/name@alias``, or None when the alias is unset."""
    import mlflow

    from nextbuy.mlops.serving import ServingBundle

    if alias_version(MlflowClient(), name, alias) is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(f"models:/{name}@{alias}", dst_path=tmp)
        return ServingBundle.from_model_dir(path)
