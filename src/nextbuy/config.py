"""Typed view of params.yaml: one pydantic model per stage section, and one for the
``serving`` section that ``nextbuy serve`` reads (no stage does).

Types and bounds only: every value lives in params.yaml (no defaults here), so
``dvc params diff`` shows every change a run would see. Each stage reads its own
section (``load_section``), so DVC's per-stage ``params:`` lists stay honest:
changing ``train.epochs`` re-runs train and what follows, never ingest.

The models live in ``config_base`` (what every section shares), ``config_ingest`` and
``config_stages``; this module reads params.yaml, validates sections and re-exports them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from pydantic import BaseModel

from nextbuy import yaml_io
from nextbuy.config_base import _Section
from nextbuy.config_engine import EngineConfig, SparkConfig
from nextbuy.config_ingest import EventsConfig, IngestConfig, ReplayConfig, SimulatorConfig, SplitConfig
from nextbuy.config_stages import (
    CalibrateConfig,
    DeployConfig,
    DriftConfig,
    LabelDelayConfig,
    MonitorConfig,
    RetrievalConfig,
    ServedRankingConfig,
    ServingConfig,
    ThresholdsConfig,
    TrafficConfig,
    TrainConfig,
)

__all__ = [
    "ALL_SECTIONS",
    "PARAMS_FILE",
    "SECTIONS",
    "SERVICE_SECTIONS",
    "SHARED_SECTIONS",
    "CalibrateConfig",
    "DeployConfig",
    "DriftConfig",
    "EngineConfig",
    "EventsConfig",
    "IngestConfig",
    "LabelDelayConfig",
    "MonitorConfig",
    "ReplayConfig",
    "RetrievalConfig",
    "ServedRankingConfig",
    "ServingConfig",
    "SimulatorConfig",
    "SparkConfig",
    "SplitConfig",
    "ThresholdsConfig",
    "TrafficConfig",
    "TrainConfig",
    "flat_fields",
    "load_section",
    "merge",
    "model_of",
    "read_params",
    "section_config",
    "with_changes",
]

PARAMS_FILE = "params.yaml"


SECTIONS: dict[str, type[_Section]] = {
    "ingest": IngestConfig,
    "label_delay": LabelDelayConfig,
    "train": TrainConfig,
    "calibrate": CalibrateConfig,
    "thresholds": ThresholdsConfig,
    "deploy": DeployConfig,
    "traffic": TrafficConfig,
    "monitor": MonitorConfig,
}
# Sections no DVC stage reads: the settings of a service run next to the pipeline.
# Sections several stages read beside their own, no stage of their own: what runs their data-heavy parts.
SHARED_SECTIONS: dict[str, type[_Section]] = {"engine": EngineConfig}
SERVICE_SECTIONS: dict[str, type[_Section]] = {"serving": ServingConfig}
ALL_SECTIONS: dict[str, type[_Section]] = {**SECTIONS, **SHARED_SECTIONS, **SERVICE_SECTIONS}

S = TypeVar("S", bound=_Section)


def read_params(params_file: str | os.PathLike = PARAMS_FILE) -> dict[str, Any]:
    """The whole params file as a dict (every section)."""
    path = Path(params_file)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no params file (every knob lives there)")
    return yaml_io.load(path.read_text()) or {}


def model_of(dotted: str) -> type[_Section]:
    """The pydantic model of a section or sub-section: ``train``, ``ingest.simulator``."""
    name, *rest = dotted.split(".")
    model: Any = ALL_SECTIONS[name]
    for key in rest:
        model = model.model_fields[key].annotation
    return model


@overload
def section_config(params: Mapping[str, Any], dotted: Literal["ingest"], **changes: Any) -> IngestConfig: ...


@overload
def section_config(
    params: Mapping[str, Any], dotted: Literal["label_delay"], **changes: Any
) -> LabelDelayConfig: ...


@overload
def section_config(params: Mapping[str, Any], dotted: Literal["train"], **changes: Any) -> TrainConfig: ...


@overload
def section_config(
    params: Mapping[str, Any], dotted: Literal["calibrate"], **changes: Any
) -> CalibrateConfig: ...


@overload
def section_config(
    params: Mapping[str, Any], dotted: Literal["thresholds"], **changes: Any
) -> ThresholdsConfig: ...


@overload
def section_config(params: Mapping[str, Any], dotted: Literal["deploy"], **changes: Any) -> DeployConfig: ...


@overload
def section_config(
    params: Mapping[str, Any], dotted: Literal["traffic"], **changes: Any
) -> TrafficConfig: ...


@overload
def section_config(
    params: Mapping[str, Any], dotted: Literal["monitor"], **changes: Any
) -> MonitorConfig: ...


@overload
def section_config(
    params: Mapping[str, Any], dotted: Literal["serving"], **changes: Any
) -> ServingConfig: ...


@overload
def section_config(params: Mapping[str, Any], dotted: Literal["engine"], **changes: Any) -> EngineConfig: ...


@overload
def section_config(params: Mapping[str, Any], dotted: str, **changes: Any) -> Any: ...


def section_config(params: Mapping[str, Any], dotted: str, **changes: Any) -> Any:
    """Validate ``params[dotted]`` (every key required), with ``changes`` applied on top
    (a nested section given as a dict is merged key by key)."""
    node: Any = params
    for key in dotted.split("."):
        node = (node or {}).get(key)
    return model_of(dotted).model_validate(merge(node or {}, changes))


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


@overload
def load_section(name: Literal["ingest"], params_file: str | os.PathLike = ...) -> IngestConfig: ...


@overload
def load_section(name: Literal["label_delay"], params_file: str | os.PathLike = ...) -> LabelDelayConfig: ...


@overload
def load_section(name: Literal["train"], params_file: str | os.PathLike = ...) -> TrainConfig: ...


@overload
def load_section(name: Literal["calibrate"], params_file: str | os.PathLike = ...) -> CalibrateConfig: ...


@overload
def load_section(name: Literal["thresholds"], params_file: str | os.PathLike = ...) -> ThresholdsConfig: ...


@overload
def load_section(name: Literal["deploy"], params_file: str | os.PathLike = ...) -> DeployConfig: ...


@overload
def load_section(name: Literal["traffic"], params_file: str | os.PathLike = ...) -> TrafficConfig: ...


@overload
def load_section(name: Literal["monitor"], params_file: str | os.PathLike = ...) -> MonitorConfig: ...


@overload
def load_section(name: Literal["serving"], params_file: str | os.PathLike = ...) -> ServingConfig: ...


@overload
def load_section(name: Literal["engine"], params_file: str | os.PathLike = ...) -> EngineConfig: ...


@overload
def load_section(name: str, params_file: str | os.PathLike = ...) -> _Section: ...


def load_section(name: str, params_file: str | os.PathLike = PARAMS_FILE) -> _Section:
    """Read one section of the params file and validate it (every knob must be there)."""
    return section_config(read_params(params_file), name)


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
