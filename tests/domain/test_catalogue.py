"""Catalogue identity: deterministic, blind to row order and prices, different for another
size, other product keys or other categories; mismatches named for people."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nextbuy.domain import catalogue


def products(n: int = 5, seed: int = 0, keys: list[str] | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "product_id": np.arange(n, dtype=np.int64),
            "product_key": keys or [str(i) for i in range(n)],
            "category": rng.integers(0, 4, n).astype(np.int64),
            "price": rng.uniform(1, 50, n),
        }
    )


def test_identity_is_the_size_and_a_short_hash_and_is_deterministic():
    ident = catalogue.identity(products())
    count, _, digest = ident.partition(":")
    assert count == "5"
    assert len(digest) == catalogue.HASH_CHARS
    assert int(digest, 16) >= 0
    assert catalogue.identity(products()) == ident


def test_identity_ignores_row_order_and_prices():
    table = products()
    shuffled = table.sample(frac=1.0, random_state=1)
    repriced = table.assign(price=table["price"] * 1.3)
    assert catalogue.identity(shuffled) == catalogue.identity(repriced) == catalogue.identity(table)


@pytest.mark.parametrize(
    "other",
    [
        products(n=6),  # another size
        products(seed=9),  # same keys, other categories: a simulated store of another seed
        products(keys=["a", "b", "c", "d", "e"]),  # other products
    ],
)
def test_another_catalogue_has_another_identity(other):
    assert catalogue.identity(other) != catalogue.identity(products())


def test_the_mapping_of_ids_to_keys_counts():
    swapped = products(keys=["1", "0", "2", "3", "4"])
    assert catalogue.identity(swapped) != catalogue.identity(products())


def test_mismatch_is_none_for_the_same_catalogue_and_names_both_otherwise():
    small, large = products(5000), products(100_000, seed=1)
    assert catalogue.mismatch(catalogue.identity(small), small) is None
    why = catalogue.mismatch(catalogue.identity(small), large)
    assert "5,000 products" in why
    assert "100,000 products" in why
    assert catalogue.identity(small) in why
    assert catalogue.identity(large) in why


def test_a_store_that_added_products_since_still_belongs():
    before = products(5)
    launched = pd.DataFrame(
        {"product_id": [5, 6], "product_key": ["new-a", "new-b"], "category": [1, 2], "price": [3.0, 4.0]}
    )
    grown = pd.concat([launched, before], ignore_index=True)  # row order does not matter
    assert catalogue.mismatch(catalogue.identity(before), grown) is None


@pytest.mark.parametrize(
    "store",
    [
        products(4),  # fewer products than the model knew
        products(7, seed=9),  # as many and more, but the first five are other products
        pd.concat([products(keys=["1", "0", "2", "3", "4"]), products(7).iloc[5:]]),  # renumbered
    ],
)
def test_a_store_whose_first_products_changed_does_not_belong(store):
    assert catalogue.mismatch(catalogue.identity(products()), store) is not None


def test_a_model_recording_no_catalogue_never_belongs():
    why = catalogue.mismatch(None, products())
    assert why is not None
    assert "unknown catalogue" in why
    assert "5 products" in why
