"""Model cards in MLflow's store: written as the version's Description, artifacts and search
tags, and read back; a version without the card deploy writes is refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from nextbuy.model_card import mlflow_cards, text
from nextbuy.release import registry
from tests.model_card.registered import carded, register


def test_a_written_card_is_the_versions_description_artifacts_and_search_tags(client, name, tmp_path):
    card = carded(client, name, "2026-02-10 00:00:00", 0.005)
    mv = client.get_model_version(name, card.version)
    assert mv.description.startswith(f"{text.CARD_START}\n# {name} v{card.version}")
    assert mv.description.endswith(text.CARD_END)
    assert registry.json_tag(mv.tags, mlflow_cards.CARD) == {
        "snapshot": "2026-02-10 00:00:00",
        "ingested_md5": "aa1ff.dir",
        "weighted_md5": "bb1ee.dir",
    }
    readme = client.download_artifacts(mv.run_id, "model_card/README.md", str(tmp_path))
    assert Path(readme).read_text().startswith("---\nlibrary_name: nextbuy\n")
    assert client.get_run(mv.run_id).data.params["train.lr"] == "0.005"
    assert mlflow_cards.read(client, name, card.version) == card


def test_a_note_people_wrote_in_the_description_survives_the_cards_rewrite(client, name):
    """The card's section is rewritten (a re-scoring adds matured rows); what people wrote
    above or below it in the MLflow UI stays."""
    card = carded(client, name, "2026-02-10 00:00:00", 0.005)
    written = client.get_model_version(name, card.version).description
    note = "On-call 2026-02-12: traffic of the spring sale, do not roll back before Monday."
    client.update_model_version(name, card.version, description=f"{note}\n\n{written}\n\nSee INC-42.")
    mlflow_cards.write(client, card.model_copy(update={"snapshot": card.snapshot}))
    again = client.get_model_version(name, card.version).description
    assert again.startswith(note + "\n\n" + text.CARD_START)
    assert again.endswith(text.CARD_END + "\n\nSee INC-42.")
    assert again.count(text.CARD_START) == 1


def test_a_version_without_the_card_deploy_writes_is_refused_in_one_line_saying_how_to_register_it(
    client, name
):
    version = register(client, name, {registry.TRAINING_DATA: '{"snapshot": "2026-01-20 00:00:00"}'})
    with pytest.raises(MlflowException) as refused:
        mlflow_cards.read(client, name, version)
    assert refused.value.message == (
        f"{name} v{version} has no model card (model_card/card.json in its run, which deploy writes): "
        "register the model again by running its deploy stage (`nextbuy deploy`)"
    )
