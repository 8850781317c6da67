"""A card as text, pure: the Hugging Face front matter, every section of the Markdown body, what
is not known, and a description that fits MLflow's column."""

from __future__ import annotations

import pandas as pd
import yaml

from nextbuy.model_card.record import Card, Snapshot, TopKOrder
from nextbuy.model_card.text import (
    CARD_START,
    DESCRIPTION_LIMIT,
    description,
    description_with_notes,
    people_notes,
    render,
)
from tests.model_card.cards import a_card, matured


def test_the_card_file_has_hugging_face_front_matter_and_every_section():
    text = render(a_card(matured=[matured("2026-03-10 00:00:00", 7, 0.66)]))
    head, body = text.split("---\n", 2)[1:]
    meta = yaml.safe_load(head)
    assert meta["library_name"] == "nextbuy"
    assert meta["datasets"] == ["nextbuy-tiny@2026-02-10 00:00:00"]
    release, later = meta["model-index"][0]["results"]
    assert release["dataset"] == {
        "type": "nextbuy-snapshot",
        "name": "nextbuy-tiny@2026-02-10 00:00:00",
        "split": "test",
        "revision": "ab12.dir",
    }
    assert {"type": "auc", "value": 0.71, "name": "auc (release, delay-corrected labels)"} in release[
        "metrics"
    ]
    assert later["dataset"]["split"] == "matured 7d"
    assert [m["value"] for m in later["metrics"] if m["type"] == "auc"] == [0.66]
    for section in ("## Data", "## Code and params", "## Release gate", "## Calibration and thresholds"):
        assert section in body
    assert "25.0% of the training impressions' eventual conversions were still unseen" in body
    assert "| `train.lr` | 0.005 | 0.01 |" in body
    assert "+0.010 [-0.010, +0.030]" in body  # the gate's CI against champion v1


def test_what_is_not_known_reads_unknown_with_the_reason():
    card = Card(model_name="m", version="1", unknown=["label maturity at training: not recorded"])
    body = description(card)
    assert "Label maturity at training**: unknown" in body
    assert "## Not known\n\n- label maturity at training: not recorded" in body


def test_the_description_fits_mlflows_column_by_leaving_out_the_oldest_matured_rows():
    rows = [matured(str(pd.Timestamp("2026-03-01") + pd.Timedelta(days=i)), 7, 0.6) for i in range(120)]
    card = a_card(matured=rows)
    text = description(card)
    assert len(text) <= DESCRIPTION_LIMIT < len(render(card))
    assert "older rows are in the artifact model_card/README.md" in text
    assert rows[-1].checked_at[:10] in text
    assert rows[0].checked_at[:10] not in text


def test_a_card_of_replayed_exposures_says_so_and_what_its_figures_measure():
    snapshot = Snapshot(snapshot="2011-09-01 00:00:00", rows={"train": 700}, exposures="replayed")
    body = render(a_card(snapshot=snapshot))
    assert "| exposures | replayed |" in body
    assert "**Replayed exposures**" in body
    assert "not the effect of showing" in body
    logged = render(a_card(snapshot=Snapshot(snapshot="2026-02-10 00:00:00", exposures="logged")))
    assert "**Replayed exposures**" not in logged


def test_the_card_says_which_top_k_order_is_served_and_why():
    order = TopKOrder(
        served="popularity",
        reason="popularity ranked the held-out purchases better than the model",
        judged_on="next purchases of the calibration split's sessions",
        k=20,
        hits={"model": 0.05, "popularity": 0.08},
    )
    body = render(a_card(top_k_order=order))
    assert "## Top-K order" in body
    assert "Served: **popularity**: popularity ranked the held-out purchases better" in body
    assert "| popularity | 0.0800 |" in body
    assert "decision are the model's" in body
    assert "Top-K order: unknown" in render(a_card())  # a version from before the choice
    smoothed = order.model_copy(
        update={"served": "co_purchase", "prior": 30.0, "prior_hits": {"0": 0.06, "30": 0.07}}
    )
    smoothed_body = render(a_card(top_k_order=smoothed))
    assert "the prior served: 30 pseudo-counts" in smoothed_body
    assert "| 30 | 0.0700 |" in smoothed_body


def test_a_description_written_by_hand_is_kept_above_the_card_and_the_whole_fits():
    card = a_card(matured=[matured(f"2026-03-{d:02d} 00:00:00", 7, 0.6) for d in range(1, 29)])
    note = "Rolled back once on 2026-03-02: see the incident review." * 20
    first = description_with_notes(card, note)
    assert first.startswith(note + "\n\n" + CARD_START)
    assert len(first) <= DESCRIPTION_LIMIT
    assert people_notes(first) == (note, "")
    assert description_with_notes(card, first) == first  # rewriting changes nothing people wrote
