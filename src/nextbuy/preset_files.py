"""A preset file as it is written: a mapping of params sections, and its keys dotted
(``train.epochs``). YAML only, no validation, so the Airflow DAGs' light modules can read a
preset; ``nextbuy.presets`` checks its sections and validates what it sets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nextbuy import yaml_io


def read_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """The preset's overrides, a mapping of params sections (ValueError / FileNotFoundError
    naming the file otherwise)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such preset")
    overrides = yaml_io.load(path.read_text(), str(path)) or {}
    if not isinstance(overrides, Mapping):
        raise ValueError(f"{path}: a preset is a mapping of params sections")
    return dict(overrides)


def dotted_overrides(path: str | os.PathLike) -> dict[str, Any]:
    """The preset at ``path`` as dotted params keys and their values."""
    return dict(yaml_io.dotted_leaves(read_mapping(path)))
