"""Reading params.yaml: the whole file, and one section validated by its model."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from nextbuy import yaml_io
from nextbuy.config.base import Section
from nextbuy.config.engine import EngineConfig
from nextbuy.config.ingest import IngestConfig
from nextbuy.config.stages import (
    CalibrateConfig,
    DeployConfig,
    LabelDelayConfig,
    MonitorConfig,
    ServingConfig,
    ThresholdsConfig,
    TrafficConfig,
    TrainConfig,
)

PARAMS_FILE = "params.yaml"

SECTIONS: dict[str, type[Section]] = {
    "ingest": IngestConfig,
    "label_delay": LabelDelayConfig,
    "train": TrainConfig,
    "calibrate": CalibrateConfig,
    "thresholds": ThresholdsConfig,
    "deploy": DeployConfig,
    "traffic": TrafficConfig,
    "monitor": MonitorConfig,
}
# Sections several stages read beside their own, no stage of their own: what runs their data-heavy parts.
SHARED_SECTIONS: dict[str, type[Section]] = {"engine": EngineConfig}
# Sections no DVC stage reads: the settings of a service run next to the pipeline.
SERVICE_SECTIONS: dict[str, type[Section]] = {"serving": ServingConfig}
ALL_SECTIONS: dict[str, type[Section]] = {**SECTIONS, **SHARED_SECTIONS, **SERVICE_SECTIONS}

S = TypeVar("S", bound=Section)


class NoParamsFile(FileNotFoundError):
    """The params file is not there: a command run outside the project folder, or a typo."""


def read_params(params_file: str | os.PathLike = PARAMS_FILE) -> dict[str, Any]:
    """The whole params file as a dict (every section)."""
    path = Path(params_file)
    if not path.exists():
        raise NoParamsFile(f"{path}: no params file (every knob lives there)")
    return yaml_io.load(path.read_text(), str(path)) or {}


def _nested_sections(name: str, model: type[Section]) -> dict[type[Section], str]:
    found = {model: name}
    for key, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, Section):
            found |= _nested_sections(f"{name}.{key}", sub)
    return found


# Where each model's section sits in params.yaml (``deploy.retrieval`` for RetrievalConfig).
SECTION_OF: dict[type[Section], str] = {
    model: dotted
    for name, top in ALL_SECTIONS.items()
    for model, dotted in _nested_sections(name, top).items()
}


def model_of(dotted: str) -> type[Section]:
    """The pydantic model of a section or sub-section: ``train``, ``ingest.simulator``."""
    name, *rest = dotted.split(".")
    model: Any = ALL_SECTIONS[name]
    for key in rest:
        model = model.model_fields[key].annotation
    return model


def section_config(params: Mapping[str, Any], model: type[S], **changes: Any) -> S:
    """``model``'s section of ``params`` validated (every key required), with ``changes`` applied
    on top (a nested section given as a dict is merged key by key)."""
    node: Any = params
    for key in SECTION_OF[model].split("."):
        node = (node or {}).get(key)
    return model.model_validate(merge(node or {}, changes))


def load_section(model: type[S], params_file: str | os.PathLike = PARAMS_FILE) -> S:
    """Read ``model``'s section of the params file and validate it (every knob must be there)."""
    return section_config(read_params(params_file), model)


def merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``changes`` applied; nested dicts are merged, not replaced."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            value = merge(out[key], value)
        out[key] = value
    return out


def with_changes(section: S, **changes: Any) -> S:
    """A validated copy of ``section`` with some fields changed (bounds checked again)."""
    return type(section).model_validate(merge(section.model_dump(), changes))


def flat_fields(model: type[BaseModel] | None = None, prefix: str = "") -> set[str]:
    """Dotted names of every knob the models declare (sub-sections expanded)."""
    if model is None:
        return set().union(*(flat_fields(m, name) for name, m in ALL_SECTIONS.items()))
    out: set[str] = set()
    for key, field in model.model_fields.items():
        dotted = f"{prefix}.{key}"
        sub = field.annotation
        out |= flat_fields(sub, dotted) if isinstance(sub, type) and issubclass(sub, BaseModel) else {dotted}
    return out
