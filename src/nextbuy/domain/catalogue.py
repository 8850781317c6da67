"""Which catalogue a model belongs to, as one short deterministic identity.

A model scores product *ids*, and an id means a product only within the catalogue that
numbered it: product 17 of the 5,000-product store is not product 17 of the 100,000-product
one. Deploy records the identity on every registered version; the gate compares a
candidate only with a champion that belongs to the candidate's store, and the monitor
watches a store's traffic only with a champion that belongs to it (:func:`mismatch`).

A store grows: products launch, and a product keeps its id. So a model belongs to a store
whose catalogue is the model's own, or the model's own followed by products added since
(every id below the model's count still the same product): the model serves those new
products as cold. A store whose products were renumbered, replaced or recategorised is
another catalogue.

The identity is ``"<products>:<hash>"``: the number of products and the first
:data:`HASH_CHARS` hex digits of the SHA-256 of (product_id, product_key, category) in
product_id order. The price is left out (it changes while the product stays the same); the
category is in, so two simulated stores of the same size but another seed, whose keys are
both ``"0".."n-1"``, differ. Hashing 10^6 products takes well under a second.
"""

from __future__ import annotations

import hashlib

import pandas as pd

HASH_CHARS = 16


def identity(products: pd.DataFrame) -> str:
    """``"<products>:<hash>"`` of a products table (schemas.PRODUCTS), whatever its row order."""
    ordered = products.sort_values("product_id", kind="stable")
    digest = hashlib.sha256()
    digest.update(ordered["product_id"].to_numpy(dtype="<i8").tobytes())
    digest.update(ordered["category"].to_numpy(dtype="<i8").tobytes())
    digest.update("\n".join(ordered["product_key"].astype(str)).encode())
    return f"{len(ordered)}:{digest.hexdigest()[:HASH_CHARS]}"


def describe(catalogue: str | None) -> str:
    """For people: ``"5,000 products (catalogue 5000:1a2b…)"``; an unrecorded one says so."""
    if catalogue is None:
        return "an unknown catalogue (none recorded: registered before deploy recorded catalogues)"
    count, _, _ = catalogue.partition(":")
    size = f"{int(count):,} products" if count.isdigit() else "products"
    return f"{size} (catalogue {catalogue})"


def mismatch(model: str | None, store: pd.DataFrame) -> str | None:
    """Why a model of catalogue ``model`` does not belong to the store of ``store`` (its
    products table); None when it does: the store's catalogue is the model's, or the model's
    followed by products added since. A model that records no catalogue never belongs."""
    count = (model or "").partition(":")[0]
    if count.isdigit() and int(count) <= len(store):
        first = store.sort_values("product_id", kind="stable").iloc[: int(count)]
        if identity(first) == model:
            return None
    return f"it was trained on {describe(model)}, this store is {describe(identity(store))}"
