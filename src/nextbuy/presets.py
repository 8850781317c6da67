"""Params presets: files under ``presets/`` that override some of params.yaml's knobs
(merged key by key), e.g. a store of a given size.

:func:`set_param_flags` turns one into ``dvc exp run``'s ``-S key=value`` flags, after checking
that every section it touches still validates (a misspelt key fails here, naming it, instead of
in the middle of a run): ``dvc exp run $(nextbuy preset presets/large-store-1m.yaml)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from nextbuy import yaml_io
from nextbuy.config import ALL_SECTIONS, merge, read_params, section_config
from nextbuy.preset_files import read_mapping


def read_preset(path: str | os.PathLike) -> dict[str, Any]:
    """The preset's overrides (a mapping of params sections)."""
    overrides = read_mapping(path)
    unknown = sorted(set(overrides) - set(ALL_SECTIONS))
    if unknown:
        raise ValueError(
            f"{path}: unknown params section(s) {unknown}; expected some of {sorted(ALL_SECTIONS)}"
        )
    return overrides


def applied(params: Mapping[str, Any], overrides: Mapping[str, Any], origin: str = "preset") -> dict:
    """``params`` with ``overrides`` merged in, every overridden section validated (a ValueError
    naming ``origin`` and the bad key otherwise)."""
    merged = merge(params, overrides)
    try:
        for section in overrides:
            section_config(merged, ALL_SECTIONS[section])
    except ValidationError as err:
        raise ValueError(f"{origin}: {err}") from None
    return merged


def params_with(preset: str | os.PathLike, params_file: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    """The whole params of ``params_file`` with ``preset`` applied (validated)."""
    return applied(read_params(params_file), read_preset(preset), f"{preset} over {params_file}")


def set_param_flags(preset: str | os.PathLike, params_file: str | os.PathLike = "params.yaml") -> list[str]:
    """``dvc exp run`` flags (``-S key=value``, values in YAML) that apply ``preset`` to ``params_file``."""
    overrides = read_preset(preset)
    applied(read_params(params_file), overrides, f"{preset} over {params_file}")  # validate first
    flags = []
    for key, value in yaml_io.dotted_leaves(overrides):
        # compact JSON is YAML with no blanks, so the flags survive the shell's word splitting
        text = json.dumps(value, separators=(",", ":"))
        if any(c.isspace() for c in text):
            raise ValueError(f"{preset}: {key}: a value with blanks cannot pass through $(...)")
        flags += ["-S", f"{key}={text}"]
    return flags
