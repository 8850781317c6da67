"""Presets: every file under presets/ validates over params.yaml, and `nextbuy preset` turns it into
dvc exp run flags that set exactly its values; each registers under a deploy.model_name of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nextbuy.config import read_params
from nextbuy.presets import params_with, set_param_flags

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


def _apply_flags(params: dict, flags: list[str]) -> dict:
    """What ``dvc exp run -S key=value ...`` does to the params (values parsed as YAML)."""
    assert flags[::2] == ["-S"] * (len(flags) // 2)
    for flag in flags[1::2]:
        dotted, text = flag.split("=", 1)
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        assert leaf in node, f"{dotted} is not a knob of params.yaml"
        node[leaf] = yaml.safe_load(text)
    return params


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_preset_validates_and_its_flags_set_exactly_its_values(preset: Path) -> None:
    flags = set_param_flags(preset, ROOT / "params.yaml")
    assert all(not any(c.isspace() for c in f) for f in flags)  # survives $(...) word splitting
    assert _apply_flags(read_params(ROOT / "params.yaml"), flags) == params_with(preset, ROOT / "params.yaml")


def test_a_misspelt_section_or_a_value_out_of_bounds_is_refused_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trian: {epochs: 1}\n")
    with pytest.raises(ValueError, match="trian"):
        set_param_flags(bad, ROOT / "params.yaml")
    bad.write_text("train: {epochs: 0}\n")
    with pytest.raises(ValueError, match="epochs"):
        set_param_flags(bad, ROOT / "params.yaml")
    bad.write_text("train: {epoch: 3}\n")
    with pytest.raises(ValueError, match="epoch"):
        set_param_flags(bad, ROOT / "params.yaml")


def test_a_value_with_blanks_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest: {snapshot: '2026-02-01 00:00'}\n")
    with pytest.raises(ValueError, match="blanks"):
        set_param_flags(bad, ROOT / "params.yaml")


def test_every_preset_has_a_registry_line_of_its_own() -> None:
    """A preset's store is another catalogue: its models never share the default store's
    registered model (champion, gate comparison, monitor), nor another preset's."""
    names = [params_with(p, ROOT / "params.yaml")["deploy"]["model_name"] for p in PRESETS]
    default = read_params(ROOT / "params.yaml")["deploy"]["model_name"]
    assert default not in names, dict(zip(PRESETS, names, strict=True))
    assert len(set(names)) == len(names), dict(zip(PRESETS, names, strict=True))
