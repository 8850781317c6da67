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
    assert yaml_io.SAFE_LOADER is (yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader)


def test_what_a_safe_loader_refuses_is_still_refused():
    assert yaml_io.load("") is None
    assert yaml_io.load("when: 2026-01-02\nflag: yes\n") == yaml.safe_load("when: 2026-01-02\nflag: yes\n")
    with pytest.raises(yaml.YAMLError):
        yaml_io.load("!!python/object/apply:os.system ['true']")
    with pytest.raises(yaml.YAMLError):
        yaml_io.load("a: [1, 2\n")


def test_a_nested_mapping_reads_as_dotted_leaves_in_document_order():
    params = yaml_io.load("train:\n  epochs: 6\n  sampler: {fanout: [5, 3]}\nserving: {port: 8000}\n")
    assert list(yaml_io.dotted_leaves(params)) == [
        ("train.epochs", 6),
        ("train.sampler.fanout", [5, 3]),
        ("serving.port", 8000),
    ]
