"""Registry moves on the aliases users act on (champion / previous / challenger):
release after the gate, manual promote, rollback — including the edge cases a
person at the CLI hits (nothing to roll back to, promoting the champion, a
version that does not exist).

One throwaway SQLite store for the module; each test registers its own model
(versions are bare registry entries: the moves never open the model files)."""

from __future__ import annotations

import itertools

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nextbuy.mlops import registry
from nextbuy.mlops.registry import CHALLENGER, CHAMPION, PREVIOUS

_names = itertools.count()


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> MlflowClient:
    uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture
def model(client, tmp_path):
    """A fresh registered model; ``model.add(passed)`` registers the next version
    tagged as the deploy gate tags it and returns its number as a string."""

    class Model:
        name = f"nextbuy-{next(_names)}"

        def add(self, passed: bool = True) -> str:
            v = client.create_model_version(
                self.name, source=str(tmp_path / "model"), tags={"passed": str(passed).lower()}
            )
            return str(v.version)

        def aliases(self) -> dict[str, str | None]:
            return {a: registry.alias_version(client, self.name, a) for a in (CHAMPION, PREVIOUS, CHALLENGER)}

        def tag(self, version: str, key: str) -> str | None:
            return client.get_model_version(self.name, version).tags.get(key)

    client.create_registered_model(Model.name)
    return Model()


def released(client, model, *verdicts: bool) -> list[str]:
    """Versions released in order through the gate with the given verdicts."""
    versions = []
    for passed in verdicts:
        versions.append(model.add(passed))
        registry.release(client, model.name, versions[-1], passed)
    return versions


# --- release (after the gate) ------------------------------------------------


def test_first_passing_release_becomes_champion_with_nothing_previous(client, model):
    v1 = model.add()
    message = registry.release(client, model.name, v1, passed=True)
    assert model.aliases() == {CHAMPION: v1, PREVIOUS: None, CHALLENGER: None}
    assert f"v{v1}" in message and "None" not in message


def test_passing_release_keeps_the_old_champion_as_previous(client, model):
    v1 = released(client, model, True)[0]
    v2 = model.add()
    message = registry.release(client, model.name, v2, passed=True)
    assert model.aliases() == {CHAMPION: v2, PREVIOUS: v1, CHALLENGER: None}
    assert f"v{v1} → v{v2}" in message and PREVIOUS in message


def test_refused_release_is_parked_as_challenger_and_the_champion_stays(client, model):
    v1, v2 = released(client, model, True, False)
    assert model.aliases() == {CHAMPION: v1, PREVIOUS: None, CHALLENGER: v2}


def test_refused_first_release_says_there_is_no_champion(client, model):
    v1 = model.add(passed=False)
    message = registry.release(client, model.name, v1, passed=False)
    assert model.aliases() == {CHAMPION: None, PREVIOUS: None, CHALLENGER: v1}
    assert "refused" in message and "None" not in message


# --- promote -----------------------------------------------------------------


def test_promoting_the_challenger_crowns_it_and_clears_the_challenger_alias(client, model):
    v1, v2 = released(client, model, True, False)
    message = registry.promote(client, model.name, v2)
    assert model.aliases() == {CHAMPION: v2, PREVIOUS: v1, CHALLENGER: None}
    assert model.tag(v2, "promoted_manually") == "true"
    assert f"v{v1} → v{v2}" in message


def test_promoting_the_current_champion_changes_nothing(client, model):
    v1, v2 = released(client, model, True, True)
    message = registry.promote(client, model.name, v2)
    assert "already champion" in message
    # 'previous' must not become the champion itself (rollback would then go nowhere).
    assert model.aliases() == {CHAMPION: v2, PREVIOUS: v1, CHALLENGER: None}


def test_promoting_an_unknown_version_fails_and_moves_nothing(client, model):
    v1, v2 = released(client, model, True, True)
    with pytest.raises(MlflowException, match="not found"):
        registry.promote(client, model.name, "99")
    assert model.aliases() == {CHAMPION: v2, PREVIOUS: v1, CHALLENGER: None}


def test_promoting_an_older_version_keeps_the_replaced_champion_as_previous(client, model):
    v1, v2, v3 = released(client, model, True, True, True)
    registry.promote(client, model.name, v1)
    assert model.aliases() == {CHAMPION: v1, PREVIOUS: v3, CHALLENGER: None}


# --- rollback ----------------------------------------------------------------


def test_rollback_with_no_previous_fails_and_keeps_the_champion(client, model):
    v1 = released(client, model, True)[0]
    with pytest.raises(MlflowException, match=f"no '{PREVIOUS}'.*champion is v{v1}"):
        registry.rollback(client, model.name)
    assert model.aliases() == {CHAMPION: v1, PREVIOUS: None, CHALLENGER: None}
    assert model.tag(v1, "rolled_back") is None


def test_rollback_of_a_model_never_released_fails(client, model):
    model.add()
    with pytest.raises(MlflowException, match=f"no '{PREVIOUS}'"):
        registry.rollback(client, model.name)
    assert model.aliases() == {CHAMPION: None, PREVIOUS: None, CHALLENGER: None}


def test_rollback_restores_previous_and_refills_it_from_earlier_passed_versions(client, model):
    v1, v2, v3 = released(client, model, True, True, True)
    message = registry.rollback(client, model.name)
    assert model.aliases() == {CHAMPION: v2, PREVIOUS: v1, CHALLENGER: None}
    assert model.tag(v3, "rolled_back") == "true"
    assert f"v{v3} → v{v2}" in message
    # Once more: back to v1, and nothing earlier is left to be 'previous'.
    registry.rollback(client, model.name)
    assert model.aliases() == {CHAMPION: v1, PREVIOUS: None, CHALLENGER: None}
    with pytest.raises(MlflowException):
        registry.rollback(client, model.name)
    assert model.aliases()[CHAMPION] == v1


def test_rollback_never_makes_a_refused_version_previous(client, model):
    v1, v2, v3, v4 = released(client, model, True, False, True, True)
    registry.rollback(client, model.name)
    assert model.aliases() == {CHAMPION: v3, PREVIOUS: v1, CHALLENGER: v2}


def test_promote_then_rollback_returns_to_the_champion_before_the_promotion(client, model):
    v1, v2, v3 = released(client, model, True, True, False)
    registry.promote(client, model.name, v3)
    assert model.aliases() == {CHAMPION: v3, PREVIOUS: v2, CHALLENGER: None}
    registry.rollback(client, model.name)
    assert model.aliases() == {CHAMPION: v2, PREVIOUS: v1, CHALLENGER: None}
    assert model.tag(v3, "rolled_back") == "true"


def test_a_rolled_back_version_is_not_offered_as_previous_again(client, model):
    v1, v2, v3 = released(client, model, True, True, True)
    registry.rollback(client, model.name)  # v3 bad: champion v2, previous v1
    v4 = released(client, model, True)[0]  # champion v4, previous v2
    registry.rollback(client, model.name)  # champion v2; previous: v1, never v3
    assert model.aliases() == {CHAMPION: v2, PREVIOUS: v1, CHALLENGER: None}
    assert model.tag(v4, "rolled_back") == "true"


def test_unset_alias_reads_as_none(client, model):
    model.add()
    assert registry.alias_version(client, model.name, CHAMPION) is None
    assert registry.alias_version(client, "no-such-model", CHAMPION) is None
