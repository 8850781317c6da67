"""YAML read through libyaml's parser gives the documents ``yaml.safe_load`` gives."""

from __future__ import annotations

import pytest
import yaml

from nextbuy import yaml_io
from tests.conftest import ROOT

PROJECT_FILES = ["params.yaml", "dvc.yaml", "presets/tiny.yaml", "monitoring/dashboard.yaml"]


@pytest.mark.parametrize("name", PROJECT_FILES)
def test_the_projects_files_read_as_safe_load_reads_them(name):
    text = (ROOT / name).read_text()
    assert yaml_io.load(text) == yaml.safe_load(text)


def test_libyaml_parses_where_pyyaml_has_it():
    assert yaml_io.PARSING_LOADER is (yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader)
    assert issubclass(yaml_io.StrictSafeLoader, yaml_io.PARSING_LOADER)


def test_what_a_safe_loader_refuses_is_still_refused():
    assert yaml_io.load("") is None
    assert yaml_io.load("when: 2026-01-02\nflag: yes\n") == yaml.safe_load("when: 2026-01-02\nflag: yes\n")
    with pytest.raises(yaml_io.DocumentError):
        yaml_io.load("!!python/object/apply:os.system ['true']")
    with pytest.raises(yaml_io.DocumentError, match=r"^params.yaml:2:1: "):
        yaml_io.load("a: [1, 2\n", "params.yaml")


def test_a_key_given_twice_is_refused_naming_both_lines():
    with pytest.raises(yaml_io.DocumentError) as err:
        yaml_io.load("train:\n  epochs: 6\n  lr: 0.1\n  epochs: 8\n", "params.yaml")
    assert str(err.value) == "params.yaml:4:3: the key 'epochs' is given twice (first on line 2)"
    assert yaml_io.load("a: {epochs: 6}\nb: {epochs: 6}\n") == {"a": {"epochs": 6}, "b": {"epochs": 6}}


def test_a_tab_is_named_with_its_line_and_column():
    with pytest.raises(yaml_io.DocumentError) as err:
        yaml_io.load("train:\n\tepochs: 6\n", "params.yaml")
    assert str(err.value) == "params.yaml:2:1: a tab: YAML indents with spaces only"


def test_a_nested_mapping_reads_as_dotted_leaves_in_document_order():
    params = yaml_io.load("train:\n  epochs: 6\n  sampler: {fanout: [5, 3]}\nserving: {port: 8000}\n")
    assert list(yaml_io.dotted_leaves(params)) == [
        ("train.epochs", 6),
        ("train.sampler.fanout", [5, 3]),
        ("serving.port", 8000),
    ]
