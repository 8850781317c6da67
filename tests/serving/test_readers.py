"""The serving bundle's retrieval settings: every key of params.yaml's ``deploy.retrieval``,
within its bounds, or refused naming the file and the key."""

from __future__ import annotations

import pytest

from nextbuy.serving import readers
from tests.serving.helpers import retrieval_settings


@pytest.mark.parametrize(
    ("change", "fragment", "key"),
    [
        ({"kind": "lsh"}, "kind", "kind"),
        ({"candidates": 0}, "candidates", "candidates"),
        ({"extra": 1}, "extra", "extra"),
        ({"nprobe": "many"}, "nprobe", "nprobe"),
    ],
)
def test_unusable_retrieval_settings_raise_data_error_naming_file_and_key(tmp_path, change, fragment, key):
    import json

    from nextbuy.mlops.io import DataError

    path = tmp_path / "retrieval.json"
    path.write_text(json.dumps({**retrieval_settings().model_dump(), **change}))
    with pytest.raises(DataError) as err:
        readers.read_retrieval(path)
    assert err.value.path == str(path)
    assert fragment in err.value.message
    assert err.value.column == key


def test_retrieval_settings_missing_a_key_or_not_an_object_are_refused(tmp_path):
    import json

    from nextbuy.mlops.io import DataError

    path = tmp_path / "retrieval.json"
    settings = retrieval_settings().model_dump()
    del settings["candidates"]
    path.write_text(json.dumps(settings))
    with pytest.raises(DataError, match=r"missing key\(s\) \['candidates'\]"):
        readers.read_retrieval(path)
    path.write_text("[]")
    with pytest.raises(DataError, match="expected a JSON object"):
        readers.read_retrieval(path)
