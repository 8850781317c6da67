"""Registry moves on the aliases users act on (champion / previous / challenger):
release after the gate, manual promote, rollback — including the edge cases a
person at the CLI hits (nothing to roll back to, promoting the champion, a
version that does not exist).

Then the issue "Nothing lost, nothing wrong served": a refused version is only
released by force with a reason, 'previous' is only ever an ex-champion, and what a
killed deploy left half-done (an incomplete version, a half-moved alias) is ignored
by readers and repaired by the next deploy's sweep.

One throwaway SQLite store for the module; each test registers its own model
(versions are bare registry entries: the moves never open the model files)."""

from __future__ import annotations

import itertools

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nextbuy.bench.serving_fixtures import mlflow_store
from nextbuy.release import registry
from nextbuy.release.registry import CHALLENGER, CHAMPION, PREVIOUS
from tests.release.records import judged_release

_names = itertools.count()


@pytest.fixture(scope="module")
def client(tmp_path_factory, new_mlflow_store) -> MlflowClient:
    uri = new_mlflow_store(tmp_path_factory.mktemp("registry") / "mlflow.db")
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture
def model(client, tmp_path):
    """A fresh registered model; ``model.add(passed)`` registers the next version
    tagged as the deploy gate tags it and returns its number as a string."""

    class Model:
        name = f"nextbuy-{next(_names)}"

        def add(self, passed: bool | None = True, complete: str | None = "true", run_id=None) -> str:
            """``complete``: "false" as deploy registers, None for no tag at all;
            ``passed`` None: no gate verdict at all."""
            tags = {} if passed is None else {"passed": str(passed).lower()}
            tags |= {} if complete is None else {"complete": complete}
            v = client.create_model_version(
                self.name, source=str(tmp_path / "model"), tags=tags, run_id=run_id
            )
            return str(v.version)

        def aliases(self) -> dict[str, str | None]:
            return {a: registry.alias_version(client, self.name, a) for a in (CHAMPION, PREVIOUS, CHALLENGER)}

        def tag(self, version: str, key: str) -> str | None:
            return client.get_model_version(self.name, version).tags.get(key)

    client.create_registered_model(Model.name)
    return Model()


def released(client, model, *verdicts: bool) -> list[str]:
    """Versions registered as deploy does (complete=false) and released in order through
    the gate with the given verdicts."""
    versions = []
    for passed in verdicts:
        versions.append(model.add(passed, complete="false"))
        registry.release(client, model.name, versions[-1], passed)
    return versions


# --- release (after the gate) ------------------------------------------------


def test_first_passing_release_becomes_champion_with_nothing_previous(client, model):
    v1 = model.add()
    message = registry.release(client, model.name, v1, passed=True)
    assert model.aliases() == {CHAMPION: v1, PREVIOUS: None, CHALLENGER: None}
    assert f"v{v1}" in message
    assert "None" not in message


def test_passing_release_keeps_the_old_champion_as_previous(client, model):
    v1 = released(client, model, True)[0]
    v2 = model.add()
    message = registry.release(client, model.name, v2, passed=True)
    assert model.aliases() == {CHAMPION: v2, PREVIOUS: v1, CHALLENGER: None}
    assert f"v{v1} → v{v2}" in message
    assert PREVIOUS in message


def test_refused_release_is_parked_as_challenger_and_the_champion_stays(client, model):
    v1, v2 = released(client, model, True, False)
    assert model.aliases() == {CHAMPION: v1, PREVIOUS: None, CHALLENGER: v2}


def test_refused_first_release_says_there_is_no_champion(client, model):
    v1 = model.add(passed=False)
    message = registry.release(client, model.name, v1, passed=False)
    assert model.aliases() == {CHAMPION: None, PREVIOUS: None, CHALLENGER: v1}
    assert "refused" in message
    assert "None" not in message


def test_a_release_judged_against_a_champion_that_has_since_moved_moves_nothing(client, model):
    """Compare-and-move: two candidates judged against v1 at once; the first crowns itself,
    the second finds the champion moved and is not released on a stale verdict."""
    v1 = released(client, model, True)[0]
    first, second = model.add(complete="false"), model.add(complete="false")
    registry.release_judged(client, model.name, first, True, judged_against=v1)
    with pytest.raises(
        registry.ChampionMoved, match=f"judged against v{v1}, but the champion is now v{first}"
    ):
        registry.release_judged(client, model.name, second, True, judged_against=v1)
    assert model.aliases() == {CHAMPION: first, PREVIOUS: v1, CHALLENGER: None}
    assert model.tag(second, registry.COMPLETE) == "false"
    assert registry.release_judged(client, model.name, second, True, judged_against=first).endswith(
        f"champion v{first} → v{second} (v{first} kept as 'previous')"
    )


# --- promote -----------------------------------------------------------------


def test_promoting_the_challenger_by_force_crowns_it_and_clears_the_challenger_alias(client, model):
    v1, v2 = released(client, model, True, False)
    message = registry.promote(client, model.name, v2, force=True, reason="hotfix")
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
    v1, _v2, v3 = released(client, model, True, True, True)
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
    v1, v2, v3, _v4 = released(client, model, True, False, True, True)
    registry.rollback(client, model.name)
    assert model.aliases() == {CHAMPION: v3, PREVIOUS: v1, CHALLENGER: v2}


def test_promote_then_rollback_returns_to_the_champion_before_the_promotion(client, model):
    v1, v2, v3 = released(client, model, True, True, False)
    registry.promote(client, model.name, v3, force=True, reason="the gate's data was stale")
    assert model.aliases() == {CHAMPION: v3, PREVIOUS: v2, CHALLENGER: None}
    registry.rollback(client, model.name)
    assert model.aliases() == {CHAMPION: v2, PREVIOUS: v1, CHALLENGER: None}
    assert model.tag(v3, "rolled_back") == "true"


def test_a_rolled_back_version_is_not_offered_as_previous_again(client, model):
    v1, v2, _v3 = released(client, model, True, True, True)
    registry.rollback(client, model.name)  # v3 bad: champion v2, previous v1
    v4 = released(client, model, True)[0]  # champion v4, previous v2
    registry.rollback(client, model.name)  # champion v2; previous: v1, never v3
    assert model.aliases() == {CHAMPION: v2, PREVIOUS: v1, CHALLENGER: None}
    assert model.tag(v4, "rolled_back") == "true"


def test_unset_alias_reads_as_none(client, model):
    model.add()
    assert registry.alias_version(client, model.name, CHAMPION) is None
    assert registry.alias_version(client, "no-such-model", CHAMPION) is None


# --- the gate's refusal stands unless a person forces it -----------------------------


def test_promoting_a_refused_version_without_force_and_a_reason_fails_and_moves_nothing(client, model):
    v1, v2 = released(client, model, True, False)
    for kwargs in ({}, {"force": True}, {"force": True, "reason": "  "}, {"reason": "why not"}):
        with pytest.raises(MlflowException, match=r"did not pass the gate.*--force --reason"):
            registry.promote(client, model.name, v2, **kwargs)
    assert model.aliases() == {CHAMPION: v1, PREVIOUS: None, CHALLENGER: v2}
    assert model.tag(v2, registry.FORCED) is None
    assert model.tag(v2, registry.PROMOTED) is None


def test_a_forced_release_records_the_reason_who_and_when_and_says_so(client, model):
    v1, v2 = released(client, model, True, False)
    message = registry.promote(client, model.name, v2, force=True, reason="INC-42: gate data was stale")
    assert model.aliases() == {CHAMPION: v2, PREVIOUS: v1, CHALLENGER: None}
    assert model.tag(v2, registry.FORCED) == "true"
    assert model.tag(v2, registry.FORCED_REASON) == "INC-42: gate data was stale"
    assert model.tag(v2, registry.FORCED_BY)
    assert model.tag(v2, registry.FORCED_AT).startswith("20")
    assert "FORCED" in message
    assert "INC-42" in message


def test_force_on_a_passing_version_records_nothing_forced(client, model):
    v1, _v2 = released(client, model, True, True)
    registry.promote(client, model.name, v1, force=True, reason="back to v1")
    assert model.aliases()[CHAMPION] == v1
    assert model.tag(v1, registry.FORCED) is None


def test_the_issue_sequence_never_serves_the_refused_version(client, model):
    """`promote 2 && promote 1 && rollback` made the refused v2 champion."""
    v1, v2 = released(client, model, True, False)
    with pytest.raises(MlflowException):
        registry.promote(client, model.name, v2)
    registry.promote(client, model.name, v1)
    with pytest.raises(MlflowException, match=f"no '{PREVIOUS}'"):
        registry.rollback(client, model.name)
    assert model.aliases() == {CHAMPION: v1, PREVIOUS: None, CHALLENGER: v2}


def test_a_refused_version_crowned_before_the_rules_never_becomes_previous(client, model):
    """A store from before this change: v2 (refused) promoted without force, so no
    forced tag; replacing it must not keep it as what rollback returns to."""
    v1, v2 = released(client, model, True, False)
    client.set_registered_model_alias(model.name, PREVIOUS, v1)
    client.set_registered_model_alias(model.name, CHAMPION, v2)  # the old `promote 2`
    v3 = released(client, model, True)[0]
    assert model.aliases()[CHAMPION] == v3
    assert model.aliases()[PREVIOUS] == v1
    registry.rollback(client, model.name)
    assert model.aliases()[CHAMPION] == v1


def test_every_champion_is_recorded_as_such_and_refused_ones_are_not(client, model):
    v1, v2, v3 = released(client, model, True, False, True)
    assert [model.tag(v, registry.WAS_CHAMPION) for v in (v1, v2, v3)] == ["true", None, "true"]
    assert all(model.tag(v, registry.COMPLETE) == "true" for v in (v1, v2, v3))


def test_previous_is_only_ever_a_version_that_was_champion(client, model):
    v1 = released(client, model, True)[0]
    never_crowned = model.add(passed=True)  # passed, complete, but its deploy never moved champion
    v3, _v4 = released(client, model, True, True)
    registry.rollback(client, model.name)
    assert model.aliases() == {CHAMPION: v3, PREVIOUS: v1, CHALLENGER: None}
    assert model.tag(never_crowned, registry.WAS_CHAMPION) is None


def test_rollback_refuses_a_previous_that_never_served(client, model):
    v1 = released(client, model, True)[0]
    never_crowned = model.add(passed=True)
    client.set_registered_model_alias(model.name, PREVIOUS, never_crowned)  # e.g. set by hand
    with pytest.raises(MlflowException, match=f"v{never_crowned} never served"):
        registry.rollback(client, model.name)
    assert model.aliases()[CHAMPION] == v1


def test_a_force_released_ex_champion_may_be_rolled_back_to(client, model):
    """Documented choice: a person released it on purpose and it served."""
    v1, v2 = released(client, model, True, False)
    registry.promote(client, model.name, v2, force=True, reason="known-good despite the gate")
    v3 = released(client, model, True)[0]
    assert model.aliases() == {CHAMPION: v3, PREVIOUS: v2, CHALLENGER: None}
    registry.rollback(client, model.name)
    assert model.aliases() == {CHAMPION: v2, PREVIOUS: v1, CHALLENGER: None}


# --- all-or-nothing: incomplete versions are ignored, then orphaned ---------------------


@pytest.fixture
def run_of(client):
    """``run_of(status)``: id of a run in the store ended with ``status`` (or still RUNNING)."""

    def make(status: str) -> str:
        run = client.create_run("0")
        if status != "RUNNING":
            client.set_terminated(run.info.run_id, status)
        return run.info.run_id

    return make


def killed_deploy(client, model, run_of, passed: bool = True, crowned: bool = True) -> str:
    """A deploy killed after its alias moves, before its last write (complete=true)."""
    v = model.add(passed, complete="false", run_id=run_of("KILLED"))
    if passed and crowned:
        registry._crown(client, model.name, v)
    elif not passed:
        client.set_registered_model_alias(model.name, CHALLENGER, v)
    return v


def test_readers_ignore_an_incomplete_champion(client, model, run_of):
    v1 = released(client, model, True)[0]
    v2 = killed_deploy(client, model, run_of)
    assert registry.alias_version(client, model.name, CHAMPION) == v2
    assert registry.released_version(client, model.name, CHAMPION) is None
    assert registry.released_version(client, model.name, PREVIOUS) == v1
    with pytest.raises(MlflowException, match="incomplete"):
        registry.promote(client, model.name, v2)


def test_load_bundle_ignores_an_incomplete_champion(client, model, run_of):
    released(client, model, True)
    killed_deploy(client, model, run_of)
    with mlflow_store(client.tracking_uri):
        assert registry.load_bundle(model.name, CHAMPION) is None  # nothing downloaded


def test_sweep_orphans_a_crowned_incomplete_version_and_puts_the_champion_back(client, model, run_of):
    v1, v2 = released(client, model, True, True)
    v3 = killed_deploy(client, model, run_of)
    assert model.aliases() == {CHAMPION: v3, PREVIOUS: v2, CHALLENGER: None}
    assert registry.sweep_orphans(client, model.name) == [v3]
    assert model.aliases() == {CHAMPION: v2, PREVIOUS: v1, CHALLENGER: None}
    assert model.tag(v3, registry.ORPHANED) == "true"
    assert model.tag(v3, registry.COMPLETE) == "false"
    assert registry.sweep_orphans(client, model.name) == []  # once


def test_sweep_repairs_a_move_killed_between_previous_and_champion(client, model, run_of):
    v1, v2 = released(client, model, True, True)
    v3 = killed_deploy(client, model, run_of, crowned=False)
    client.set_registered_model_alias(model.name, PREVIOUS, v2)  # _crown's first move only
    assert registry.sweep_orphans(client, model.name) == [v3]
    assert model.aliases() == {CHAMPION: v2, PREVIOUS: v1, CHALLENGER: None}


def test_sweep_clears_an_incomplete_challenger_and_a_first_champion(client, model, run_of):
    v1 = killed_deploy(client, model, run_of)  # the first deploy ever, killed
    assert registry.sweep_orphans(client, model.name) == [v1]
    assert model.aliases() == {CHAMPION: None, PREVIOUS: None, CHALLENGER: None}
    assert not registry.has_release(client, model.name)
    v2 = released(client, model, True)[0]
    v3 = killed_deploy(client, model, run_of, passed=False)
    assert registry.sweep_orphans(client, model.name) == [v3]
    assert model.aliases() == {CHAMPION: v2, PREVIOUS: None, CHALLENGER: None}


def test_sweep_leaves_a_deploy_in_flight_and_orphans_versions_with_no_tags(client, model, run_of):
    v1 = released(client, model, True)[0]
    in_flight = model.add(True, complete="false", run_id=run_of("RUNNING"))
    bare = model.add(passed=None, complete=None)  # registered, killed before any tag
    failed = model.add(False, complete="false", run_id=run_of("FAILED"))
    assert registry.sweep_orphans(client, model.name) == [bare, failed]
    assert model.tag(in_flight, registry.ORPHANED) is None
    assert model.aliases() == {CHAMPION: v1, PREVIOUS: None, CHALLENGER: None}


def test_an_orphan_is_never_previous(client, model, run_of):
    v1 = released(client, model, True)[0]
    killed_deploy(client, model, run_of)
    registry.sweep_orphans(client, model.name)
    v3, _v4 = released(client, model, True, True)
    registry.rollback(client, model.name)
    assert model.aliases() == {CHAMPION: v3, PREVIOUS: v1, CHALLENGER: None}


def test_catalogue_of_a_version_is_its_tag_or_none_before_catalogues_were_recorded(client, model):
    tagged = model.add()
    client.set_model_version_tag(model.name, tagged, registry.CATALOGUE, "300:0123456789abcdef")
    legacy = model.add()
    assert registry.catalogue_of(client, model.name, tagged) == "300:0123456789abcdef"
    assert registry.catalogue_of(client, model.name, legacy) is None


# --- what is loaded is what deploy registered ---------------------------------------------


def test_load_bundle_refuses_a_champion_whose_files_changed_after_registration(tmp_path):
    """Valid thresholds, but not the ones deploy registered: only the recorded digest tells."""
    import json

    from nextbuy.bench.serving_fixtures import MODEL_NAME, register_champion, write_bundle_files
    from nextbuy.mlops.io import DataError

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    files = write_bundle_files(tmp_path / "bundle", n_products=40, d=4, n_fit=2000)
    version = register_champion(files, tmp_path, uri)
    MlflowClient(uri, uri).set_model_version_tag(MODEL_NAME, version, registry.COMPLETE, "true")
    with mlflow_store(uri):
        assert registry.load_bundle(MODEL_NAME, CHAMPION).n_products == 40
        stored = next((tmp_path / "mlartifacts").rglob("thresholds.json"))
        thresholds = json.loads(stored.read_text())
        thresholds["per_bucket"]["thresholds"] = [0.0] * len(thresholds["per_bucket"]["thresholds"])
        stored.write_text(json.dumps(thresholds))  # accept everything
        with pytest.raises(DataError) as err:
            registry.load_bundle(MODEL_NAME, CHAMPION)
    assert err.value.path == f"models:/{MODEL_NAME}/{version} (artifacts/thresholds.json)"
    assert "changed (sha256" in err.value.message


def test_rollback_refuses_a_previous_of_another_catalogue_and_keeps_the_champion(client, model):
    v1, v2 = released(client, model, True, True)
    client.set_model_version_tag(model.name, v1, "catalogue", "5000:aaaa")
    client.set_model_version_tag(model.name, v2, "catalogue", "100000:bbbb")
    store = lambda recorded: None if recorded == "100000:bbbb" else f"it was trained on {recorded}"  # noqa: E731
    with pytest.raises(MlflowException, match=f"not rolling back to '{PREVIOUS}' v{v1}.*5000:aaaa"):
        registry.rollback(client, model.name, store)
    assert model.aliases() == {CHAMPION: v2, PREVIOUS: v1, CHALLENGER: None}
    assert model.tag(v2, "rolled_back") is None
    # the same move for a store whose catalogue v1 belongs to goes through
    registry.rollback(client, model.name, lambda recorded: None)
    assert model.aliases()[CHAMPION] == v1


def test_the_release_record_is_four_tags_on_the_version_its_figures_and_lineage_one_json_each():
    """A version's row in the registry stays short: the verdict and its reasons as text (what a
    search filters on), the gate's figures and the lineage one JSON object each."""
    release = judged_release(False, lineage={"git_commit": "abc", "params": {"deploy": {"min_auc": 0.6}}})
    release = release.model_copy(update={"candidate": {"auc": 0.512345, "ece": None}, "notes": ["few rows"]})
    tags = registry.verdict_tags(release)
    assert set(tags) == {registry.PASSED, "reasons", registry.GATE, registry.LINEAGE}
    assert tags[registry.PASSED] == "false"
    assert tags["reasons"] == "auc 0.51 < 0.6"
    assert registry.json_tag(tags, registry.GATE) == {
        "candidate": {"auc": 0.5123, "ece": None},
        "notes": ["few rows"],
    }
    assert registry.json_tag(tags, registry.LINEAGE)["params"] == {"deploy": {"min_auc": 0.6}}
