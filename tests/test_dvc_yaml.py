"""dvc.yaml cannot go stale: every stage's deps cover the project modules its
command imports, its outs are the paths of ``nextbuy.paths``, and params.yaml
holds exactly the knobs of ``nextbuy.config``."""

from __future__ import annotations

import ast
from pathlib import Path, PurePosixPath

import pytest
import yaml

from nextbuy import paths, yaml_io
from nextbuy.config import SECTIONS, flat_fields, read_params
from tests.conftest import ROOT
from tests.imports import import_closure, imported_modules, module_file

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = DVC["stages"]


# --- import closure -------------------------------------------------------------------------------


def runs_code(file: Path) -> bool:
    """A package __init__.py holding only a docstring cannot change what a stage writes."""
    body = ast.parse(file.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


def stage_modules(name: str) -> set[str]:
    """What ``nextbuy <stage>`` imports: the CLI package's modules and their module-level imports
    (another command's lazy imports never run), then the stage module."""
    files = [f for f in module_file("nextbuy.cli").parent.glob("*.py") if f.stem != "__main__"]
    cli = {"nextbuy.cli"} | {f"nextbuy.cli.{f.stem}" for f in files if f.stem != "__init__"}
    imported = set().union(*(imported_modules(f, module_level_only=True) for f in files)) - cli
    return import_closure(imported | {f"nextbuy.stages.{name}"}) | cli


def uncovered(modules: set[str], deps: list[str]) -> list[str]:
    """Project source files of ``modules`` that no dep (file or enclosing folder) covers."""
    dep_paths = [PurePosixPath(d) for d in deps]
    missing = []
    for module in sorted(modules):
        file = module_file(module)
        rel = PurePosixPath(file.relative_to(ROOT).as_posix())
        if runs_code(file) and not any(rel == d or d in rel.parents for d in dep_paths):
            missing.append(str(rel))
    return missing


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_deps_cover_every_module_its_command_imports(name):
    assert STAGES[name]["cmd"] == f"nextbuy {name.replace('_', '-')}"
    missing = uncovered(stage_modules(name), STAGES[name]["deps"])
    assert not missing, f"dvc.yaml stage {name!r}: add these deps (the stage imports them): {missing}"


def test_closure_check_catches_a_missing_dep():
    deps = [d for d in STAGES["train"]["deps"] if d != "src/nextbuy/config"]
    assert "src/nextbuy/config/loader.py" in uncovered(stage_modules("train"), deps)
    assert "src/nextbuy/domain/graph/blade/model.py" in uncovered(
        stage_modules("train"), ["src/nextbuy/stages"]
    )


def test_lazy_imports_count():
    assert "nextbuy.mlops.dashboards" in {m.rsplit(".", 1)[0] for m in stage_modules("monitor")}


# --- outs and paths.py ----------------------------------------------------------------------------


def _outs(kind: str) -> dict[str, list[Path]]:
    return {
        name: [Path(next(iter(o)) if isinstance(o, dict) else o) for o in stage.get(kind, [])]
        for name, stage in STAGES.items()
    }


def _is_plot_data(out: Path) -> bool:
    """A stage's plot CSV: an out under plots/, drawn by dvc.yaml's top-level plots."""
    return paths.PLOTS in out.parents


def test_every_dvc_out_is_a_path_of_paths_py():
    declared = {v for v in vars(paths).values() if isinstance(v, Path)}
    outs = {o for stage in _outs("outs").values() for o in stage if not _is_plot_data(o)}
    assert outs - declared == set()


def test_every_path_of_paths_py_is_a_dvc_out_or_inside_or_above_one():
    outs = {o for stage in _outs("outs").values() for o in stage}
    for name, value in vars(paths).items():
        # INPUTS is what the stages read (a dep), not what they write
        if isinstance(value, Path) and value not in (paths.METRICS, paths.PLOTS, paths.INPUTS):
            assert any(value == o or o in value.parents or value in o.parents for o in outs), (
                f"paths.{name} = {value} is in no dvc.yaml out"
            )


def test_metrics_and_plots_live_where_paths_py_says():
    for name, metrics in _outs("metrics").items():
        assert metrics == [paths.metrics_file(name)]
    for name, outs in _outs("outs").items():
        assert all(o.parent == paths.plots_dir(name) for o in outs if _is_plot_data(o))
    # stage `plots:` would each be drawn once more on their own (DVC auto-plots): plot data are outs
    assert [name for name, plots in _outs("plots").items() if plots] == []


# --- params.yaml == config fields -----------------------------------------------------------------


def test_params_yaml_holds_exactly_the_config_fields():
    fields = flat_fields()
    # a field holding a mapping (engine.spark.conf: Spark's own settings) is one knob
    keys = {
        next((f for f in fields if k.startswith(f + ".")), k)
        for k, _ in yaml_io.dotted_leaves(read_params(ROOT / "params.yaml"))
    }
    assert keys - flat_fields() == set(), "params.yaml keys that no config field reads"
    assert flat_fields() - keys == set(), "config fields missing from params.yaml (add them, with a comment)"


def test_every_knob_has_a_comment():
    for number, line in enumerate((ROOT / "params.yaml").read_text().splitlines(), 1):
        if ":" in line and not line.lstrip().startswith("#") and line.split(":", 1)[1].strip():
            assert "#" in line.split(":", 1)[1], (
                f"params.yaml:{number}: a knob without a comment: {line.strip()}"
            )


def test_a_missing_knob_is_an_error_naming_it(tmp_path):
    from pydantic import ValidationError

    from nextbuy.config import TrainConfig, load_section

    params = read_params(ROOT / "params.yaml")
    del params["train"]["n_layers"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ValidationError, match="n_layers"):
        load_section(TrainConfig, tmp_path / "params.yaml")


def test_params_sections_are_the_dvc_stages():
    assert list(SECTIONS) == list(STAGES)


def test_every_output_is_cached_so_a_failed_stage_can_restore_it():
    """nextbuy.restore puts a failed stage's outputs back from the DVC cache: an uncached
    out (cache: false) would be lost when dvc repro deletes it before the stage runs."""
    for name, stage in STAGES.items():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind, []):
                if isinstance(out, dict):
                    options = next(iter(out.values())) or {}
                    assert options.get("cache", True), f"{name}: {next(iter(out))} is not cached"


@pytest.mark.parametrize("name", ["deploy", "monitor"])
def test_a_stage_whose_effect_lives_outside_its_outputs_is_never_restored_from_the_run_cache(name):
    """deploy moves the registry's aliases, monitor fills the Evidently workspace: DVC's
    run-cache would bring back their files for params seen before while the registry and the
    workspace stay as they are. DVC keeps no run-cache for a stage with a persistent output."""
    from dvc.stage.cache import _can_hash

    outs = STAGES[name].get("outs", [])
    assert any(isinstance(o, dict) and (next(iter(o.values())) or {}).get("persist") for o in outs)
    stage = type("Stage", (), {"is_callback": False, "always_changed": False, "cmd": "x"})()
    stage.deps = [type("Dep", (), {"protocol": "local", "def_path": "d", "get_hash": lambda self: "h"})()]
    stage.outs = [
        type("Out", (), {"protocol": "local", "def_path": "o", "persist": True, "is_in_repo": True})()
    ]
    assert not _can_hash(stage)


@pytest.mark.parametrize("name", ["ingest", "traffic"])
def test_the_stages_that_read_a_stores_files_depend_on_the_inputs_folder(name):
    """Edit or replace a file under inputs/ and DVC re-runs the stage (a path outside it is
    refused by the stage, tests/stages/test_ingest.py)."""
    assert str(paths.INPUTS) in STAGES[name]["deps"]
    assert (ROOT / paths.INPUTS).is_dir()
