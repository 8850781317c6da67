"""The card's record, pure: params as dotted searchable text and their diff; matured rows appended,
a recheck of the same day replacing its rows, the latest check flagged below a floor."""

from __future__ import annotations

import yaml

from nextbuy.model_card.record import (
    add_matured,
    flagged,
    flat_params,
    latest_matured,
    param_text,
    params_diff,
)
from nextbuy.model_card.text import description
from tests.model_card.cards import a_card, matured


def test_params_flatten_to_dotted_text_that_a_search_matches():
    flat = flat_params(
        {"train": {"lr": 0.005, "weighting": "importance", "id_embeddings": True}, "x": [1, 2]}
    )
    assert flat == {
        "train.lr": "0.005",
        "train.weighting": "importance",
        "train.id_embeddings": "true",
        "x": "[1, 2]",
    }
    assert param_text(yaml.safe_load("0.005")) == flat["train.lr"]  # `models find --param train.lr=0.005`
    assert param_text(None) == "null"


def test_params_diff_lists_changed_added_and_removed_keys():
    diff = params_diff({"a": "1", "b": "2", "gone": "x"}, {"a": "1", "b": "3", "new": "y"})
    assert [(c.key, c.before, c.after) for c in diff] == [
        ("b", "2", "3"),
        ("gone", "x", None),
        ("new", None, "y"),
    ]


def test_matured_rows_append_and_a_recheck_of_the_same_day_replaces_its_rows():
    card = add_matured(a_card(), [matured("2026-03-10 00:00:00", 7, 0.66)])
    card = add_matured(
        card, [matured("2026-03-10 00:00:00", 7, 0.64), matured("2026-03-10 00:00:00", 14, 0.65)]
    )
    card = add_matured(card, [matured("2026-03-17 00:00:00", 7, 0.45, ["auc 0.450 < 0.500"])])
    assert [(r.checked_at[:10], r.maturity_days, r.auc) for r in card.matured] == [
        ("2026-03-10", 7, 0.64),
        ("2026-03-10", 14, 0.65),
        ("2026-03-17", 7, 0.45),
    ]
    assert latest_matured(card).auc == 0.45
    assert flagged(card) == ["7d: auc 0.450 < 0.500"]
    assert description(card).startswith("# nextbuy-tiny v2\n\n> **FLAGGED**")
