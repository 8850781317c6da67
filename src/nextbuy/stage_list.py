"""The pipeline's stages as dvc.yaml declares them: name, help text (``desc``) and
the Airflow DAG that runs each (``meta.dag``), in file order. The CLI and the DAGs
derive their stage lists from here, so dvc.yaml stays the one declaration.

Standard library and PyYAML only: the CLI reads this at start-up and the DAG files
when Airflow parses them.
"""

from __future__ import annotations

import os
import pkgutil
import sys
from dataclasses import dataclass
from pathlib import Path

from nextbuy import yaml_io

DVC_FILE = "dvc.yaml"
PACKAGE_DIR = Path(__file__).resolve().parent
# The editable install (and the docker image, /opt/nextbuy) imports the package from <project>/src/nextbuy.
PACKAGE_PROJECT = PACKAGE_DIR.parents[1]
GENERIC_HELP = "Run the {name} stage (reads its section of params.yaml)."


@dataclass(frozen=True)
class Stage:
    name: str  # the stage and its module nextbuy.stages.<name>
    desc: str  # one line of help
    dag: str | None  # meta.dag: "training" or "monitoring"
    outputs: tuple[str, ...] = ()  # outs, metrics and plots, in dvc.yaml order

    @property
    def command(self) -> str:
        """The CLI command (what dvc.yaml's ``cmd`` calls): ``label_delay`` -> ``label-delay``."""
        return self.name.replace("_", "-")


def stages(project: str | os.PathLike) -> list[Stage]:
    """The stages of ``project``'s dvc.yaml, in file order."""
    declared = (yaml_io.load((Path(project) / DVC_FILE).read_text(), DVC_FILE) or {}).get("stages") or {}
    return [
        Stage(
            name,
            str(spec.get("desc") or GENERIC_HELP.format(name=name)),
            (spec.get("meta") or {}).get("dag"),
            _outputs(spec),
        )
        for name, spec in declared.items()
    ]


def _outputs(spec: dict) -> tuple[str, ...]:
    """The paths a stage writes: its ``outs``, ``metrics`` and ``plots`` (each a path, or a
    one-key mapping of a path to its options)."""
    found: list[str] = []
    for kind in ("outs", "metrics", "plots"):
        for entry in spec.get(kind) or []:
            found += [entry] if isinstance(entry, str) else list(entry)
    return tuple(found)


def dag_stages(project: str | os.PathLike, dag: str) -> tuple[str, ...]:
    """Names of the stages whose ``meta.dag`` is ``dag``, in dvc.yaml order."""
    return tuple(s.name for s in stages(project) if s.dag == dag)


def find_project(cwd: str | os.PathLike | None = None) -> Path | None:
    """Where dvc.yaml is: the current directory (dvc runs commands at the project root),
    else the project the package is installed from; None when neither has one."""
    for candidate in (Path(cwd or Path.cwd()), PACKAGE_PROJECT):
        if (candidate / DVC_FILE).is_file():
            return candidate
    return None


def stage_modules() -> list[Stage]:
    """The stage modules present in nextbuy/stages/ (listed, not imported), generic help."""
    names = sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE_DIR / "stages")]) if not m.ispkg)
    return [Stage(name, GENERIC_HELP.format(name=name), None) for name in names]


def available(cwd: str | os.PathLike | None = None) -> list[Stage]:
    """The declared stages when a dvc.yaml is found, else the stage modules present."""
    project = find_project(cwd)
    if project is None:
        return stage_modules()
    try:
        return stages(project)
    except yaml_io.DocumentError as err:  # every command would fail on it: say it, go on
        print(f"{err} (stage help from the stage modules)", file=sys.stderr)
        return stage_modules()
