"""A package face that hands on some names only when first used (PEP 562's module
``__getattr__``): the face of a package whose parts import heavy dependencies (MLflow, faiss)
stays light to import, and each such name comes from its part on first use, then stays."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, part_of: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """The ``__getattr__`` of ``package``: a name of ``part_of`` is imported from its part
    (``package.<part>``) into ``namespace`` (the face's globals) on first use."""

    def __getattr__(name: str) -> Any:
        part = part_of.get(name)
        if part is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{part}"), name)
        namespace[name] = value
        return value

    return __getattr__
