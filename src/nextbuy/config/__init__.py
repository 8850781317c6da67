"""Typed view of params.yaml: one pydantic model per stage section, one for the ``engine``
section several stages share, and one for the ``serving`` section that ``nextbuy serve`` reads
(no stage does).

Types and bounds only: every value lives in params.yaml (no defaults here), so
``dvc params diff`` shows every change a run would see. Each stage reads its own section
(``load_section(TrainConfig)``: one generic loader, typed by the model it is given), so DVC's
per-stage ``params:`` lists stay honest: changing ``train.epochs`` re-runs train and what
follows, never ingest.

Parts: ``base`` (what every section shares: strict types, finite numbers, date params),
``ingest``, ``stages`` and ``engine`` (the section models, grouped as params.yaml groups them),
``loader`` (reading the file and validating a section).
"""

from nextbuy.config.base import Section
from nextbuy.config.engine import EngineConfig, SparkConfig
from nextbuy.config.ingest import EventsConfig, IngestConfig, ReplayConfig, SimulatorConfig, SplitConfig
from nextbuy.config.loader import (
    ALL_SECTIONS,
    PARAMS_FILE,
    SECTION_OF,
    SECTIONS,
    SERVICE_SECTIONS,
    SHARED_SECTIONS,
    NoParamsFile,
    flat_fields,
    load_section,
    merge,
    model_of,
    read_params,
    section_config,
    with_changes,
)
from nextbuy.config.stages import (
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
    "SECTION_OF",
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
    "NoParamsFile",
    "ReplayConfig",
    "RetrievalConfig",
    "Section",
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
